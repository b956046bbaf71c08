"""Model checkpoints: our safetensors files and released MeMViT ``.pyth`` files.

- ``save_checkpoint(model, path)``: safetensors with the model's config in the metadata.
- ``load_model(path)``: rebuild the model from such a file.
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
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_model(path: str | os.PathLike):
    """Rebuild a model saved by ``save_checkpoint`` (config from the file) and load it."""
    from longvid.models.memvit import MeMViT, MeMViTConfig

    meta = read_metadata(path)
    if meta.get("architecture") != "MeMViT" or "config" not in meta:
        raise CheckpointError(f"{path}: no MeMViT config in the file's metadata; build the model and use load_checkpoint")
    raw = json.loads(meta["config"])
    config = MeMViTConfig(**{k: _tuplify(v) for k, v in raw.items()})
    model = MeMViT(config)
    load_checkpoint(model, path)
    return model


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file or of a torch checkpoint (``model_state`` if present)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    if not path.endswith(_TORCH_SUFFIXES):
        raise CheckpointError(f"{path}: unknown checkpoint type (expected .safetensors or {', '.join(_TORCH_SUFFIXES)})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors carry long messages; keep the first line
        raise CheckpointError(f"{path}: cannot read as a weights-only torch checkpoint: {str(err).splitlines()[0]}") from None
    if isinstance(obj, dict):
        for key in ("model_state", "model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: no state dict of tensors found (looked for 'model_state', 'model', 'state_dict')")
    return {k.removeprefix("module."): v for k, v in obj.items()}


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
    source = read_state_dict(path)
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
        raise CheckpointError(f"{os.fspath(path)} does not fit the model: {report}")
    model.load_state_dict(matched, strict=False)
    return report
