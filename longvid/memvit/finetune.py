"""Fine-tuning: start a run from another checkpoint's backbone (``init_from``), optionally
training the heads only (``freeze=backbone``), as the MeMViT paper fine-tunes every task
from Kinetics pre-training and anticipation from classification."""

from __future__ import annotations

import os

from torch import Tensor, nn

from longvid.core.checkpoints import CheckpointError, load_tensors, read_state_dict
from longvid.engine import checkpoint as ckpt
from longvid.memvit.run_config import MeMViTRunConfig

HEAD_PREFIXES = ("head.", "box_blocks.")  # task-specific modules: re-initialized when they do not fit, trained under freeze=backbone


def is_head(name: str) -> bool:
    return name.startswith(HEAD_PREFIXES)


def prepare(model: nn.Module, config: MeMViTRunConfig) -> list[str]:
    """Apply ``init_from`` and ``freeze`` to a freshly built model; returns one line for each."""
    notes = []
    if config.init_from:
        notes.append(init_from(model, config.init_from))
    if config.freeze == "backbone":
        notes.append(freeze_backbone(model))
    return notes


def read_weights(path: str) -> dict[str, Tensor]:
    """Model tensors of an official ``.pyth`` / ``.pt``, a model ``.safetensors``, a training
    checkpoint (``step_*.safetensors`` or its base path) or a run folder (its latest checkpoint)."""
    base = path.removesuffix(".safetensors").removesuffix(".json")
    if os.path.isdir(path) or (os.path.isfile(base + ".json") and os.path.isfile(base + ".safetensors")):
        tensors, _, _ = ckpt.load_latest(path if os.path.isdir(path) else base)
        return {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    return read_state_dict(path)


def init_from(model: nn.Module, path: str) -> str:
    """Load every tensor of ``path`` that fits ``model``; head tensors of another shape (or
    absent) keep their fresh initialization. A backbone tensor of another shape is an error.
    Returns one line saying what was loaded and what was re-initialized."""
    tensors = read_weights(path)
    heads = {k: v for k, v in tensors.items() if is_head(k)}
    target = model.state_dict()
    fitting_heads = {k: v for k, v in heads.items() if k in target and v.shape == target[k].shape}
    report = load_tensors(model, {**{k: v for k, v in tensors.items() if not is_head(k)}, **fitting_heads}, path, strict=False)
    if report.mismatched:
        raise CheckpointError(f"init_from {path}: backbone tensors of another shape: {', '.join(report.mismatched[:4])}")
    reinit = [f"{k} {tuple(heads[k].shape)}->{tuple(target[k].shape)}" for k in heads if k in target and k not in fitting_heads]
    reinit += [f"{k} (not in the checkpoint)" for k in report.missing if is_head(k) and k not in heads]
    backbone_new = [k for k in report.missing if not is_head(k)]
    line = f"init_from {path}: loaded {len(report.loaded)} tensors"
    line += f"; re-initialized heads: {', '.join(sorted(reinit))}" if reinit else "; every head fits"
    if report.adapted:
        line += f"; position tables adapted: {', '.join(report.adapted)}"
    if backbone_new:
        line += f"; {len(backbone_new)} backbone tensors not in the checkpoint (fresh): {', '.join(backbone_new[:4])}"
    dropped = len(report.unexpected) + len([k for k in heads if k not in target])
    if dropped:
        line += f"; {dropped} checkpoint tensors the model has no place for"
    if not report.loaded:
        raise CheckpointError(f"init_from {path}: no tensor fits the model (another architecture?)")
    return line


def freeze_backbone(model: nn.Module) -> str:
    """Train the heads only; returns what stays trainable."""
    trainable = 0
    for name, param in model.named_parameters():
        param.requires_grad_(is_head(name))
        trainable += param.numel() if is_head(name) else 0
    if not trainable:
        raise CheckpointError("freeze=backbone: the model has no head parameters to train")
    return f"freeze=backbone: training the heads only ({trainable:,} parameters)"
