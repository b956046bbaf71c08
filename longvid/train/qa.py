"""Question-answering training through a language model (MA-LMM-style models).

The stream engine (:mod:`longvid.train.loop`) trains classifiers clip by clip with a
loss on logits. A video-LLM is trained differently: it watches a whole video and the
loss is next-token cross-entropy on the answer text, computed by the model itself
(``loss = model.loss(frames, prompts, answers)``, e.g. :meth:`MALMM.loss`, where the
encoder and the LLM are frozen and only the Q-Former side learns). This module is that
small loop; it reuses the engine's seeding, optimizer (AdamW/SGD, no decay on 1-D
parameters), warm-up + cosine schedule, gradient clipping and checkpoint format.

Examples are :class:`QAExample` (a video's frames or cached encoder tokens, a prompt and
an answer). The order of examples in epoch ``e`` depends only on ``(config.seed, e)``,
so ``fit(resume=True)`` continues a run exactly where its last checkpoint left it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from longvid.errors import LongvidError
from longvid.train import checkpoint as ckpt
from longvid.train.config import TrainConfig
from longvid.train.loop import seed_everything
from longvid.train.optim import build_optimizer, build_scheduler


@dataclass
class QAExample:
    """One video with its question: ``frames`` ``(T, ...)`` (e.g. encoder tokens ``(T, N, C)``;
    every example of a run has the same shape), the prompt and the answer text."""

    frames: torch.Tensor
    prompt: str
    answer: str


def stack_examples(examples: Sequence[QAExample]) -> tuple[torch.Tensor, list[str], list[str]]:
    """Examples -> frames ``(B, T, ...)``, prompts and answers."""
    shapes = {tuple(e.frames.shape) for e in examples}
    if len(shapes) != 1:
        raise LongvidError(f"all examples of a batch need the same frame shape, got {sorted(shapes)}")
    return torch.stack([e.frames for e in examples]), [e.prompt for e in examples], [e.answer for e in examples]


def epoch_order(num_examples: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The example order of ``epoch``: a permutation drawn from ``(seed, epoch)`` only."""
    if not shuffle:
        return list(range(num_examples))
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_examples, generator=generator).tolist()


class QATrainer:
    """Trains ``model`` (with ``model.loss(frames, prompts, answers) -> scalar``) on QA examples.

    Uses of ``config``: ``batch_size``, ``epochs``, ``max_steps``, ``shuffle``, ``seed``,
    ``optimizer``, ``lr``, ``min_lr``, ``momentum``, ``weight_decay``, ``warmup_steps``,
    ``clip_grad``, ``log_every``, ``checkpoint_every``, ``out_dir``; the data and
    classification fields are ignored. Only parameters with ``requires_grad`` train.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        examples: Sequence[QAExample],
        on_step: Callable[[dict], None] | None = None,
        log: Callable[[str], None] | None = print,
        device: str | torch.device = "cpu",
    ):
        if not examples:
            raise LongvidError("no training examples")
        self.config = config.validate()
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.examples = list(examples)
        self.on_step, self.log = on_step, log
        if not any(p.requires_grad for p in model.parameters()):
            raise LongvidError("the model has no trainable parameters")
        seed_everything(config.seed)
        self.steps_per_epoch = -(-len(self.examples) // config.batch_size)
        self.total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config, self.total_steps)
        self.step = 0
        self.history: list[dict] = []

    def batches(self, epoch: int, skip: int = 0) -> Iterator[list[QAExample]]:
        """Batches of ``epoch`` (the last one may be smaller), after the first ``skip``."""
        order = epoch_order(len(self.examples), self.config.seed, epoch, self.config.shuffle)
        size = self.config.batch_size
        for first in range(skip * size, len(order), size):
            yield [self.examples[i] for i in order[first : first + size]]

    def fit(self, resume: bool = False) -> list[dict]:
        """Train until ``total_steps``; with ``resume``, continue from the latest checkpoint
        in ``out_dir`` if any. Returns the step records (loss, lr, seconds)."""
        if resume and ckpt.list_checkpoints(self.config.out_dir):
            self.load(self.config.out_dir)
        while self.step < self.total_steps:
            epoch, position = divmod(self.step, self.steps_per_epoch)
            for batch in self.batches(epoch, skip=position):
                self._record(self.train_step(batch))
                if self.step % self.config.checkpoint_every == 0 or self.step == self.total_steps:
                    self.save()
                if self.step == self.total_steps:
                    break
        return self.history

    def train_step(self, batch: Sequence[QAExample]) -> dict:
        """One optimizer step on a batch; returns its loss, size and learning rate."""
        started = time.perf_counter()
        self.model.train()
        frames, prompts, answers = stack_examples(batch)
        loss = self.model.loss(frames.to(self.device), prompts, answers)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip_grad:
            nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.config.clip_grad)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"step": self.step, "loss": loss.item(), "lr": lr, "examples": len(batch), "seconds": time.perf_counter() - started}

    def _record(self, record: dict) -> None:
        self.history.append(record)
        if self.on_step is not None:
            self.on_step(record)
        if self.log is not None and self.step % self.config.log_every == 0:
            self.log(f"step {self.step}/{self.total_steps} loss {record['loss']:.4f} lr {record['lr']:.2e}")

    # -- checkpoints ------------------------------------------------------------------------

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        """The weights a checkpoint holds: ``model.trainable_state_dict()`` when the model
        has one (frozen encoder and LLM left out), else the whole state dict."""
        getter = getattr(self.model, "trainable_state_dict", None)
        return getter() if callable(getter) else self.model.state_dict()

    def save(self) -> str:
        """Write ``out_dir/step_XXXXXXXX`` (trainable weights, optimizer, schedule, step, RNG state)."""
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self._trainable_state().items()}
        tensors["rng.torch"] = torch.get_rng_state()  # dropout continues identically on resume
        record = {
            "config": self.config.to_json(),
            "step": self.step,
            "optimizer": ckpt.flatten(self.optimizer.state_dict(), "optimizer", tensors),
            "scheduler": self.scheduler.state_dict(),
            "kind": "qa",
        }
        return ckpt.save_checkpoint(self.config.out_dir, self.step, tensors, record)

    def load(self, path: str) -> None:
        """Restore weights, optimizer, schedule and step from a checkpoint written by
        :meth:`save` (a base path, or a folder: its latest checkpoint)."""
        tensors, record = ckpt.load_checkpoint(path)
        if record.get("kind") != "qa":
            raise LongvidError(f"{path} is not a QA training checkpoint")
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        result = self.model.load_state_dict(weights, strict=False)
        if result.unexpected_keys or set(weights) != set(self._trainable_state()):
            raise LongvidError(f"{path} does not fit this model (unexpected {result.unexpected_keys[:3]})")
        self.optimizer.load_state_dict(ckpt.unflatten(record["optimizer"], tensors, self.device))
        self.scheduler.load_state_dict(record["scheduler"])
        torch.set_rng_state(tensors["rng.torch"])
        self.step = record["step"]
