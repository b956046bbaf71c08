"""The training engine's configuration: one frozen dataclass of the optimisation and run fields
the engine reads, and the loading of a family's run config (a subclass) from its named recipes or a
JSON file with ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass
from typing import Mapping, Sequence, TypeVar

from longvid.errors import LongvidError

Config = TypeVar("Config", bound="TrainConfig")


@dataclass(frozen=True)
class TrainConfig:
    """What the training engine reads: the optimizer and its schedule, AMP, the batch and epoch
    counts, logging, checkpoints and the run folder. A family's run config subclasses it with its
    task fields (MeMViT: :class:`~longvid.memvit.run_config.MeMViTRunConfig`); MA-LMM and ReWind
    build one for their optimisation."""

    batch_size: int = 4
    epochs: int = 5
    shuffle: bool = True
    optimizer: str = "adamw"  # "adamw" or "sgd" (with momentum)
    lr: float = 1e-3
    min_lr: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 0.05
    warmup_steps: int = 0
    clip_grad: float | None = 1.0  # max gradient norm; 0 or None: no clipping
    amp: str = "auto"  # "auto" (bf16/fp16 on CUDA, off on CPU), "bf16", "fp16", "off"
    seed: int = 0
    log_every: int = 10  # steps
    checkpoint_every: int = 100  # steps; a checkpoint is also written at the end of every epoch
    on_nan: str = "stop"  # a non-finite loss: "stop" the run (the last checkpoint stays good) or "skip" the step
    max_steps: int | None = None  # stop after this many steps (None: run all epochs)
    out_dir: str = "runs/longvid"

    def validate(self: Config) -> Config:
        """Raise :class:`LongvidError` naming the first bad field; returns self."""
        for ok, message in self._checks():
            if not ok:
                raise LongvidError(f"config: {message}")
        return self

    def _checks(self) -> list[tuple[bool, str]]:
        """(ok, message) per check, in order; a subclass appends its own."""
        finite = math.isfinite
        return [
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.optimizer in ("adamw", "sgd"), f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}"),
            (finite(self.lr) and self.lr > 0, f"lr must be a finite number > 0, got {self.lr}"),
            (finite(self.min_lr) and 0 <= self.min_lr <= self.lr, f"min_lr must be in [0, lr={self.lr}], got {self.min_lr}"),
            (finite(self.momentum) and 0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (finite(self.weight_decay) and self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.clip_grad is None or (finite(self.clip_grad) and self.clip_grad >= 0),
             f"clip_grad must be >= 0 (0 or null: no clipping), got {self.clip_grad}"),
            (self.amp in ("auto", "bf16", "fp16", "off"), f"amp must be auto, bf16, fp16 or off, got {self.amp!r}"),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
            (self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}"),
            (self.max_steps is None or self.max_steps >= 0, f"max_steps must be >= 0 (or null for all epochs), got {self.max_steps}"),
            (self.on_nan in ("stop", "skip"), f"on_nan must be 'stop' or 'skip', got {self.on_nan!r}"),
            (bool(self.out_dir), "out_dir must not be empty"),
        ]  # fmt: skip

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def load_config(name_or_path: str, overrides: Sequence[str] = (), *, presets: Mapping[str, Config],
                config_class: type[Config]) -> Config:
    """A name in ``presets`` (a family's training recipes) or a JSON file of ``config_class``'s
    fields (the others keep its defaults), then ``key=value`` overrides; validated."""
    if name_or_path in presets:
        config = presets[name_or_path]
    elif os.path.isfile(name_or_path):
        try:
            with open(name_or_path, encoding="utf-8") as f:
                fields = json.load(f)
        except json.JSONDecodeError as err:
            raise LongvidError(f"{name_or_path}:{err.lineno}: invalid JSON ({err.msg})") from None
        config = _replace(config_class(), {k: v for k, v in fields.items()}, name_or_path)
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


def _replace(config: Config, fields: dict, where: str) -> Config:
    """``config`` with ``fields`` converted to the types of its class's fields."""
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise LongvidError(f"{where}: unknown config field(s) {', '.join(unknown)}")
    hints = typing.get_type_hints(type(config))
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
