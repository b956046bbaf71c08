"""Whole runs from a config: what ``longvid train`` and ``longvid eval`` call."""

from __future__ import annotations

from torch import nn

from longvid.train import checkpoint as ckpt
from longvid.train.config import TrainConfig
from longvid.train.data import build_sources, class_frequencies
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
        seed_everything(config.seed)
        model = build_model(config)
        train_source, val_source = build_sources(config)
        freq = class_frequencies(train_source, config.num_classes) if config.loss == "eql" else None
        bar = _bar(config, dist.is_main and progress)
        on_step = (lambda r: (bar.update(1), bar.set_postfix(loss=f"{r['loss']:.4f}", lr=f"{r['lr']:.2e}"))) if bar else None
        log = bar.write if bar else print
        trainer = Trainer(model, config, train_source, val_source, freq, dist, on_step=on_step, log=log)
        if bar is not None:
            bar.total = config.max_steps or trainer.total_steps
        history = trainer.fit(resume=resume)
        if bar is not None:
            bar.close()
        return history
    finally:
        cleanup()


def evaluate_checkpoint(config: TrainConfig, checkpoint: str, pooling: str = "mean", progress: bool = True) -> dict:
    """Load a checkpoint's weights into the config's model and evaluate on ``val_data``
    (or ``data`` when there is none; generated data uses its held-out videos)."""
    dist = setup()
    try:
        model = build_model(config).to(dist.device)
        tensors, _ = ckpt.load_checkpoint(checkpoint)
        model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        train_source, val_source = build_sources(config)
        use_bar = dist.is_main and progress
        bar = (lambda it, total: _tqdm()(it, total=total, desc="eval", unit="step")) if use_bar else None
        return evaluate(model, val_source or train_source, config.batch_size, dist.device, pooling, dist, bar)
    finally:
        cleanup()


def _tqdm():
    from tqdm import tqdm

    return tqdm


def _bar(config: TrainConfig, enabled: bool):
    return _tqdm()(desc="train", unit="step", dynamic_ncols=True) if enabled else None
