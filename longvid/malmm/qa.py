"""Question-answering training through a language model (MA-LMM-style models): a task of the core.

A video-LLM watches a whole video and its loss is next-token cross-entropy on the answer
text, computed by the model itself (``loss = model.loss(frames, prompts, answers)``, e.g.
:meth:`MALMM.loss`, where the encoder and the LLM are frozen and only the Q-Former side
learns). :class:`QATask` is that task for the training core (:class:`longvid.engine.core.TaskTrainer`:
optimizer, warm-up + cosine schedule, gradient clipping, AMP, NaN handling, checkpoints,
resume, log.jsonl); :class:`QATrainer` runs it from a :class:`TrainConfig`.

Examples are :class:`QAExample` (a video's frames or cached encoder tokens, a prompt and
an answer). The order of examples in epoch ``e`` depends only on ``(config.seed, e)``,
so ``fit(resume=True)`` continues a run exactly where its last checkpoint left it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from longvid.errors import LongvidError
from longvid.engine.config import TrainConfig
from longvid.engine.core import TaskTrainer
from longvid.engine.distributed import DistInfo


@dataclass
class QAExample:
    """One video with its question: ``frames`` ``(T, ...)`` (e.g. encoder tokens ``(T, N, C)``;
    every example of a run has the same shape), or a function that loads them (e.g. from a
    feature cache, so a run holds only its batch), the prompt and the answer text."""

    frames: torch.Tensor | Callable[[], torch.Tensor]
    prompt: str
    answer: str

    def frame_tensor(self) -> torch.Tensor:
        return self.frames() if callable(self.frames) else self.frames


def stack_examples(examples: Sequence[QAExample]) -> tuple[torch.Tensor, list[str], list[str]]:
    """Examples -> frames ``(B, T, ...)``, prompts and answers."""
    frames = [e.frame_tensor() for e in examples]
    shapes = {tuple(f.shape) for f in frames}
    if len(shapes) != 1:
        raise LongvidError(f"all examples of a batch need the same frame shape, got {sorted(shapes)}")
    return torch.stack(frames), [e.prompt for e in examples], [e.answer for e in examples]


def epoch_order(num_examples: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The example order of ``epoch``: a permutation drawn from ``(seed, epoch)`` only."""
    if not shuffle:
        return list(range(num_examples))
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_examples, generator=generator).tolist()


class QATask:
    """Answer cross-entropy ``model.loss(frames, prompts, answers)`` on epochs of ``examples``.

    Each epoch is :func:`epoch_order`; with several ranks, rank ``r`` takes every ``world``-th
    example of it from ``r`` (the same number on every rank: the remainder is left out).
    Batches hold ``batch_size`` examples (an epoch's last one may be smaller)."""

    name = "QA"

    def __init__(self, examples: Sequence[QAExample], batch_size: int, seed: int, shuffle: bool = True,
                 device: torch.device = torch.device("cpu"), rank: int = 0, world_size: int = 1):
        if not examples:
            raise LongvidError("no training examples")
        self.examples, self.batch_size, self.seed, self.shuffle = list(examples), batch_size, seed, shuffle
        self.device, self.rank, self.world_size = device, rank, world_size
        self.per_rank = len(self.examples) // world_size
        if self.per_rank == 0:
            raise LongvidError(f"{len(self.examples)} examples cannot be shared by {world_size} processes")
        self.steps_per_epoch = -(-self.per_rank // batch_size)

    def epoch(self, epoch: int) -> list[int]:
        """This rank's example indices in ``epoch``, in order."""
        order = epoch_order(len(self.examples), self.seed, epoch, self.shuffle)
        return order[self.rank :: self.world_size][: self.per_rank]

    def batch(self, step: int) -> list[QAExample]:
        epoch, position = divmod(step, self.steps_per_epoch)
        first = position * self.batch_size
        return [self.examples[i] for i in self.epoch(epoch)[first : first + self.batch_size]]

    def loss(self, model: nn.Module, batch: Sequence[QAExample]) -> torch.Tensor:
        frames, prompts, answers = stack_examples(batch)
        return model.loss(frames.to(self.device), prompts, answers)

    def size(self, batch: Sequence[QAExample]) -> int:
        return len(batch)


class QATrainer(TaskTrainer):
    """Trains ``model`` (with ``model.loss(frames, prompts, answers) -> scalar``) on QA examples.

    Uses of ``config``: ``batch_size`` (per process), ``epochs``, ``max_steps``, ``shuffle``,
    ``seed``, ``optimizer``, ``lr``, ``min_lr``, ``momentum``, ``weight_decay``,
    ``warmup_steps``, ``clip_grad``, ``amp``, ``on_nan``, ``log_every``, ``checkpoint_every``,
    ``out_dir``; the data and classification fields are ignored. Only parameters with
    ``requires_grad`` train.

    Like every library part, it leaves the global RNG alone: the caller seeds it (e.g.
    :func:`~longvid.core.seeding.seed_everything`) when dropout should be reproducible.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        examples: Sequence[QAExample],
        on_step: Callable[[dict], None] | None = None,
        log: Callable[[str], None] | None = print,
        device: str | torch.device = "cpu",
        dist: DistInfo | None = None,
    ):
        config = config.validate()
        dist = dist or DistInfo(device=torch.device(device))
        task = QATask(examples, config.batch_size, config.seed, config.shuffle, dist.device, dist.rank, dist.world_size)
        if not any(p.requires_grad for p in model.parameters()):
            raise LongvidError("nothing to train: the model has no trainable parameters (none requires grad)")
        total_steps = config.epochs * task.steps_per_epoch
        if config.max_steps is not None:
            total_steps = min(total_steps, config.max_steps)
        super().__init__(model, task, config, total_steps, config.out_dir, dist, on_step, log)
