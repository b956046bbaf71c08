"""ReWind runs from a config: what ``longvid train rewind_*`` and ``longvid eval rewind_*`` call.

``stage=1``: the memory's Perceiver and the contrastive heads learn from video-caption pairs
(SigLIP loss, one sub-clip of ``clip_frames`` frames per caption). ``stage=2``: instruction
tuning (memory, projections, DFS projections, separator, grounding head and LoRA train) on
QA (Video-ChatGPT, MovieChat-1K). ``stage=grounding``: the same parts fine-tuned with the
grounding head's start/end pointer loss (Charades-STA, DiDeMo, ActivityNet Captions). Each
run steps on the training core (:class:`longvid.engine.core.TaskTrainer`: AdamW, warm-up +
cosine, clipping, NaN stop, checkpoints with ``--resume``, ``out_dir/log.jsonl``, gradients
averaged under ``torchrun``) and ends by writing ``out_dir/rewind.safetensors`` + ``rewind.json``
(:mod:`longvid.rewind.weights`), which the next stage starts from (``init=``) and
``eval``, ``ask`` and ``stream`` load.

Videos are read from files at 1 fps; the frozen encoder's features of each video are cached
under ``feature_cache`` (default ``out_dir/features``) before step 1, so epochs and later
stages never decode again. ``eval`` writes ``out_dir/metrics.json`` (grounding: R@0.3/0.5/0.7
and mIoU; DiDeMo also its own Rank@1, Rank@5 and mIoU over its 21 proposals; QA: exact-match
accuracy after normalisation, MovieChat-1K's global and breakpoint apart; GPT-judged scores are
out of scope) and one line per row to ``predictions.jsonl``.

With ``val_data``, ``train`` evaluates after every epoch (the metrics ``eval`` computes), writes
them to ``log.jsonl`` and keeps the best weights (``best_metric``: mIoU for grounding, accuracy
for QA) in ``out_dir/rewind_best.safetensors`` with ``best.json``; ``eval`` then uses those.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import string
import sys
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from longvid.core.seeding import seeded
from longvid.errors import LongvidError
from longvid.rewind.data import (FORMATS, FeatureFiles, VideoText, VideoTexts, read_data, video_durations,
                                 video_features)

STAGES = ("1", "2", "grounding")
STAGE_KINDS = {"1": ("caption", "grounding"), "2": ("qa",), "grounding": ("grounding",)}
GROUNDING_METRICS = ("R@0.3", "R@0.5", "R@0.7", "mIoU")
DIDEMO_METRICS = ("Rank@1", "Rank@5", "didemo_mIoU")  # DiDeMo's own, over its 21 proposals
QA_METRICS = ("accuracy", "accuracy_global", "accuracy_breakpoint")
ALL_METRICS = GROUNDING_METRICS + DIDEMO_METRICS + QA_METRICS


@dataclass(frozen=True)
class RewindRunConfig:
    """A ReWind training or evaluation run (``key=value`` on the command line sets any field)."""

    model: str = "rewind_tiny"  # ReWind model preset (longvid models)
    stage: str = "grounding"  # "1" (captions, SigLIP), "2" (QA instruction tuning), "grounding"
    data: str = ""  # training annotation file (a MovieChat-1K folder too)
    val_data: str | None = None  # evaluation annotation file (eval falls back to data; train evaluates it every epoch)
    eval_every_epoch: bool = True  # train with val_data: evaluate after every epoch, keep the best (rewind_best.safetensors)
    best_metric: str = "auto"  # the metric that picks the best epoch (auto: mIoU for grounding, accuracy for QA)
    format: str = "auto"  # charades_sta, didemo, activitynet, moviechat, videochatgpt, captions, or auto
    video_root: str | None = None  # videos folder (default: the annotation file's folder)
    val_video_root: str | None = None  # videos folder of val_data (default: video_root)
    video_ext: str = ".mp4"  # preferred extension: any video extension is found, this one wins ties
    missing: str = "error"  # a listed video that is not there: "error" before step 1, or "skip" its rows
    strict: bool = False  # a row that cannot be used (start >= end, a start past the video's end): error (else skipped and counted)
    encoder: str | None = None  # frozen image encoder: path or hub id (tiny presets: built in)
    llm: str | None = None  # causal LM: path or hub id (tiny presets: built in)
    init: str | None = None  # start from these ReWind weights (a previous stage's out_dir/rewind.safetensors)
    model_seed: int = 0  # the random trainable parts (and a tiny preset's backbones) are drawn from this
    fps: float = 1.0  # frames read per second of video (ReWind: 1)
    relevance_cut: bool = False  # DFS cuts its top L at the largest relevance drop before DPC-KNN (not in the paper)
    feature_cache: str | None = ""  # folder of cached encoder features ("": out_dir/features; null: in memory only)
    feature_dtype: str = "float16"  # cached features: float16 or float32
    backbone_dtype: str = "float32"  # the frozen encoder and LLM weights: float32, or bfloat16 (halves a 7B LLM; bf16 autocast)
    grounding_prompt: str = "{query}"  # the question a grounding query is asked as ({query}: the sentence)
    policy_weight: float | None = None  # stage 2 with DFS: REINFORCE weight for the DFS projections (None: off)
    max_new_tokens: int = 32  # eval: answer length
    batch_size: int = 4  # streams per step, per process
    epochs: int = 1
    max_steps: int | None = None  # stop after this many steps (None: all epochs)
    shuffle: bool = True
    lr: float = 1e-4
    min_lr: float = 0.0
    weight_decay: float = 0.0
    warmup_steps: int = 0
    clip_grad: float | None = 1.0
    amp: str = "auto"  # auto (bf16 on CUDA), bf16, fp16, off
    on_nan: str = "stop"
    seed: int = 0  # data order and dropout
    log_every: int = 10
    checkpoint_every: int = 500
    out_dir: str = "runs/rewind"

    def validate(self) -> "RewindRunConfig":
        checks = [
            (self.stage in STAGES, f"stage must be 1, 2 or grounding, got {self.stage!r}"),
            (self.missing in ("error", "skip"), f"missing must be 'error' or 'skip', got {self.missing!r}"),
            (math.isfinite(self.fps) and self.fps > 0, f"fps must be > 0, got {self.fps}"),
            (self.feature_dtype in ("float16", "float32"), f"feature_dtype must be float16 or float32, got {self.feature_dtype!r}"),
            (self.backbone_dtype in ("float32", "bfloat16"), f"backbone_dtype must be float32 or bfloat16, got {self.backbone_dtype!r}"),
            (self.backbone_dtype == "float32" or self.amp in ("auto", "bf16"),
             f"backbone_dtype=bfloat16 runs under bf16 autocast: amp must be auto or bf16, got {self.amp!r}"),
            ("{query}" in self.grounding_prompt, f"grounding_prompt must contain {{query}}, got {self.grounding_prompt!r}"),
            (self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1 (or null), got {self.max_steps}"),
            (bool(self.out_dir), "out_dir must not be empty"),
            (self.format == "auto" or self.format in FORMATS, f"format must be auto or one of {', '.join(FORMATS)}, got {self.format!r}"),
            (self.init is None or self.init.endswith(".safetensors"), f"init must be a ReWind .safetensors weights file, got {self.init!r}"),
            (self.best_metric == "auto" or self.best_metric in ALL_METRICS,
             f"best_metric must be auto or one of {', '.join(ALL_METRICS)}, got {self.best_metric!r}"),
        ]
        for field in ("encoder", "llm", "init"):  # local paths (hub ids are org/name) must exist
            value = getattr(self, field)
            if value and value.startswith(("/", "./", "../", "~")) and not os.path.exists(os.path.expanduser(value)):
                checks.append((False, f"{field}={value}: no such file or folder"))
        for ok, message in checks:
            if not ok:
                raise LongvidError(f"config: {message}")
        self.train_config()  # the core's checks: lr, min_lr, warmup_steps, clip_grad, amp, on_nan, ...
        return self

    def train_config(self):
        """The core's optimisation settings (AdamW; bf16 autocast whenever the backbones are bfloat16)."""
        from longvid.engine.config import TrainConfig

        amp = "bf16" if self.backbone_dtype == "bfloat16" else self.amp
        return TrainConfig(optimizer="adamw", lr=self.lr, min_lr=self.min_lr, weight_decay=self.weight_decay,
                           warmup_steps=self.warmup_steps, clip_grad=self.clip_grad, amp=amp, on_nan=self.on_nan,
                           seed=self.seed, log_every=self.log_every, checkpoint_every=self.checkpoint_every,
                           max_steps=self.max_steps, out_dir=self.out_dir).validate()

    def cache_dir(self) -> str | None:
        if self.feature_cache is None:
            return None
        return self.feature_cache or os.path.join(self.out_dir, "features")


PRESETS: dict[str, RewindRunConfig] = {
    # Tests and CPU demos: rewind_tiny with its built-in tiny random backbones.
    "rewind_tiny": RewindRunConfig(model="rewind_tiny", batch_size=2, lr=1e-3, log_every=1, checkpoint_every=2,
                                   out_dir="runs/rewind_tiny", feature_dtype="float32"),
    # The paper's system: EVA-CLIP ViT-g features (encoder=) and LLaMA-2 7B (llm=), LoRA r=64 / alpha=32.
    "rewind_paper": RewindRunConfig(model="rewind_paper", batch_size=8, lr=1e-4, warmup_steps=200, weight_decay=0.0,
                                    amp="auto", log_every=10, checkpoint_every=1000, out_dir="runs/rewind"),
}


def describe(name: str) -> str:
    """One line: the training stage of run preset ``name``."""
    return f"stage {PRESETS[name].stage}"


def load_run_config(name: str, overrides: Sequence[str] = ()) -> RewindRunConfig:
    """Preset ``name`` with ``key=value`` overrides, validated."""
    from longvid.engine.overrides import apply_overrides

    if name not in PRESETS:
        raise LongvidError(f"unknown ReWind run preset {name!r}: choose from {', '.join(sorted(PRESETS))}")
    return apply_overrides(PRESETS[name], overrides, name).validate()


# -- data ------------------------------------------------------------------------------------


def read_checked(config: RewindRunConfig, path: str, role: str, log: Callable[[str], None] | None) -> VideoTexts:
    """Read ``path``, say how many of its videos are there, and drop or refuse missing ones; cut
    the intervals to each video's duration (its header's), and say in the same line which rows
    were skipped (``strict``: refused) and how many intervals were cut."""
    video_root = config.video_root if role == "train" else (config.val_video_root or config.video_root)
    data = read_data(path, video_root, config.format, config.video_ext, strict=config.strict)
    found, missing = data.found_missing()
    if not (missing and (config.missing == "error" or not found)):
        data = data.without(missing)
        if data.kind in ("grounding", "caption"):
            data = data.clamped_to(video_durations(found), strict=config.strict)
    if log:
        summary = data.summary()
        log(f"{role} data {path}: {data.format}, {len(data.items)} rows, {len(found) + len(missing)} videos: "
            f"{len(found)} found, {len(missing)} missing" + (f" (first: {missing[0]})" if missing else "")
            + (f"; {summary}" if summary else ""))
    if missing and (config.missing == "error" or not found):
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        hint = f" (missing=skip {'trains' if role == 'train' else 'evaluates'} on the rest)" if found else ""
        raise LongvidError(f"{role} data {path}: video {missing[0]} not found{more}{hint}")
    if not data.items:
        raise LongvidError(f"{role} data {path}: no rows left to use ({data.summary()})")
    return data


def _check_kind(config: RewindRunConfig, data: VideoTexts) -> None:
    if data.kind not in STAGE_KINDS[config.stage]:
        wanted = " or ".join(STAGE_KINDS[config.stage])
        raise LongvidError(f"stage={config.stage} trains on {wanted} data; {data.path} is {data.format} ({data.kind})")


def question_of(config: RewindRunConfig, item: VideoText, kind: str) -> str:
    """What the LLM is asked (and the memory is instructed with) for ``item``."""
    return config.grounding_prompt.format(query=item.text) if kind == "grounding" else item.text


# -- the model -------------------------------------------------------------------------------


def build_run_model(config: RewindRunConfig, device=None, weights: str | None = None):
    """The run's ReWind: from ``weights`` (or ``config.init``) with the frozen parts its JSON names
    (``config.encoder`` / ``llm`` replace them), else fresh from the preset; returns
    ``(model, stages the weights went through)``."""
    from longvid.rewind import build_model
    from longvid.rewind.parts import image_encoder
    from longvid.rewind.weights import load_weights, read_weights_config

    source = weights or config.init
    if source is None:
        encoder = image_encoder(config.encoder, device) if config.encoder else None
        model, stages = build_model(config.model, encoder=encoder, llm=config.llm, seed=config.model_seed, device=device), []
    else:
        record = read_weights_config(source)
        if record["preset"] != config.model:
            raise LongvidError(f"{source} holds {record['preset']} weights, not {config.model} (set model={record['preset']})")
        model, stages = load_weights(source, encoder=config.encoder, llm=config.llm, device=device), list(record.get("stages", []))
    if config.relevance_cut:
        model.selector = replace(model.selector, cut=True)  # the preset's DFS, cut first
    return cast_frozen(model, getattr(torch, config.backbone_dtype)), stages


def cast_frozen(model, dtype: torch.dtype):
    """``model`` with its frozen encoder and LLM weights in ``dtype`` (LoRA adapters and every
    trained part stay float32); returns it."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith(("encoder.", "llm.")) and "lora_" not in name and param.is_floating_point():
                param.data = param.data.to(dtype)
    return model


def autocast(config: RewindRunConfig, device: torch.device):
    """Evaluation's autocast: bf16 when the backbones are bfloat16 (their matmuls need it), else none."""
    if config.backbone_dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def feature_files(config: RewindRunConfig, model) -> FeatureFiles:
    """The feature cache of ``model``'s frozen encoder (keyed by its name and a checksum of its weights)."""
    encoder = getattr(model.encoder, "name", "") or type(model.encoder).__name__
    first = next(model.encoder.parameters())
    ident = f"{encoder}:{tuple(first.shape)}:{float(first.detach().double().sum()):.12e}"
    return FeatureFiles(config.cache_dir(), ident, config.fps, getattr(torch, config.feature_dtype))


def precompute(model, features: FeatureFiles, datasets: Sequence[VideoTexts], fps: float, progress: bool,
               rank: int = 0, world: int = 1) -> None:
    """Every video's encoder features computed (and cached) before step 1; with a cache on disk,
    each of ``world`` processes computes its share (the caller waits for all at a barrier)."""
    from longvid.progress import progress as progress_bar

    videos = list(dict.fromkeys(v for data in datasets for v in data.videos()))
    if features.cache is not None:
        videos = videos[rank::world]
    todo = [v for v in videos if not features.has(v)]
    bar = progress_bar(len(todo), desc="features", unit="video", enabled=progress and bool(todo))
    try:
        for video in todo:
            _read(features, model, fps, video)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def _read(features: FeatureFiles, model, fps: float, video: str) -> tuple[torch.Tensor, torch.Tensor]:
    return features.get(video, lambda v: video_features(model, v, fps))


def watch(model, videos: Sequence[tuple[torch.Tensor, torch.Tensor]], instructions: list[str] | None):
    """Streams watching ``videos`` (features ``(n_b, P, D_v)``, times ``(n_b,)``) one sub-clip of
    ``clip_frames`` frames per step, padded streams marked invalid; returns the state."""
    device = model.separator.device
    state = model.init_state(len(videos), instructions=instructions)
    clip = model.config.clip_frames
    longest = max(len(t) for _, t in videos)
    shape = videos[0][0].shape[1:]  # (P, D_v)
    for start in range(0, longest, clip):
        width = min(clip, longest - start)
        step = torch.zeros(len(videos), width, *shape)  # (B, T, P, D_v), zeros after a stream's end
        times = torch.zeros(len(videos), width, dtype=torch.float64)
        valid = torch.zeros(len(videos), width, dtype=torch.bool)
        for b, (features, stamps) in enumerate(videos):
            part = slice(start, min(start + width, len(stamps)))
            count = max(0, part.stop - part.start)
            step[b, :count], times[b, :count], valid[b, :count] = features[part], stamps[part], True
            times[b, count:] = stamps[-1]
        _, state = model.observe_features(step.to(device), times.to(device), state, valid.to(device))
    return state


def upto(video: tuple[torch.Tensor, torch.Tensor], until: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames seen by ``until`` seconds (breakpoint mode; at least the first frame)."""
    features, times = video
    if until is None:
        return video
    count = max(1, int((times <= until + 1e-6).sum()))
    return features[:count], times[:count]


def segment_frames(video: tuple[torch.Tensor, torch.Tensor], interval: tuple[float, float] | None,
                   frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A caption's sub-clip: the frames in ``interval`` (all when None; the nearest one when none
    fall inside), at most ``frames`` of them spread evenly."""
    features, times = video
    if interval is not None:
        inside = ((times >= interval[0]) & (times < interval[1])).nonzero().flatten()
        if len(inside) == 0:
            inside = (times - (interval[0] + interval[1]) / 2).abs().argmin().reshape(1)
        features, times = features[inside], times[inside]
    if len(times) > frames:
        pick = torch.linspace(0, len(times) - 1, frames).round().long()
        features, times = features[pick], times[pick]
    return features, times


# -- tasks -----------------------------------------------------------------------------------


class RewindTask:
    """One stage of a ReWind run as a task of the core: the batch of a step is a list of rows
    (a fresh seeded order every epoch, each rank taking its share), its loss the stage's."""

    def __init__(self, config: RewindRunConfig, data: VideoTexts, features: FeatureFiles, rank: int = 0, world: int = 1):
        self.config, self.data, self.features = config, data, features
        self.rank, self.world = rank, world
        self.name = f"ReWind stage {config.stage}"
        self.global_batch = config.batch_size * world
        self.per_epoch = max(1, len(data.items) // self.global_batch)

    def total_steps(self) -> int:
        return self.config.max_steps if self.config.max_steps is not None else self.config.epochs * self.per_epoch

    def batch(self, step: int) -> list[VideoText]:
        epoch, offset = divmod(step, self.per_epoch)
        count = len(self.data.items)
        order = (torch.randperm(count, generator=torch.Generator().manual_seed(self.config.seed + epoch))
                 if self.config.shuffle else torch.arange(count))
        rows = order[offset * self.global_batch : (offset + 1) * self.global_batch]
        return [self.data.items[int(i)] for i in rows[self.rank :: self.world]]

    def size(self, batch: list[VideoText]) -> int:
        return len(batch)

    def loss(self, model, batch: list[VideoText]) -> torch.Tensor:
        videos = [_read(self.features, model, self.config.fps, item.video) for item in batch]
        if self.config.stage == "1":
            return caption_loss(model, [segment_frames(v, i.interval, model.config.clip_frames) for v, i in zip(videos, batch)],
                                [i.text for i in batch])
        questions = [question_of(self.config, item, self.data.kind) for item in batch]
        if self.config.stage == "grounding":
            return grounding_loss(model, videos, questions, [item.interval for item in batch])
        seen = [upto(v, item.until) for v, item in zip(videos, batch)]
        state = watch(model, seen, questions)
        return model.answer_loss(state, questions, [item.answer for item in batch], policy_weight=self.config.policy_weight)


def caption_loss(model, clips: list[tuple[torch.Tensor, torch.Tensor]], captions: list[str]) -> torch.Tensor:
    """Stage 1: SigLIP loss between each sub-clip's written memory tokens and its caption."""
    device = model.separator.device
    frames = model.config.clip_frames
    shape = clips[0][0].shape[1:]
    step = torch.zeros(len(clips), frames, *shape)  # (B, F, P, D_v)
    times = torch.zeros(len(clips), frames, dtype=torch.float64)
    valid = torch.zeros(len(clips), frames, dtype=torch.bool)
    for b, (features, stamps) in enumerate(clips):
        step[b, : len(stamps)], times[b, : len(stamps)], valid[b, : len(stamps)] = features, stamps, True
        times[b, len(stamps) :] = stamps[-1]
    state = model.init_state(len(clips))
    out, _ = model.observe_features(step.to(device), times.to(device), state, valid.to(device))
    ids, mask = model.tokenize(captions)
    return model.contrastive_loss(out["memory_tokens"], valid.sum(1).to(device), ids, mask)


def grounding_loss(model, videos, questions: list[str], intervals: list[tuple[float, float]]) -> torch.Tensor:
    """Grounding: start/end pointer cross-entropy at the first and last frame inside each target."""
    from longvid.rewind.grounding import frames_in

    state = watch(model, videos, questions)
    targets = torch.tensor([frames_in(times, interval) for (_, times), interval in zip(videos, intervals)])
    return model.grounding_loss(state, questions, targets)


# -- train -----------------------------------------------------------------------------------


def _logger(progress: bool) -> Callable[[str], None] | None:
    """Run notes on stderr, plain like the progress lines (``longvid:`` starts errors and warnings)."""
    return (lambda message: print(message, file=sys.stderr, flush=True)) if progress else None


def train(config_name: str, overrides: Sequence[str] = (), resume: bool = False, progress: bool = True) -> list[dict]:
    """Train preset ``config_name`` with ``overrides`` (one stage); returns the step records.
    Writes the core's checkpoints and ``log.jsonl``, then ``out_dir/rewind.safetensors`` + ``.json``."""
    from longvid.rewind.weights import save_weights
    from longvid.progress import progress as progress_bar
    from longvid.engine.core import TaskTrainer
    from longvid.engine.distributed import barrier, cleanup, setup

    from longvid.rewind.config import TINY_BACKBONES

    config = load_run_config(config_name, overrides)
    if not config.data:
        raise LongvidError("config: data= is required (the training annotation file)")
    if config.model not in TINY_BACKBONES and config.init is None and not (config.encoder and config.llm):
        raise LongvidError(f"config: model {config.model} needs encoder= and llm= (paths or hub ids), or init= weights naming them")
    dist = setup()
    log = _logger(progress and dist.is_main)
    try:
        data = read_checked(config, config.data, "train", log)
        _check_kind(config, data)
        val = None
        if config.val_data and config.eval_every_epoch:  # read and checked now: a bad file fails before compute
            val = read_checked(config, config.val_data, "val", log)
            if val.kind == "caption":
                raise LongvidError(f"val_data {config.val_data}: caption pairs have no evaluation; give grounding or QA data "
                                   "(or eval_every_epoch=false)")
            criterion = best_metric(config, val)
        model, stages = build_run_model(config, dist.device)
        features = feature_files(config, model)
        precompute(model, features, [data] + ([val] if val else []), config.fps, progress and dist.is_main, dist.rank,
                   dist.world_size)
        barrier()
        model.set_stage(1 if config.stage == "1" else 2)
        task = RewindTask(config, data, features, dist.rank, dist.world_size)
        total = task.total_steps()
        best = None
        if val is not None:
            from longvid.engine.validation import BestEpoch, forget_best

            if dist.is_main and not resume:  # an earlier run's best is not this run's
                forget_best(config.out_dir, ["best.json", BEST_WEIGHTS, BEST_WEIGHTS.replace(".safetensors", ".json")])
            validation = Validation(config, val, features, dist.device, dist.rank, dist.world_size)
            keep = lambda: save_weights(model, os.path.join(config.out_dir, BEST_WEIGHTS), config.model, config.encoder,  # noqa: E731
                                        config.llm, config.model_seed, [*stages, config.stage])
            best = BestEpoch(lambda: validation(model), lambda metrics: metrics[criterion], keep, task.per_epoch,
                             config.out_dir, dist.is_main, resume, log or (lambda text: None), last_step=total,
                             criterion=criterion)
        bar = progress_bar(total, desc=f"train stage {config.stage}", unit="step", enabled=progress and dist.is_main)

        def on_step(record: dict) -> None:
            if bar is not None:
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                bar.update(1)
            if best is not None:
                best(record)

        say = None if bar is None else bar.write
        if best is not None and say is not None:
            best.say = say
        try:
            with seeded(config.seed):
                trainer = TaskTrainer(model, task, config.train_config(), total, config.out_dir, dist, on_step=on_step,
                                      log=say, norm_order="groups")
                if best is not None:
                    best.run_log = trainer.run_log
                history = trainer.fit(resume=resume)
        finally:
            if bar is not None:
                bar.close()
        model.eval()
        if dist.is_main:
            path = save_weights(model, os.path.join(config.out_dir, "rewind.safetensors"), config.model, config.encoder,
                                config.llm, config.model_seed, [*stages, config.stage])
            done = f"trained {history[-1]['step']} steps; last loss {history[-1]['loss']:.4f}; " if history else ""
            print(f"{done}weights in {path} (+ rewind.json: trained stages {', '.join([*stages, config.stage])})")
            if best is not None and os.path.exists(best.record_path):
                with open(best.record_path, encoding="utf-8") as f:
                    kept = json.load(f)
                print(f"best validation epoch {kept['epoch']} (step {kept['step']}, {criterion} {kept['score']:.2f}): "
                      f"{os.path.join(config.out_dir, BEST_WEIGHTS)} (what eval uses)")
        return history
    finally:
        cleanup()


# -- eval ------------------------------------------------------------------------------------


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def strip_punctuation_and_articles(text: str) -> str:
    """The standard normalisation before exact match: lower case, punctuation and articles
    (a, an, the) removed, white space collapsed."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answer: str) -> bool:
    return strip_punctuation_and_articles(prediction) == strip_punctuation_and_articles(answer)


def _weights_for(config: RewindRunConfig, checkpoint: str | None) -> str:
    """The weights file to evaluate: ``checkpoint`` (a weights file, or a folder holding
    ``rewind.safetensors``), else ``out_dir/rewind_best.safetensors`` (the best validation epoch)
    when the run kept one, else ``out_dir/rewind.safetensors``."""
    path = checkpoint or config.out_dir
    if os.path.isdir(path):
        best = os.path.join(path, BEST_WEIGHTS)
        path = best if checkpoint is None and os.path.isfile(best) else os.path.join(path, "rewind.safetensors")
    if not os.path.isfile(path):
        raise LongvidError(f"{path}: no ReWind weights to evaluate (train first, or give --checkpoint WEIGHTS.safetensors)")
    return path


BEST_WEIGHTS = "rewind_best.safetensors"  # + rewind_best.json (its frozen parts) and best.json (the epoch record)


def metric_names(data: VideoTexts) -> tuple[str, ...]:
    """The metrics :func:`summarize` gives for ``data``."""
    if data.kind == "grounding":
        return GROUNDING_METRICS + (DIDEMO_METRICS if data.format == "didemo" else ())
    return ("accuracy", "accuracy_global", "accuracy_breakpoint") if data.format == "moviechat" else ("accuracy",)


def best_metric(config: RewindRunConfig, data: VideoTexts) -> str:
    """The metric that picks the best epoch: ``config.best_metric``, or mIoU (grounding) / accuracy (QA)."""
    name = config.best_metric if config.best_metric != "auto" else ("mIoU" if data.kind == "grounding" else "accuracy")
    if name not in metric_names(data):
        raise LongvidError(f"config: best_metric={name}: {data.path} ({data.format}) gives {', '.join(metric_names(data))}")
    return name


def predict(config: RewindRunConfig, model, features: FeatureFiles, data: VideoTexts, device: torch.device,
            items: Sequence[VideoText] | None = None, on_rows: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """The prediction rows of ``items`` (default: all of ``data``'s), ``batch_size`` streams at a
    time under evaluation's autocast; ``on_rows`` sees each batch's rows as they come."""
    items = list(data.items if items is None else items)
    rows = []
    for first in range(0, len(items), config.batch_size):
        batch = items[first : first + config.batch_size]
        with autocast(config, device):
            found = _evaluate_batch(config, model, features, data.kind, batch, data.durations or {})
        if on_rows is not None:
            on_rows(found)
        rows.extend(found)
    return rows


@torch.no_grad()
def evaluate(config_name: str, overrides: Sequence[str] = (), checkpoint: str | None = None, progress: bool = True,
             predictions: str | None = None) -> dict:
    """Evaluate trained weights on ``val_data`` (else ``data``) in one process (on CUDA when there
    is one); writes ``out_dir/metrics.json`` and ``predictions`` (default ``out_dir/predictions.jsonl``,
    one line per row, written as they come); returns the metrics."""
    from longvid.fileio import write_text_atomically
    from longvid.progress import progress as progress_bar

    config = load_run_config(config_name, overrides)
    path = config.val_data or config.data
    if not path:
        raise LongvidError("config: val_data= (or data=) is required: the annotation file to evaluate on")
    weights = _weights_for(config, checkpoint)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise LongvidError("eval runs in one process: start it without torchrun")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log = _logger(progress)
    data = read_checked(config, path, "eval", log)
    if data.kind == "caption":
        raise LongvidError(f"{path}: caption pairs (stage 1) have no evaluation here; evaluate on grounding or QA data")
    model, stages = build_run_model(config, device, weights)
    model.eval()
    if log and os.path.basename(weights) == BEST_WEIGHTS:
        log(f"evaluating {weights} (the best validation epoch)")
    features = feature_files(config, model)
    precompute(model, features, [data], config.fps, progress)
    predictions = predictions or os.path.join(config.out_dir, "predictions.jsonl")
    os.makedirs(os.path.dirname(os.path.abspath(predictions)), exist_ok=True)
    bar = progress_bar(len(data.items), desc="eval", unit="row", enabled=progress)
    try:
        with open(predictions, "w", encoding="utf-8") as out:
            def written(found: list[dict]) -> None:
                for row in found:
                    out.write(json.dumps(row) + "\n")
                out.flush()
                if bar is not None:
                    bar.update(len(found))

            rows = predict(config, model, features, data, device, on_rows=written)
    finally:
        if bar is not None:
            bar.close()
    metrics = summarize(data, rows)
    metrics.update({"data": path, "format": data.format, "weights": weights, "stages": stages})
    path = os.path.join(config.out_dir, "metrics.json")
    write_text_atomically(path, json.dumps(metrics, indent=1) + "\n")
    print("  ".join(f"{k} {v:.2f}" for k, v in metrics.items() if isinstance(v, float)))
    print(f"metrics of {len(rows)} rows written to {path}")
    return metrics


def didemo_spans(device=None) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """DiDeMo's 21 proposals as ``(first, last)`` segments and as seconds ``(21, 2)``."""
    from longvid.eval.metrics import didemo_proposals

    from longvid.rewind.data import DIDEMO_SEGMENT

    proposals = didemo_proposals()
    seconds = torch.tensor([(a * DIDEMO_SEGMENT, (b + 1) * DIDEMO_SEGMENT) for a, b in proposals], dtype=torch.float64)
    return proposals, seconds


def _evaluate_batch(config: RewindRunConfig, model, features: FeatureFiles, kind: str, batch: list[VideoText],
                    durations: dict[str, float]) -> list[dict]:
    videos = [upto(_read(features, model, config.fps, item.video), item.until) for item in batch]
    questions = [question_of(config, item, kind) for item in batch]
    state = watch(model, videos, questions)
    if kind == "grounding":
        from longvid.eval.metrics import clamp_intervals, temporal_iou

        predicted = model.ground(state, questions)  # (B, 2) seconds
        # cut to each video's duration (its header's; unknown: the last frame's time + half a frame)
        ends = [durations.get(item.video) or float(times[-1]) + 0.5 / config.fps for item, (_, times) in zip(batch, videos)]
        predicted = clamp_intervals(predicted, torch.tensor(ends, dtype=torch.float64))
        target = torch.tensor([item.interval for item in batch], dtype=torch.float64)
        iou = temporal_iou(predicted, target)
        rows = [{"where": item.where, "video": item.video, "query": item.text, "prediction": [float(p[0]), float(p[1])],
                 "target": list(item.interval), "iou": float(i)} for item, p, i in zip(batch, predicted, iou)]
        if all(item.times for item in batch):  # DiDeMo: its 21 proposals ranked by the grounding pointers' span scores
            proposals, seconds = didemo_spans()
            scores = model.score_spans(state, questions, seconds).float().cpu()  # (B, 21)
            order = scores.sort(dim=1, descending=True, stable=True).indices  # ties (spans past the video): proposal order
            for row, item, ranked in zip(rows, batch, order.tolist()):
                row["proposals"] = [list(proposals[i]) for i in ranked]
                row["times"] = [list(t) for t in item.times]
        return rows
    answers = model.answer(state, questions, max_new_tokens=config.max_new_tokens)
    return [{"where": item.where, "video": item.video, "question": item.text, "group": item.group, "until": item.until,
             "prediction": answer, "answer": item.answer, "correct": exact_match(answer, item.answer)}
            for item, answer in zip(batch, answers)]


def summarize(data: VideoTexts, rows: list[dict]) -> dict:
    """The metrics of the evaluated ``rows`` (percent)."""
    if data.kind == "grounding":
        from longvid.eval.metrics import didemo_metrics, grounding_metrics

        predicted = torch.tensor([r["prediction"] for r in rows], dtype=torch.float64)
        target = torch.tensor([r["target"] for r in rows], dtype=torch.float64)
        metrics = {**grounding_metrics(predicted, target), "samples": len(rows)}
        if data.format == "didemo":  # LocalizingMoments utils/eval.py: against every annotator, the worst left out
            official = didemo_metrics([r["proposals"] for r in rows], [r["times"] for r in rows])
            metrics.update({"Rank@1": official["Rank@1"], "Rank@5": official["Rank@5"], "didemo_mIoU": official["mIoU"]})
        return metrics
    metrics = {"accuracy": 100.0 * sum(r["correct"] for r in rows) / len(rows), "samples": len(rows),
               "metric": "exact match after normalisation (GPT-judged scores are not computed)"}
    for group in ("global", "breakpoint"):
        picked = [r for r in rows if r["group"] == group]
        if picked:
            metrics[f"accuracy_{group}"] = 100.0 * sum(r["correct"] for r in picked) / len(picked)
            metrics[f"samples_{group}"] = len(picked)
    return metrics


class Validation:
    """``val_data`` evaluated during training: each of ``world`` ranks predicts every ``world``-th
    row with the model in eval mode (the training's random state left as it was, so a run with
    validation trains as one without), rank 0 gathers and returns :func:`summarize`'s metrics."""

    def __init__(self, config: RewindRunConfig, data: VideoTexts, features: FeatureFiles, device: torch.device,
                 rank: int = 0, world: int = 1):
        self.config, self.data, self.features, self.device, self.rank, self.world = config, data, features, device, rank, world

    @torch.no_grad()
    def __call__(self, model) -> dict | None:
        from longvid.engine.distributed import all_gather_objects

        was_training = model.training
        model.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                mine = predict(self.config, model, self.features, self.data, self.device, self.data.items[self.rank :: self.world])
        finally:
            model.train(was_training)
        shards = all_gather_objects(mine) if self.world > 1 else [mine]
        if self.rank != 0:
            return None
        rows = [shards[i % self.world][i // self.world] for i in range(len(self.data.items))]
        return summarize(self.data, rows)
