"""The training core: the optimisation step, checkpoints with resume and the run log, once.

Every training in longvid is the same few things around a task loss:

* :class:`Optimization`: parameter groups (no decay on 1-D parameters), AdamW or SGD, linear
  warm-up + cosine schedule, AMP (bf16/fp16 autocast on CUDA, a gradient scaler for fp16),
  gradient clipping, gradients averaged over ranks, and a NaN/inf loss or gradient stopping
  the run (``on_nan="stop"``) or skipping the update (``"skip"``);
* :class:`RunLog`: one JSON record per step in ``out_dir/log.jsonl`` (records after a resumed
  checkpoint dropped, so no step appears twice) and a console line every ``log_every`` steps;
* :class:`TaskTrainer`: the loop ``batch = task.batch(step); loss = task.loss(model, batch)``
  with atomic checkpoints (trainable weights, optimizer, schedule, step, RNG, the task's
  name) and ``fit(resume=True)``, which continues a run with the same loss curve (a task's
  batch depends on the step only, so a task has no state of its own to save).

What differs between trainings is a small *task* (see :class:`Task`): how to draw the batch
of a step, how to compute the loss. :class:`longvid.malmm.qa.QATrainer` (MA-LMM answers) and
:func:`longvid.rewind.stages.train_stage` (ReWind's stages) are tasks run by
:class:`TaskTrainer`; :class:`longvid.memvit.loop.Trainer` (clip streams) uses
:class:`Optimization` and :class:`RunLog` for its steps.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import warnings
from typing import Any, Callable, Protocol

import torch
from torch import nn

from longvid.errors import LongvidError
from longvid.fileio import write_lines_atomically
from longvid.engine import checkpoint as ckpt
from longvid.engine.config import TrainConfig
from longvid.engine.distributed import DistInfo, all_reduce
from longvid.engine.optim import build_optimizer, build_scheduler


class Task(Protocol):
    """What a :class:`TaskTrainer` trains on.

    ``name`` marks its checkpoints; ``batch(step)`` is the batch of step ``step`` (0-based; it
    depends on the step only, so a resumed run draws the same batches); ``loss(model, batch)``
    is the scalar to minimise; ``size(batch)`` is the number of samples (logged).
    """

    name: str

    def batch(self, step: int) -> Any: ...

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor: ...

    def size(self, batch: Any) -> int: ...


class Optimization:
    """Optimizer, schedule and AMP of a run over ``total_steps`` steps; :meth:`update` is one step.

    Only parameters with ``requires_grad`` train; gradients are clipped to ``config.clip_grad``
    (0/None: not clipped) and averaged over ranks when ``average_gradients`` (models that are
    not wrapped in DDP). ``out_dir`` holds the run's checkpoints (named when a NaN stops it);
    ``say`` prints a skipped update; ``norm_order``: see :meth:`_clipped`."""

    def __init__(self, model: nn.Module, config: TrainConfig, total_steps: int, device: torch.device,
                 out_dir: str | None, say: Callable[[str], None] | None = None, average_gradients: bool = False,
                 norm_order: str = "model"):
        self.config, self.out_dir, self.say = config, out_dir, say
        self.device = device
        self.average_gradients = average_gradients
        self.optimizer = build_optimizer(model, config)
        self.params = self._clipped(model, norm_order)
        if not self.params:
            raise LongvidError("nothing to train: the model has no trainable parameters (none requires grad)")
        self.scheduler = build_scheduler(self.optimizer, config, total_steps)
        self.amp_dtype = _amp_dtype(config.amp, device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

    def _clipped(self, model: nn.Module, norm_order: str) -> list[nn.Parameter]:
        """The trained parameters in the order the gradient norm sums them: ``"model"``
        (``model.parameters()``) or ``"groups"`` (the optimizer's groups: decayed, then not).
        The norms differ in the last bits, so each order is kept where recorded figures depend
        on it (ReWind's stages sum by groups)."""
        if norm_order == "groups":
            return [p for group in self.optimizer.param_groups for p in group["params"]]
        if norm_order == "model":
            return [p for p in model.parameters() if p.requires_grad]
        raise ValueError(f"norm_order must be 'model' or 'groups', got {norm_order!r}")

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def autocast(self):
        """The forward pass's autocast context (a no-op without AMP)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def update(self, loss: torch.Tensor, where: str) -> str | None:
        """Backward, clip and step the optimizer and the schedule. Returns None, or what was
        not finite (``"loss nan"``, ``"gradient"``) when the update was skipped (``on_nan="skip"``,
        said with ``where``); with ``on_nan="stop"`` that raises, naming ``where`` and the last
        good checkpoint."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.average_gradients:
            _average_gradients(self.params)
        grad_norm = nn.utils.clip_grad_norm_(self.params, self.config.clip_grad or float("inf"))
        # fp16: the scaler skips steps with inf gradients itself; otherwise a non-finite loss
        # or gradient would poison the weights
        finite = bool(torch.isfinite(loss.detach())) and (self.scaler is not None or bool(torch.isfinite(grad_norm)))
        if int(all_reduce(torch.tensor([float(finite)], device=self.device), "min")) == 0:
            return self._non_finite(loss, where)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        return None

    def _non_finite(self, loss: torch.Tensor, where: str) -> str:
        what = f"loss {loss.item():g}" if not torch.isfinite(loss) else "gradient"
        if self.config.on_nan == "stop":
            found = ckpt.list_checkpoints(self.out_dir) if self.out_dir is not None else []
            kept = f"the last good checkpoint is {found[-1]}" if found else "no checkpoint was written yet"
            raise LongvidError(f"non-finite {what} at {where}: stopped; {kept} (lower lr, or set on_nan=skip to skip such steps)")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.update()
        self.scheduler.step()
        if self.say is not None:
            self.say(f"{where}: non-finite {what}, update skipped (on_nan=skip)")
        return what

    def advance_schedule(self) -> None:
        """Count a step without an update (the schedule counts steps)."""
        with warnings.catch_warnings():  # stepping the schedule before any optimizer step is intended here
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            self.scheduler.step()

    def state(self, tensors: dict[str, torch.Tensor]) -> dict:
        """The JSON part of the optimizer, schedule and scaler state (tensors go to ``tensors``)."""
        return {
            "optimizer": ckpt.flatten(self.optimizer.state_dict(), "optimizer", tensors),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state(self, record: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`state`."""
        self.optimizer.load_state_dict(ckpt.unflatten(record["optimizer"], tensors, self.device))
        self.scheduler.load_state_dict(record["scheduler"])
        if self.scaler is not None and record.get("scaler"):
            self.scaler.load_state_dict(record["scaler"])


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def _average_gradients(params: list[nn.Parameter]) -> None:
    """Average the gradients over ranks (a no-op in a single process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    for param in params:
        grad = param.grad if param.grad is not None else torch.zeros_like(param)
        param.grad = all_reduce(grad) / world


class RunLog:
    """``out_dir/log.jsonl`` (one JSON record a line, written by rank 0; None: no file) and
    the console (``print`` or None for silence)."""

    def __init__(self, out_dir: str | None, is_main: bool = True, print: Callable[[str], None] | None = print):
        self.path = os.path.join(out_dir, "log.jsonl") if out_dir is not None and is_main else None
        self.print = print if is_main else None

    def write(self, record: dict) -> None:
        if self.path is not None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def say(self, text: str) -> None:
        if self.print is not None:
            self.print(text)

    def truncate(self, step: int) -> None:
        """Drop the records written after ``step`` (a resumed run does those steps again)."""
        if self.path is None or not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as f:
            lines = f.readlines()
        kept = [line for line in lines if line.endswith("\n") and _step_of(line) <= step]
        if len(kept) != len(lines):
            write_lines_atomically(self.path, kept)


def _step_of(line: str) -> float:
    """The step of a log.jsonl line (inf for a line that is not a record: dropped on resume)."""
    try:
        return json.loads(line).get("step", float("inf"))
    except (json.JSONDecodeError, AttributeError):
        return float("inf")


def trainable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights a task checkpoint holds: ``model.trainable_state_dict()`` when the model has
    one (frozen encoder and LLM left out), else the parameters that require grad."""
    getter = getattr(model, "trainable_state_dict", None)
    if callable(getter):
        return getter()
    return {name: param.detach() for name, param in model.named_parameters() if param.requires_grad}


class TaskTrainer:
    """Trains ``model`` on ``task`` for ``total_steps`` steps (the schedule's length too).

    Args:
        model: what trains is its parameters with ``requires_grad``.
        task: batches and loss (:class:`Task`).
        config: optimisation fields of a :class:`TrainConfig` (``optimizer``, ``lr``, ``min_lr``,
            ``momentum``, ``weight_decay``, ``warmup_steps``, ``clip_grad``, ``amp``, ``on_nan``,
            ``log_every``, ``checkpoint_every``).
        out_dir: checkpoints and ``log.jsonl`` go there; None: nothing is written.
        dist: rank / world / device; gradients are averaged over ranks (the task's batches
            are the rank's share).
        on_step: called with each step's record (``step`` counted from 1, ``loss``, ``lr``,
            ``examples``, ``seconds``; ``skipped`` when ``on_nan="skip"`` dropped the update).
        log: console printer (rank 0 only); None for silence.
        norm_order: the order the gradient norm sums parameters in (see :class:`Optimization`).
    """

    def __init__(self, model: nn.Module, task: Task, config: TrainConfig, total_steps: int, out_dir: str | None,
                 dist: DistInfo | None = None, on_step: Callable[[dict], None] | None = None,
                 log: Callable[[str], None] | None = print, norm_order: str = "model"):
        self.dist = dist or DistInfo()
        self.model = model.to(self.dist.device)
        self.task, self.config, self.total_steps, self.out_dir = task, config, total_steps, out_dir
        self.run_log = RunLog(out_dir, self.dist.is_main, log)
        self.optimization = Optimization(self.model, config, total_steps, self.dist.device, out_dir, self.run_log.say,
                                         average_gradients=self.dist.enabled, norm_order=norm_order)
        self.on_step = on_step
        self.step = 0
        self.history: list[dict] = []

    def fit(self, resume: bool = False) -> list[dict]:
        """Train until ``total_steps``; with ``resume``, continue from the latest checkpoint in
        ``out_dir`` if any. Returns the records of the steps run by this call."""
        if resume and self.out_dir is not None and ckpt.list_checkpoints(self.out_dir):
            self.load(self.out_dir)
        while self.step < self.total_steps:
            record = self.train_step(self.task.batch(self.step))
            self._record(record)
            if self.out_dir is not None and (self.step % self.config.checkpoint_every == 0 or self.step == self.total_steps):
                self.save()
        return self.history

    def train_step(self, batch) -> dict:
        """One optimizer step on ``batch``; returns its record."""
        started = time.perf_counter()
        self.model.train()
        with self.optimization.autocast():
            loss = self.task.loss(self.model, batch)
        lr = self.optimization.lr
        skipped = self.optimization.update(loss, f"step {self.step + 1}")
        self.step += 1
        mean_loss = (all_reduce(loss.detach()) / self.dist.world_size).item()  # over ranks
        record = {"step": self.step, "loss": mean_loss if skipped is None else float("nan"), "lr": lr,
                  "examples": self.task.size(batch), "seconds": time.perf_counter() - started}
        if skipped is not None:
            record["skipped"] = True
        return record

    def _record(self, record: dict) -> None:
        self.history.append(record)
        self.run_log.write(record)
        if self.on_step is not None:
            self.on_step(record)
        if self.step % self.config.log_every == 0:
            self.run_log.say(f"step {self.step}/{self.total_steps} loss {record['loss']:.4f} lr {record['lr']:.2e}")

    # -- checkpoints ------------------------------------------------------------------------

    def save(self) -> str | None:
        """Write ``out_dir/step_XXXXXXXX`` (trainable weights, optimizer, schedule, step, RNG
        state, the task's name); rank 0 writes."""
        if not self.dist.is_main:
            return None
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in trainable_weights(self.model).items()}
        tensors["rng.torch"] = torch.get_rng_state()  # dropout continues identically on resume
        if self.dist.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.dist.device)
        record = {"config": self.config.to_json(), "step": self.step, "task": self.task.name,
                  **self.optimization.state(tensors)}
        return ckpt.save_checkpoint(self.out_dir, self.step, tensors, record)

    def load(self, path: str) -> None:
        """Restore weights, optimizer, schedule, step and RNG from a checkpoint written by
        :meth:`save` (a base path, or a folder: its latest readable checkpoint)."""
        tensors, record, base = ckpt.load_latest(path)
        if record.get("task") != self.task.name:
            raise LongvidError(f"{path} is not a {self.task.name} training checkpoint")
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        result = self.model.load_state_dict(weights, strict=False)
        if result.unexpected_keys or set(weights) != set(trainable_weights(self.model)):
            raise LongvidError(f"{path} does not fit this model (unexpected {result.unexpected_keys[:3]})")
        self.optimization.load_state(record, tensors)
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.dist.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.dist.device)
        self.step = record["step"]
        self.run_log.truncate(self.step)
        self.run_log.say(f"resumed from {base} (step {self.step})")
