"""Training configuration: one frozen dataclass, loaded from a family's named recipes or a JSON file."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass
from typing import Mapping, Sequence

from longvid.errors import LongvidError

TASKS = ("classify", "epic_verb_noun", "epic_anticipation", "ava")

@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the model weights and the data files.

    Data: ``data`` is a generic annotation file (CSV/JSON/JSONL), a Kinetics-style
    ``root/<class>/<video>`` folder, or ``"synthetic"`` (generated clips; see
    :func:`longvid.memvit.data.synthetic_source`). Progressive schedule: epoch ``e``
    uses videos cut into ``progressive[min(e // stage_epochs, len - 1)]``-clip
    segments (``()`` keeps whole videos).
    """

    model: str = "memvit_tiny"
    task: str = "classify"  # classify | epic_verb_noun | epic_anticipation | ava (see longvid.memvit.tasks)
    num_classes: int = 10  # classify: classes of the linear head
    data: str = "synthetic"
    val_data: str | None = None
    classes: str | None = None  # class list file (names, index order) for files that name classes
    video_root: str | None = None  # folder of the videos an annotation file names (default: the file's folder)
    strict: bool = False  # a video an annotation file names is missing: error (else skipped and counted)
    memory_len: int | None = None  # MeMViT memory length M (None: the model preset's)
    sampler: str | None = None  # MeMViT memory sampler: consecutive | gapN (None: the model preset's)
    context_clips: int | None = None  # EPIC: clips before each segment's clips that build memory (None: the model's reach)
    # EPIC-KITCHENS-100 (tasks epic_verb_noun, epic_anticipation)
    num_verbs: int = 97
    num_nouns: int = 300
    video_info: str | None = None  # EPIC_100_video_info.csv (fps and duration; default: read from each video)
    tail_verbs: str | None = None  # EPIC_100_tail_verbs.csv: adds the tail-class metrics
    tail_nouns: str | None = None  # EPIC_100_tail_nouns.csv
    unseen_participants: str | None = None  # EPIC_100_unseen_participant_ids_validation.csv: the unseen split
    tau_a: float = 1.0  # anticipation time: the observed clip ends tau_a seconds before the segment starts
    # AVA v2.2 (task ava)
    action_list: str | None = None  # ava_action_list_v2.2_for_activitynet_2019.pbtxt: the evaluated classes (60)
    excluded_timestamps: str | None = None  # ava_val_excluded_timestamps_v2.2.csv: keyframes left out of the evaluation
    person_boxes: str | None = None  # detected person boxes (AVA CSV layout, 8th field the score): what evaluation scores
    box_threshold: float = 0.8  # detections with a lower score are left out
    # fine-tuning
    init_from: str | None = None  # checkpoint (official .pyth or ours) whose backbone starts the run
    freeze: str = "none"  # none | backbone (train the heads only)
    clip_frames: int = 8
    stride: int = 4
    size: int = 64  # short side and square center crop of file clips
    augment: bool = False  # training clips: random short-side scale (size*256/224..size*340/224), random crop, flip
    synthetic_videos: int = 16
    synthetic_clips: int = 4
    batch_size: int = 4
    epochs: int = 5
    progressive: tuple[int, ...] = ()
    stage_epochs: int = 1
    memory_drop: bool = True
    shuffle: bool = True
    optimizer: str = "adamw"  # "adamw" or "sgd" (with momentum)
    lr: float = 1e-3
    min_lr: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 0.05
    warmup_steps: int = 0
    clip_grad: float | None = 1.0  # max gradient norm; 0 or None: no clipping
    loss: str = "ce"  # "ce" (label smoothing), "bce" (multi-hot), "eql" (softmax equalization loss)
    loss_clips: str = "all"  # "all": every clip carries its video's loss; "last": only each video's last clip
    label_smoothing: float = 0.0
    eql_lambda: float = 0.003
    amp: str = "auto"  # "auto" (bf16/fp16 on CUDA, off on CPU), "bf16", "fp16", "off"
    seed: int = 0
    eval_every: int = 1  # epochs; 0: never
    log_every: int = 10  # steps
    checkpoint_every: int = 100  # steps; a checkpoint is also written at the end of every epoch
    on_nan: str = "stop"  # a non-finite loss: "stop" the run (the last checkpoint stays good) or "skip" the step
    max_steps: int | None = None  # stop after this many steps (None: run all epochs)
    out_dir: str = "runs/longvid"
    find_unused_parameters: bool = True  # DDP: memory modules get no gradient while memory is empty

    def clips_per_video(self, epoch: int) -> int | None:
        """Segment length for ``epoch`` under the progressive schedule (None: whole videos)."""
        if not self.progressive:
            return None
        return self.progressive[min(epoch // self.stage_epochs, len(self.progressive) - 1)]

    def validate(self) -> "TrainConfig":
        """Raise :class:`LongvidError` naming the first bad field; returns self."""
        for ok, message in self._checks():
            if not ok:
                raise LongvidError(f"config: {message}")
        return self

    def _checks(self) -> list[tuple[bool, str]]:
        finite = math.isfinite
        return [
            (self.task in TASKS, f"task must be one of {', '.join(TASKS)}, got {self.task!r}"),
            (self.num_verbs >= 1 and self.num_nouns >= 1, f"num_verbs and num_nouns must be >= 1, got {self.num_verbs}, {self.num_nouns}"),
            (finite(self.tau_a) and self.tau_a >= 0, f"tau_a must be >= 0 seconds, got {self.tau_a}"),
            (self.context_clips is None or self.context_clips >= 0, f"context_clips must be >= 0, got {self.context_clips}"),
            (self.memory_len is None or self.memory_len >= 0, f"memory_len must be >= 0, got {self.memory_len}"),
            (self.freeze in ("none", "backbone"), f"freeze must be 'none' or 'backbone', got {self.freeze!r}"),
            (self.num_classes >= 1, f"num_classes must be >= 1, got {self.num_classes}"),
            (self.clip_frames >= 1, f"clip_frames must be >= 1, got {self.clip_frames}"),
            (self.stride >= 1, f"stride must be >= 1, got {self.stride}"),
            (self.size >= 1, f"size must be >= 1, got {self.size}"),
            (self.synthetic_videos >= 1, f"synthetic_videos must be >= 1, got {self.synthetic_videos}"),
            (self.synthetic_clips >= 1, f"synthetic_clips must be >= 1, got {self.synthetic_clips}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.stage_epochs >= 1, f"stage_epochs must be >= 1, got {self.stage_epochs}"),
            (all(k >= 1 for k in self.progressive), f"progressive clip counts must be >= 1, got {self.progressive}"),
            (self.optimizer in ("adamw", "sgd"), f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}"),
            (finite(self.lr) and self.lr > 0, f"lr must be a finite number > 0, got {self.lr}"),
            (finite(self.min_lr) and 0 <= self.min_lr <= self.lr, f"min_lr must be in [0, lr={self.lr}], got {self.min_lr}"),
            (finite(self.momentum) and 0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (finite(self.weight_decay) and self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.clip_grad is None or (finite(self.clip_grad) and self.clip_grad >= 0),
             f"clip_grad must be >= 0 (0 or null: no clipping), got {self.clip_grad}"),
            (self.loss in ("ce", "bce", "eql"), f"loss must be 'ce', 'bce' or 'eql', got {self.loss!r}"),
            (self.loss_clips in ("all", "last"), f"loss_clips must be 'all' or 'last', got {self.loss_clips!r}"),
            (finite(self.label_smoothing) and 0 <= self.label_smoothing < 1,
             f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (finite(self.eql_lambda) and self.eql_lambda >= 0, f"eql_lambda must be >= 0, got {self.eql_lambda}"),
            (self.amp in ("auto", "bf16", "fp16", "off"), f"amp must be auto, bf16, fp16 or off, got {self.amp!r}"),
            (self.eval_every >= 0, f"eval_every must be >= 0 (0: never), got {self.eval_every}"),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
            (self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}"),
            (self.max_steps is None or self.max_steps >= 0, f"max_steps must be >= 0 (or null for all epochs), got {self.max_steps}"),
            (self.on_nan in ("stop", "skip"), f"on_nan must be 'stop' or 'skip', got {self.on_nan!r}"),
            (bool(self.out_dir), "out_dir must not be empty"),
        ]  # fmt: skip

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def load_config(name_or_path: str, overrides: Sequence[str] = (), *, presets: Mapping[str, TrainConfig]) -> TrainConfig:
    """A name in ``presets`` (a family's training recipes) or a JSON file of fields, then
    ``key=value`` overrides."""
    if name_or_path in presets:
        config = presets[name_or_path]
    elif os.path.isfile(name_or_path):
        try:
            with open(name_or_path, encoding="utf-8") as f:
                fields = json.load(f)
        except json.JSONDecodeError as err:
            raise LongvidError(f"{name_or_path}:{err.lineno}: invalid JSON ({err.msg})") from None
        config = _replace(TrainConfig(), {k: v for k, v in fields.items()}, name_or_path)
    else:
        known = ", ".join(sorted(presets))
        raise LongvidError(f"{name_or_path!r} is neither a preset ({known}) nor a config file")
    parsed = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise LongvidError(f"override {item!r} must look like key=value")
        parsed[key.strip().replace("-", "_")] = _parse_value(key.strip(), value.strip())
    return _replace(config, parsed, "overrides").validate()


def _replace(config: TrainConfig, fields: dict, where: str) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise LongvidError(f"{where}: unknown config field(s) {', '.join(unknown)}")
    hints = typing.get_type_hints(TrainConfig)
    converted = {k: _coerce(k, v, hints[k]) for k, v in fields.items()}
    return dataclasses.replace(config, **converted)


def _parse_value(key: str, text: str):
    """A CLI value: JSON when it parses (numbers, lists, null), else the raw string; ``1,2,3`` is a list."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if "," in text:
            return [_parse_value(key, part) for part in text.split(",")]
        return text


def _coerce(key: str, value, hint):
    """Check and convert ``value`` to the field type ``hint``."""
    args = typing.get_args(hint)
    if value is None and type(None) in args:
        return None
    base = next((a for a in args if a is not type(None)), hint) if args and typing.get_origin(hint) is not tuple else hint
    try:
        if typing.get_origin(base) is tuple:
            items = value if isinstance(value, (list, tuple)) else [value]
            return tuple(int(v) for v in items)
        if base is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "false", "0", "no"):
                return str(value).lower() in ("true", "1", "yes")
            raise ValueError
        if base is int and (isinstance(value, bool) or float(value) != int(float(value))):
            raise ValueError
        return base(value)
    except (TypeError, ValueError):
        raise LongvidError(f"config field {key} expects {getattr(base, '__name__', base)}, got {value!r}") from None
