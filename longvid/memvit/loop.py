"""The training loop over sequential clip streams (MeMViT sections 4.3 and A.2).

Each step takes one clip from each of ``B`` streams. Before the forward pass, the
streams whose clip starts a new video get their memory reset; after it, the new
memory is detached (stop-gradient) and carried to the next step, so no graph
lives across steps and only the latest memory step is trained (pipelined
compression). During training a random ``m`` in ``[0, M-1]`` of the ``M``
memory steps is dropped per stream (memory-drop augmentation); evaluation keeps
all memory. Any model with ``out, state = model(clip, state, memory_keep=...)``,
``model.init_state(B)``, ``state.reset(mask)`` and ``state.detach()`` works.
"""

from __future__ import annotations

import dataclasses
import random
import resource
import time
from typing import Callable

import torch
from torch import nn

from longvid.errors import LongvidError
from longvid.eval.metrics import epic_accuracy, topk_accuracy
from longvid.engine import checkpoint as ckpt
from longvid.memvit.run_config import MeMViTRunConfig
from longvid.engine.core import Optimization, RunLog
from longvid.engine.distributed import DistInfo, all_gather_objects, all_reduce
from longvid.memvit.ava import box_batch, box_loss
from longvid.memvit.losses import head_outputs, stream_loss
from longvid.engine.sampler import StreamSampler
from longvid.data.sources import ClipSource


def memory_length(model: nn.Module) -> int | None:
    """``M``, the memory steps a model keeps: ``model.memory_len`` or ``model.config.memory_len``."""
    value = getattr(model, "memory_len", None)
    if value is None:
        value = getattr(getattr(model, "config", None), "memory_len", None)
    return value


def memory_drop_mask(batch_size: int, memory_len: int, generator: torch.Generator) -> torch.Tensor:
    """Bool ``(B, M)``: per stream, drop a uniform random ``m`` in ``[0, M-1]`` of the
    ``M`` memory steps (False = dropped), chosen uniformly among the steps."""
    dropped = torch.randint(0, memory_len, (batch_size, 1), generator=generator)  # (B, 1) m per stream
    ranks = torch.rand(batch_size, memory_len, generator=generator).argsort(dim=1).argsort(dim=1)  # (B, M) random order
    return ranks >= dropped


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak, or the CPU resident-set peak."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class StreamStep(nn.Module):
    """``model`` with stop-gradient on the memory it returns (what DDP wraps).

    The returned memory is carried to the next step without its graph, so no graph
    lives across steps, and DDP only sees the logits as outputs (parameters that
    only write memory are then correctly "unused" for this step's gradient).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor, state, **kwargs):
        out, state = self.model(clip, state, **kwargs)
        return out, state.detach()


class Trainer:
    """Trains a memory model on sequential streams of a :class:`ClipSource`.

    Args:
        model: the memory model (built with the same seed on every rank).
        config: the run's :class:`MeMViTRunConfig`.
        train_source, val_source: clips and targets (each rank gets its shard).
        class_freq: per head, each class's share of training samples (equalization loss).
        dist: rank / world / device (from :func:`longvid.engine.distributed.setup`).
        on_step: called with each step's log record (tests, progress bars).
        log: console printer (rank 0 only); None for silence.
        evaluator: ``evaluator(model, source) -> metrics`` (the task's evaluation); default:
            top-1/top-5 per head of :func:`collect_scores`.
    """

    def __init__(
        self,
        model: nn.Module,
        config: MeMViTRunConfig,
        train_source: ClipSource,
        val_source: ClipSource | None = None,
        class_freq: dict[str, torch.Tensor] | None = None,
        dist: DistInfo | None = None,
        on_step: Callable[[dict], None] | None = None,
        log: Callable[[str], None] | None = print,
        evaluator: Callable[[nn.Module, ClipSource], dict[str, float]] | None = None,
    ):
        self.config = config.validate()
        self.evaluator = evaluator
        self.dist = dist or DistInfo()
        self.device = self.dist.device
        self.model = model.to(self.device)
        self.net = self._wrap(self.model)
        self.train_source, self.val_source = train_source, val_source
        self.class_freq = class_freq or {}
        self.on_step = on_step
        self.run_log = RunLog(config.out_dir, self.dist.is_main, log)
        self.memory_len = memory_length(model)
        self.sampler = StreamSampler(
            train_source, config.batch_size, config.clips_per_video(0), config.shuffle, config.seed,
            self.dist.rank, self.dist.world_size,
        )  # fmt: skip
        total_clips = sum(train_source.num_clips(v) for v in range(len(train_source)))
        self.steps_per_epoch = -(-total_clips // (config.batch_size * self.dist.world_size))
        self.total_steps = config.epochs * self.steps_per_epoch
        self.optimization = Optimization(self.model, config, self.total_steps, self.device, config.out_dir, self.run_log.say)  # DDP averages
        self.drop_generator = torch.Generator().manual_seed(config.seed * 7919 + self.dist.rank)
        self.step, self.epoch, self.state = 0, 0, None
        self.history: list[dict] = []

    # -- setup -----------------------------------------------------------------------------

    def _wrap(self, model: nn.Module) -> nn.Module:
        step = StreamStep(model)
        if not self.dist.enabled:
            return step
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            step, device_ids=device_ids, find_unused_parameters=self.config.find_unused_parameters
        )

    # -- training --------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> list[dict]:
        """Train for ``config.epochs`` (or until ``max_steps``); returns the step records.

        With ``resume``, continue from the latest checkpoint in ``out_dir`` if any.
        """
        if resume and ckpt.list_checkpoints(self.config.out_dir):
            self.load(self.config.out_dir)
        max_steps = self.config.max_steps
        while self.epoch < self.config.epochs and (max_steps is None or self.step < max_steps):
            batch = self.sampler.next_batch()
            ranks_with_data = all_reduce(torch.tensor([1 if batch is not None else 0], device=self.device))
            if int(ranks_with_data) < self.dist.world_size:  # some rank ran out: the epoch ends for all
                self._end_epoch()
                continue
            started = time.perf_counter()
            result = self.train_step(batch)
            self.step += 1
            self._record(result, time.perf_counter() - started)
            if self.step % self.config.checkpoint_every == 0:
                self.save()
        self.save()
        return self.history

    def train_step(self, batch) -> dict:
        """One optimizer step on one clip per stream; returns the loss (mean over all
        ranks' valid streams), the number of clips and the learning rate used."""
        self.net.train()
        if self.state is None:
            self.state = self.model.init_state(self.config.batch_size, device=self.device)
        state = self.state.reset(batch.is_first.to(self.device))  # new videos start from empty memory
        kwargs = {}
        if self.config.memory_drop and self.memory_len:
            kwargs["memory_keep"] = memory_drop_mask(batch.clips.shape[0], self.memory_len, self.drop_generator).to(self.device)
        clips = batch.clips.to(self.device, non_blocking=True)
        targets = {k: v.to(self.device) for k, v in batch.targets.items()}
        valid = self._loss_mask(batch).to(self.device)
        box_labels = None
        if batch.extras:  # AVA: every slot's person boxes go through the box head
            kwargs["boxes"], box_labels = box_batch(batch.extras, batch.valid, self.device)
        if int(all_reduce(valid.sum().float())) == 0:  # no rank has a loss: the clips only write memory
            return self._memory_step(clips, state, kwargs, int(all_reduce(batch.valid.sum().float())))
        with self.optimization.autocast():
            out, new_state = self.net(clips, state, **kwargs)
            if box_labels is not None:
                loss = box_loss(out, box_labels)
            else:
                loss = stream_loss(
                    out, targets, valid, kind=self.config.loss, label_smoothing=self.config.label_smoothing,
                    class_freq=self.class_freq, eql_lambda=self.config.eql_lambda,
                )  # fmt: skip
        lr = self.optimization.lr
        skipped = self.optimization.update(loss, f"step {self.step + 1} (epoch {self.epoch})")
        if skipped is not None:  # on_nan="skip": no update; the memory from before the step is kept
            self.state = state.detach()
            return {"loss": float("nan"), "clips": 0, "lr": self.optimization.lr, "skipped": True}
        self.state = new_state  # detached by StreamStep: no graph kept across steps
        count = valid.sum().float()
        totals = all_reduce(torch.stack([loss.detach().float() * count, count, batch.valid.sum().float().to(self.device)]))
        return {"loss": (totals[0] / totals[1]).item(), "clips": int(totals[2]), "lr": lr}

    def _loss_mask(self, batch) -> torch.Tensor:
        """Bool ``(B,)``: slots whose clip carries a loss (``loss_clips="last"``: only the
        last clip of its video; a source with ``scored(video, clip)``: the clips it scores;
        the other clips only build memory)."""
        scored = getattr(self.train_source, "scored", None)
        if scored is not None:
            mask = batch.valid & torch.tensor([v >= 0 and scored(int(v), int(c)) for v, c in zip(batch.video, batch.clip)])
            if self.config.loss_clips == "all":
                return mask
            batch = dataclasses.replace(batch, valid=mask)
        if self.config.loss_clips == "all":
            return batch.valid
        last = torch.tensor([self.train_source.num_clips(int(v)) - 1 if v >= 0 else -1 for v in batch.video])
        return batch.valid & (batch.clip == last)

    @torch.no_grad()
    def _memory_step(self, clips: torch.Tensor, state, kwargs: dict, count: int) -> dict:
        """A step without any loss: forward under no_grad to carry the memory on; the
        learning-rate schedule still advances (it counts steps)."""
        with self.optimization.autocast():
            _, self.state = self.net(clips, state, **kwargs)
        lr = self.optimization.lr
        self.optimization.advance_schedule()
        return {"loss": float("nan"), "clips": count, "lr": lr}

    def _end_epoch(self) -> None:
        finished = self.epoch
        if self.val_source is not None and self.config.eval_every and (finished + 1) % self.config.eval_every == 0:
            metrics = self.evaluate()
            self.run_log.write({"epoch": finished, "step": self.step, "eval": metrics})
            self.run_log.say(f"epoch {finished} eval " + " ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
        self.epoch += 1
        self.sampler.set_epoch(self.epoch, self.config.clips_per_video(self.epoch))
        self.state = None
        self.save()

    def _record(self, result: dict, seconds: float) -> None:
        loss = result["loss"]
        record = {
            "step": self.step,
            "epoch": self.epoch,
            "loss": loss,
            "lr": result["lr"],
            "clips_per_s": result["clips"] / max(seconds, 1e-9),
            "peak_mem_mb": peak_memory_mb(self.device),
            "clips_per_video": self.sampler.clips_per_video,
        }
        if result.get("skipped"):
            record["skipped"] = True
        self.history.append(record)
        self.run_log.write(record)
        if self.on_step is not None:
            self.on_step(record)
        if self.step % self.config.log_every == 0:
            self.run_log.say(
                f"step {self.step}/{self.total_steps} epoch {self.epoch} loss {loss:.4f} lr {record['lr']:.2e} "
                f"{record['clips_per_s']:.1f} clips/s mem {record['peak_mem_mb']:.0f} MB"
            )

    # -- evaluation -------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, source: ClipSource | None = None, pooling: str = "mean") -> dict[str, float]:
        """Stream every video of ``source`` (default: the validation source) with all
        memory kept; a video's scores are its clips' logits averaged (``mean``) or its
        last clip's (``last``). Returns top-1/top-5 per head (verb/noun/action for
        EPIC heads), computed over all ranks' videos."""
        source = source or self.val_source
        if self.evaluator is not None:
            return self.evaluator(self.model, source)
        items = collect_scores(self.model, source, self.config.batch_size, self.device, pooling, self.dist)
        return classification_metrics([(s, t) for _, s, t in items])

    # -- checkpoints -------------------------------------------------------------------------

    def save(self) -> str | None:
        """Write a checkpoint (rank 0 writes; every rank's data position and memory are included)."""
        tensors: dict[str, torch.Tensor] = {}
        per_rank = all_gather_objects(self._rank_state())
        layouts = []
        for rank, (rank_tensors, layout) in enumerate(per_rank):
            tensors.update({f"rank{rank}.{k}": v for k, v in rank_tensors.items()})
            layouts.append(layout)
        if not self.dist.is_main:
            return None
        optimization = self.optimization.state(tensors)
        tensors.update({f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()})
        record = {
            "config": self.config.to_json(),
            "step": self.step,
            "epoch": self.epoch,
            "world_size": self.dist.world_size,
            **optimization,
            "ranks": layouts,
        }
        return ckpt.save_checkpoint(self.config.out_dir, self.step, tensors, record)

    def _rank_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors: dict[str, torch.Tensor] = {}
        layout = {
            "sampler": self.sampler.state_dict(),
            "stream_state": ckpt.flatten(self.state, "stream_state", tensors),
            "python_rng": ckpt.flatten(random.getstate(), "python_rng", tensors),
        }
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.drop"] = self.drop_generator.get_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        return tensors, layout

    def load(self, path: str) -> None:
        """Restore everything from a checkpoint file base or the latest one in a folder."""
        tensors, record, base = ckpt.load_latest(path)
        if record["world_size"] != self.dist.world_size:
            raise LongvidError(
                f"{path}: saved with {record['world_size']} processes, resuming with {self.dist.world_size}: "
                "use the same number of processes"
            )
        self.model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        self.optimization.load_state(record, tensors)
        self.step, self.epoch = record["step"], record["epoch"]
        self.run_log.truncate(self.step)
        self.run_log.say(f"resumed from {base} (step {self.step}, epoch {self.epoch})")
        prefix = f"rank{self.dist.rank}."
        mine = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        layout = record["ranks"][self.dist.rank]
        self.sampler.load_state_dict(layout["sampler"])
        self.state = ckpt.unflatten(layout["stream_state"], mine, self.device)
        random.setstate(ckpt.unflatten(layout["python_rng"], mine))
        torch.set_rng_state(mine["rng.torch"])
        self.drop_generator.set_state(mine["rng.drop"])
        if "rng.cuda" in mine:
            torch.cuda.set_rng_state(mine["rng.cuda"], self.device)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    source: ClipSource,
    batch_size: int,
    device: torch.device | str = "cpu",
    pooling: str = "mean",
    dist: DistInfo | None = None,
    progress=None,
) -> dict[str, float]:
    """Evaluate a memory model on whole videos streamed in order (see :meth:`Trainer.evaluate`).

    ``progress``: a :func:`longvid.progress.progress` reporter, advanced once per batch."""
    items = collect_scores(model, source, batch_size, device, pooling, dist, progress)
    return classification_metrics([(s, t) for _, s, t in items])


@torch.no_grad()
def collect_scores(
    model: nn.Module,
    source: ClipSource,
    batch_size: int,
    device: torch.device | str = "cpu",
    pooling: str = "mean",
    dist: DistInfo | None = None,
    progress=None,
) -> list[tuple[int, dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """Stream every video of ``source`` in order with all memory kept; returns, over all
    ranks, ``(video index, scores per head, targets per head)`` sorted by video. A video's
    scores are its scored clips' logits averaged (``mean``) or its last scored clip's
    (``last``); a source with ``scored(video, clip)`` scores only those clips (the others
    build memory), else every clip."""
    dist = dist or DistInfo()
    model.eval()
    sampler = StreamSampler(source, batch_size, None, shuffle=False, rank=dist.rank, world_size=dist.world_size)
    scored = getattr(source, "scored", None)
    scores: dict[int, dict[str, torch.Tensor]] = {}
    counts: dict[int, int] = {}
    targets: dict[int, dict[str, torch.Tensor]] = {}
    state = model.init_state(batch_size, device=device)
    if progress is not None:
        progress.total = len(sampler)
    for batch in sampler:
        if progress is not None:
            progress.update(1)
        state = state.reset(batch.is_first.to(device))
        out, state = model(batch.clips.to(device), state)
        out = head_outputs(out, batch.targets)
        for slot in torch.nonzero(batch.valid).flatten().tolist():
            video = int(batch.video[slot])
            if scored is not None and not scored(video, int(batch.clip[slot])):
                continue
            logits = {h: o[slot].float().cpu() for h, o in out.items()}
            if video not in scores or pooling == "last":
                scores[video], counts[video] = logits, 1
            else:
                scores[video] = {h: scores[video][h] + logits[h] for h in logits}
                counts[video] += 1
            targets[video] = {h: t[slot] for h, t in batch.targets.items()}
    local = [(v, {h: s / counts[v] for h, s in scores[v].items()}, targets[v]) for v in scores]
    gathered = [item for part in all_gather_objects(local) for item in part]
    return sorted(gathered, key=lambda item: item[0])


def classification_metrics(items: list[tuple[dict, dict]]) -> dict[str, float]:
    """Top-1/5 per head from ``[(scores per head, target per head)]``; EPIC verb/noun/action
    when both heads exist. Multi-hot targets count a hit when the top class is positive."""
    if not items:
        raise ValueError("no videos were evaluated")
    heads = list(items[0][0])
    scores = {h: torch.stack([s[h] for s, _ in items]) for h in heads}  # (N, K)
    targets = {h: torch.stack([t[h] for _, t in items]) for h in heads}
    if "verb" in heads and "noun" in heads:
        return epic_accuracy(scores["verb"], scores["noun"], targets["verb"], targets["noun"])
    result = {}
    for head in heads:
        prefix = "" if len(heads) == 1 else f"{head}_"
        if targets[head].dim() == 2:  # multi-hot
            top = scores[head].argmax(dim=1, keepdim=True)
            result[f"{prefix}top1"] = 100.0 * targets[head].gather(1, top).float().mean().item()
            continue
        ks = (1, 5) if scores[head].shape[1] > 5 else (1,)
        result.update({prefix + k: v for k, v in topk_accuracy(scores[head], targets[head], ks).items()})
    return result
