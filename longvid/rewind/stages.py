"""Training ReWind-style LLM models: stage 1 (contrastive) and stage 2 (instruction tuning).

A stage is a task of the training core (:class:`longvid.engine.core.TaskTrainer`: parameter
groups, warm-up + cosine schedule, gradient clipping, NaN handling, checkpoints with
resume, log.jsonl): a step is ``loss = loss_fn(model, batches(step))``; what is trained is
whatever has ``requires_grad`` (e.g. after :meth:`longvid.rewind.ReWind.set_stage`).
A stage's randomness (dropout, frames drawn for the DFS policy) comes from the global RNG
seeded with ``config.seed`` inside a fork of it: a stage repeats exactly, and the caller's
RNG is left as it was.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from longvid.errors import LongvidError
from longvid.core.seeding import seeded
from longvid.engine.config import TrainConfig
from longvid.engine.core import TaskTrainer
from longvid.engine.distributed import DistInfo


@dataclass(frozen=True)
class StageConfig:
    """One training stage: ``steps`` AdamW steps, linear warm-up then cosine to ``min_lr``;
    with an ``out_dir``, a checkpoint every ``checkpoint_every`` steps and at the end."""

    steps: int = 100
    lr: float = 1e-3
    min_lr: float = 0.0
    warmup_steps: int = 10
    weight_decay: float = 0.0
    clip_grad: float | None = 1.0
    seed: int = 0
    checkpoint_every: int = 100

    def __post_init__(self):
        if self.steps < 1 or self.lr <= 0 or self.warmup_steps < 0 or self.checkpoint_every < 1:
            raise LongvidError(f"a stage needs steps >= 1, lr > 0, warmup_steps >= 0 and checkpoint_every >= 1, got {self}")

    def train_config(self) -> TrainConfig:
        """The core's optimisation settings of this stage (AdamW, no AMP, a NaN stops it)."""
        return TrainConfig(optimizer="adamw", lr=self.lr, min_lr=self.min_lr, weight_decay=self.weight_decay,
                           warmup_steps=self.warmup_steps, clip_grad=self.clip_grad, seed=self.seed, amp="off",
                           on_nan="stop", checkpoint_every=self.checkpoint_every, max_steps=self.steps)


class StageTask:
    """A stage as a task of the core: the batch of a step is ``batches(step)``, its loss ``loss_fn(model, batch)``."""

    name = "ReWind stage"

    def __init__(self, loss_fn: Callable[[nn.Module, Any], torch.Tensor], batches: Callable[[int], Any]):
        self.loss_fn, self.batches = loss_fn, batches

    def batch(self, step: int) -> Any:
        return self.batches(step)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return self.loss_fn(model, batch)

    def size(self, batch: Any) -> int | None:
        return len(batch) if isinstance(batch, Sized) else None


def train_stage(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    batches: Callable[[int], Any],
    config: StageConfig,
    out_dir: str | None = None,
    on_step: Callable[[dict], None] | None = None,
    resume: bool = False,
) -> list[float]:
    """Run one stage; returns the loss of every step it ran (after ``resume``, those after the checkpoint).

    Args:
        model: its parameters with ``requires_grad`` are trained (on the device it is on).
        loss_fn: ``(model, batch) -> scalar loss``.
        batches: ``step -> batch`` (deterministic given the step, so runs repeat and resume).
        config: steps and optimizer settings.
        out_dir: when given, the core's checkpoints (trainable tensors ``model.*``, optimizer,
            schedule, RNG) and ``log.jsonl`` are written there.
        on_step: called with ``{"step", "loss", "lr"}`` after each step (``step`` from 0).
        resume: continue from the latest checkpoint in ``out_dir`` (if any).
    """
    if not any(p.requires_grad for p in model.parameters()):
        raise LongvidError("nothing to train: no parameter requires grad (call set_stage first)")
    report = None if on_step is None else (lambda r: on_step({"step": r["step"] - 1, "loss": r["loss"], "lr": r["lr"]}))
    device = next(model.parameters()).device
    with seeded(config.seed):
        trainer = TaskTrainer(model, StageTask(loss_fn, batches), config.train_config(), config.steps, out_dir,
                              DistInfo(device=device), on_step=report, log=None,
                              norm_order="groups")
        history = trainer.fit(resume=resume)
    model.eval()
    return [r["loss"] for r in history]
