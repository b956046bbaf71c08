"""Training ReWind-style LLM models: stage 1 (contrastive) and stage 2 (instruction tuning).

The engine's :class:`longvid.train.Trainer` drives classification streams of a
``ClipSource`` with a per-clip loss; ReWind's stages instead take whole videos with
text (captions, questions, answers) and a loss computed after the video was watched.
So this is a small separate loop over the shared pieces: the engine's parameter
groups (:func:`longvid.train.optim.param_groups`), warm-up + cosine schedule
(:func:`longvid.train.optim.warmup_cosine`) and atomic safetensors checkpoints
(:func:`longvid.train.checkpoint.save_checkpoint`).

A step is ``loss = loss_fn(model, batches(step))``; what is trained is whatever has
``requires_grad`` (e.g. after :meth:`longvid.models.rewind.ReWind.set_stage`). A stage's
randomness (dropout, frames drawn for the DFS policy) comes from the global RNG seeded with
``config.seed`` inside a fork of it: a stage repeats exactly, and the caller's RNG is left
as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from longvid.errors import LongvidError
from longvid.train.checkpoint import save_checkpoint
from longvid.train.optim import param_groups, warmup_cosine


@dataclass(frozen=True)
class StageConfig:
    """One training stage: ``steps`` AdamW steps, linear warm-up then cosine to ``min_lr``."""

    steps: int = 100
    lr: float = 1e-3
    min_lr: float = 0.0
    warmup_steps: int = 10
    weight_decay: float = 0.0
    clip_grad: float | None = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.lr <= 0 or self.warmup_steps < 0:
            raise LongvidError(f"a stage needs steps >= 1, lr > 0 and warmup_steps >= 0, got {self}")


def trainable_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters being trained, by name (what a stage checkpoint holds)."""
    return {name: param.detach() for name, param in model.named_parameters() if param.requires_grad}


@contextlib.contextmanager
def _seeded(seed: int):
    """The global RNG (CPU and the CUDA devices in use) seeded with ``seed`` inside, restored after."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if devices:
            torch.cuda.manual_seed_all(seed)
        yield


def train_stage(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    batches: Callable[[int], Any],
    config: StageConfig,
    out_dir: str | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> list[float]:
    """Run one stage; returns the loss of every step.

    Args:
        model: its parameters with ``requires_grad`` are trained.
        loss_fn: ``(model, batch) -> scalar loss``.
        batches: ``step -> batch`` (deterministic given the step, so runs repeat).
        config: steps and optimizer settings.
        out_dir: when given, the trained tensors are checkpointed there at the end.
        on_step: called with ``{"step", "loss", "lr"}`` after each step.
    """
    groups = [g for g in param_groups(model, config.weight_decay) if g["params"]]
    if not groups:
        raise LongvidError("nothing to train: no parameter requires grad (call set_stage first)")
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    min_ratio = config.min_lr / config.lr
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, config.steps, config.warmup_steps, min_ratio))
    params = [p for g in groups for p in g["params"]]
    model.train()
    losses = []
    with _seeded(config.seed):
        for step in range(config.steps):
            loss = loss_fn(model, batches(step))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_grad:
                nn.utils.clip_grad_norm_(params, config.clip_grad)
            optimizer.step()
            lr = schedule.get_last_lr()[0]
            schedule.step()
            losses.append(loss.item())
            if on_step is not None:
                on_step({"step": step, "loss": losses[-1], "lr": lr})
    model.eval()
    if out_dir is not None:
        save_checkpoint(out_dir, config.steps, {k: v.contiguous() for k, v in trainable_tensors(model).items()},
                        {"config": dataclasses.asdict(config), "losses": losses})
    return losses
