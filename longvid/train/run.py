"""Whole runs from a config: what ``longvid train`` and ``longvid eval`` call."""

from __future__ import annotations

import os

from torch import nn

from longvid.progress import progress as progress_bar
from longvid.train import checkpoint as ckpt
from longvid.train.config import TrainConfig
from longvid.train.data import build_sources, class_frequencies, save_class_list
from longvid.train.distributed import cleanup, setup
from longvid.train.loop import Trainer, evaluate, seed_everything
from longvid.train.toy import ToyMemoryModel


def build_model(config: TrainConfig) -> nn.Module:
    """``toy`` (:class:`ToyMemoryModel`) or a model preset sized for the config's clips."""
    if config.model == "toy":
        return ToyMemoryModel(num_classes=config.num_classes)
    import longvid

    return longvid.build_model(config.model, num_classes=config.num_classes, num_frames=config.clip_frames, crop_size=config.size)


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> list[dict]:
    """Train ``config`` (single process, or one rank under ``torchrun``); returns step records."""
    dist = setup()
    try:
        data = build_sources(config, saved_in=[config.out_dir] if resume else [])
        if data.classes is not None and dist.is_main:
            save_class_list(config.out_dir, data.classes)
        seed_everything(config.seed)
        model = build_model(config)
        train_source, val_source = data.train, data.val
        freq = class_frequencies(train_source, config.num_classes) if config.loss == "eql" else None
        bar = progress_bar(desc="train", unit="step", enabled=dist.is_main and progress)
        on_step = None if bar is None else (lambda r: (bar.set_postfix(loss=f"{r['loss']:.4f}", lr=f"{r['lr']:.2e}"), bar.update(1)))
        log = print if bar is None else bar.write
        trainer = Trainer(model, config, train_source, val_source, freq, dist, on_step=on_step, log=log)
        if bar is not None:
            bar.total = min(config.max_steps, trainer.total_steps) if config.max_steps is not None else trainer.total_steps
        try:
            return trainer.fit(resume=resume)
        finally:
            if bar is not None:
                bar.close()
    finally:
        cleanup()


def evaluate_checkpoint(config: TrainConfig, checkpoint: str, pooling: str = "mean", progress: bool = True) -> dict:
    """Load a checkpoint's weights into the config's model and evaluate on ``val_data``
    (or ``data`` when there is none; generated data uses its held-out videos)."""
    dist = setup()
    try:
        folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(os.path.abspath(checkpoint))
        data = build_sources(config, saved_in=[config.out_dir, folder])
        model = build_model(config).to(dist.device)
        tensors, _, path = ckpt.load_latest(checkpoint)
        ckpt.load_model_weights(model, tensors, path)
        bar = progress_bar(desc="eval", unit="step", enabled=dist.is_main and progress)
        try:
            return evaluate(model, data.val or data.train, config.batch_size, dist.device, pooling, dist, bar)
        finally:
            if bar is not None:
                bar.close()
    finally:
        cleanup()
