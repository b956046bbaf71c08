"""Worker for test_distributed.py: a few training steps of the toy model, run by torchrun
or as a single process; saves the (averaged) gradients, weights and eval metrics."""

import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from longvid.engine.toy import ToyMemoryModel  # noqa: E402
from longvid.core.seeding import seed_everything
from longvid.memvit.loop import Trainer
from longvid.memvit.run_config import MeMViTRunConfig
from longvid.memvit.data import synthetic_source  # noqa: E402
from longvid.engine.distributed import cleanup, setup  # noqa: E402


def main(out_dir: str, batch_size: int) -> None:
    torch.set_num_threads(1)
    dist = setup("cpu")
    cfg = MeMViTRunConfig(
        num_classes=4, clip_frames=2, size=4, synthetic_videos=8, synthetic_clips=3, batch_size=batch_size, epochs=1,
        lr=0.1, optimizer="sgd", momentum=0.0, weight_decay=0.0, clip_grad=None, memory_drop=False, max_steps=3,
        log_every=1000, checkpoint_every=1000, out_dir=os.path.join(out_dir, "run"), eval_every=0,
    )  # fmt: skip
    seed_everything(0)
    model = ToyMemoryModel(dim=8, num_classes=4, memory_len=3)
    trainer = Trainer(model, cfg, synthetic_source(cfg, 0), log=None, dist=dist)
    history = trainer.fit()
    metrics = trainer.evaluate(synthetic_source(cfg, 1))
    if dist.is_main:
        tensors = {f"grad.{n}": p.grad.contiguous() for n, p in model.named_parameters() if p.grad is not None}
        tensors.update({f"param.{n}": p.detach().contiguous() for n, p in model.named_parameters()})
        save_file(tensors, os.path.join(out_dir, "result.safetensors"))
        with open(os.path.join(out_dir, "result.json"), "w") as f:
            json.dump({"losses": [r["loss"] for r in history], "eval": metrics, "world_size": dist.world_size}, f)
    cleanup()


if __name__ == "__main__":
    from ddp_exit import run_and_leave

    run_and_leave(main, sys.argv[1], int(sys.argv[2]))
