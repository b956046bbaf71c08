"""Worker for test_distributed.py: a few QA-task steps of the training core, run by torchrun
or as a single process; saves the weights and the logged losses."""

import json
import os
import sys

import torch
from safetensors.torch import save_file
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from longvid.engine.config import TrainConfig  # noqa: E402
from longvid.engine.distributed import cleanup, setup  # noqa: E402
from longvid.malmm.qa import QAExample, QATrainer  # noqa: E402


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(6, 2)

    def loss(self, frames, prompts, answers):
        target = torch.tensor([1 if a == "yes" else 0 for a in answers])
        return nn.functional.cross_entropy(self.proj(frames.mean(1)), target)


def main(out_dir: str, batch_size: int) -> None:
    torch.set_num_threads(1)
    dist = setup("cpu")
    generator = torch.Generator().manual_seed(0)
    examples = [QAExample(torch.randn(3, 6, generator=generator) + i % 2, "?", "yes" if i % 2 else "no") for i in range(16)]
    cfg = TrainConfig(batch_size=batch_size, epochs=2, lr=0.1, optimizer="sgd", momentum=0.0, weight_decay=0.0,
                      clip_grad=None, log_every=1000, out_dir=os.path.join(out_dir, "run"))
    model = Linear()
    history = QATrainer(model, cfg, examples, log=None, dist=dist).fit()
    if dist.is_main:
        save_file({n: p.detach().contiguous() for n, p in model.named_parameters()}, os.path.join(out_dir, "result.safetensors"))
        with open(os.path.join(out_dir, "result.json"), "w") as f:
            json.dump({"losses": [r["loss"] for r in history], "world_size": dist.world_size}, f)
    cleanup()


if __name__ == "__main__":
    from ddp_exit import run_and_leave

    run_and_leave(main, sys.argv[1], int(sys.argv[2]))
