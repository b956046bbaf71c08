"""Training a tiny MeMViT with the engine: the loss falls."""

import torch

import longvid
from longvid.core.seeding import seed_everything
from longvid.memvit.loop import Trainer
from longvid.memvit.run_config import MeMViTRunConfig
from longvid.memvit.data import synthetic_source


def test_tiny_memvit_trains_and_loss_falls(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threading only adds overhead on the shared CPU
    cfg = MeMViTRunConfig(out_dir=str(tmp_path / "run"), num_classes=4, log_every=1000, checkpoint_every=1000, eval_every=0,
                          clip_frames=8, size=32, synthetic_videos=4, synthetic_clips=2, batch_size=2, epochs=6,
                          lr=3e-3, warmup_steps=2, progressive=(1, 2))  # fmt: skip
    seed_everything(0)
    model = longvid.build_model("memvit_tiny", num_classes=4, num_frames=8, crop_size=32, head_dropout=0.0)
    try:
        losses = [r["loss"] for r in Trainer(model, cfg, synthetic_source(cfg, 0), log=None).fit()]
    finally:
        torch.set_num_threads(threads)
    assert len(losses) == 24
    assert sum(losses[-6:]) / 6 < 0.7 * sum(losses[:6]) / 6
