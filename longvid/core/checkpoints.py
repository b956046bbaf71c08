"""Model checkpoints: our safetensors files and released MeMViT ``.pyth`` files.

- ``save_checkpoint(model, path)``: safetensors with the model's config in the metadata.
  (:func:`longvid.memvit.model.load_model` rebuilds a MeMViT from such a file.)
- ``load_checkpoint(model, path)``: load weights into an existing model from a
  ``.safetensors`` file (ours) or an official PySlowFast ``.pyth`` (``model_state``,
  read with ``torch.load(..., weights_only=True)``). Our parameter names *are* the
  released names, so the mapping is the identity (a ``module.`` prefix is dropped).
  As the official loader does, shorter temporal tables (``rel_pos_t``, ``rel_pos_mem_t``)
  are padded by repeating their last row and spatial tables (``rel_pos*_h/_w``) are
  linearly resized. Missing, unexpected and mismatched keys are reported; with
  ``strict=True`` (default) any of them raises ``CheckpointError``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longvid.errors import LongvidError

_TORCH_SUFFIXES = (".pyth", ".pth", ".pt", ".ckpt", ".bin")


class CheckpointError(LongvidError):
    """A checkpoint file that cannot be read or does not fit the model."""


@dataclass
class LoadReport:
    """What ``load_checkpoint`` did. Names are state-dict keys."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[str] = field(default_factory=list)  # "name: file shape -> model shape"
    adapted: list[str] = field(default_factory=list)  # tables padded or resized

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        for title, names in (("missing", self.missing), ("unexpected", self.unexpected), ("shape mismatch", self.mismatched), ("adapted", self.adapted)):
            if names:
                shown = ", ".join(names[:8]) + (f", ... ({len(names) - 8} more)" if len(names) > 8 else "")
                lines.append(f"{title} ({len(names)}): {shown}")
        return "; ".join(lines)


def save_checkpoint(model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write the model's weights and config (JSON in the safetensors metadata)."""
    from safetensors.torch import save_file

    meta = {"format": "longvid", "architecture": type(model).__name__}
    config = getattr(model, "config", None)
    if config is not None and dataclasses.is_dataclass(config):
        meta["config"] = json.dumps(dataclasses.asdict(config))
    meta.update(metadata or {})
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, os.fspath(path), metadata=meta)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file (``CheckpointError`` if unreadable)."""
    from safetensors import safe_open

    path = _existing(path)
    with _readable_safetensors(path):
        with safe_open(path, framework="pt") as f:
            return dict(f.metadata() or {})


def read_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file (``CheckpointError`` if missing, truncated or not one)."""
    from safetensors.torch import load_file

    path = _existing(path)
    with _readable_safetensors(path):
        return load_file(path, device=device)


def _existing(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


@contextmanager
def _readable_safetensors(path: str):
    """Turn safetensors' errors about a damaged file into one-line ``CheckpointError``s naming it."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path}: not a readable safetensors file, truncated or damaged? ({reason})") from None


def stored_config(cls, text: str, path: str):
    """The dataclass ``cls`` from the JSON object ``text`` stored in the file ``path``:
    unknown keys, values of the wrong type, and values ``cls`` refuses are
    ``CheckpointError``s naming the file."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: the stored config is not valid JSON ({err.msg})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: the stored config is not a JSON object")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise CheckpointError(f"{path}: the stored config has unknown key(s) {', '.join(unknown)} "
                              f"(written by another version of longvid?)")
    values = {key: _tuplify(value) for key, value in raw.items()}
    for key, value in values.items():
        if not _has_type(value, hints[key]):
            raise CheckpointError(f"{path}: the stored config's {key} is {value!r}, not {_type_name(hints[key])}")
    try:
        return cls(**values)
    except LongvidError as err:
        raise CheckpointError(f"{path}: the stored config is not valid: {err}") from None


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value


def _has_type(value, hint) -> bool:
    """Whether a JSON value (lists made tuples) fits the annotation ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in args)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_has_type(v, args[0]) for v in value)
        return len(value) == len(args) and all(_has_type(v, a) for v, a in zip(value, args))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint)


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file or of a torch checkpoint (``model_state``,
    ``model`` or ``state_dict`` if present); ``CheckpointError`` when it cannot be read."""
    path = _existing(path)
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if not path.endswith(_TORCH_SUFFIXES):
        raise CheckpointError(f"{path}: unknown checkpoint type (expected .safetensors or {', '.join(_TORCH_SUFFIXES)})")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol before failing on a damaged file
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling failure: a damaged file, or objects other than tensors
        raise CheckpointError(f"{path}: cannot read as a weights-only torch checkpoint, damaged or not only "
                              f"tensors? ({_unpickling_reason(err)})") from None
    if isinstance(obj, dict):
        for key in ("model_state", "model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: no state dict of tensors found (looked for 'model_state', 'model', 'state_dict')")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _unpickling_reason(err: Exception) -> str:
    """The useful part of a ``torch.load`` error, on one line (torch wraps the unpickler's
    reason in a paragraph about ``weights_only``)."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    reason = text.split(marker, 1)[1].strip().split("\n\n")[0] if marker in text else (text.splitlines() or [""])[0]
    reason = " ".join(reason.split()) or type(err).__name__
    return reason if len(reason) <= 160 else reason[:157] + "..."


def adapt_tables(name: str, tensor: Tensor, target: Tensor) -> Tensor | None:
    """Released-loader table adaptation, or None when ``name`` is not an adaptable table."""
    leaf = name.rsplit(".", 1)[-1]
    if tensor.dim() != 2 or target.dim() != 2 or tensor.shape[1] != target.shape[1]:
        return None
    if leaf in ("rel_pos_t", "rel_pos_mem_t") and tensor.shape[0] < target.shape[0]:
        pad = tensor[-1:].expand(target.shape[0] - tensor.shape[0], -1)
        return torch.cat([tensor, pad], dim=0)
    if leaf in ("rel_pos_h", "rel_pos_w", "rel_pos_mem_h", "rel_pos_mem_w"):
        return F.interpolate(tensor.t()[None].float(), size=target.shape[0], mode="linear")[0].t().to(tensor.dtype)
    return None


def load_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> LoadReport:
    """Load weights from ``path`` into ``model`` and return a ``LoadReport``.

    With ``strict=True`` missing, unexpected or mismatched keys raise ``CheckpointError``
    (nothing is loaded); with ``strict=False`` the matching tensors are loaded.
    """
    return load_tensors(model, read_state_dict(path), os.fspath(path), strict)


def load_tensors(model: nn.Module, source: dict[str, Tensor], origin: str, strict: bool = True) -> LoadReport:
    """:func:`load_checkpoint` for tensors already read (``origin``: the file they came
    from, for messages): the same table adaptation, report and ``CheckpointError``."""
    target = model.state_dict()
    report = LoadReport()
    matched = {}
    for name, tensor in source.items():
        if name not in target:
            report.unexpected.append(name)
            continue
        want = target[name]
        if tensor.shape != want.shape:
            adapted = adapt_tables(name, tensor, want)
            if adapted is None:
                report.mismatched.append(f"{name}: {tuple(tensor.shape)} -> {tuple(want.shape)}")
                continue
            report.adapted.append(f"{name}: {tuple(tensor.shape)} -> {tuple(want.shape)}")
            tensor = adapted
        matched[name] = tensor
    report.missing = [name for name in target if name not in source]
    report.loaded = list(matched)
    if strict and not report.ok:
        raise CheckpointError(f"{origin} does not fit the model: {report}")
    model.load_state_dict(matched, strict=False)
    return report
