"""Classification losses over streams, masked to the slots that hold a clip."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def equalization_loss(
    logits: torch.Tensor, labels: torch.Tensor, class_freq: torch.Tensor, threshold: float = 0.003
) -> torch.Tensor:
    """Softmax equalization loss (Tan et al., CVPR 2020), per sample ``(N,)``.

    Rare classes (frequency below ``threshold``) that are not the sample's label are
    left out of the softmax denominator, so frequent-class samples do not push
    rare-class logits down. logits ``(N, K)``, labels ``(N,)``, class_freq ``(K,)``
    (each class's share of training samples).
    """
    rare = (class_freq < threshold).to(logits.device)  # (K,)
    not_label = torch.ones_like(logits, dtype=torch.bool).scatter_(1, labels.view(-1, 1), False)
    ignored = rare.unsqueeze(0) & not_label  # (N, K)
    masked = logits.float().masked_fill(ignored, float("-inf"))
    return F.cross_entropy(masked, labels, reduction="none")


def head_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    kind: str,
    label_smoothing: float = 0.0,
    class_freq: torch.Tensor | None = None,
    eql_lambda: float = 0.003,
) -> torch.Tensor:
    """Per-sample loss ``(N,)`` of one head: ``ce`` (with label smoothing), ``bce``
    (multi-hot ``(N, K)`` targets, summed over classes / K) or ``eql``."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none").mean(dim=1)
    if kind == "eql":
        if class_freq is None:
            raise ValueError("the equalization loss needs the training class frequencies")
        return equalization_loss(logits, target, class_freq, eql_lambda)
    return F.cross_entropy(logits.float(), target, reduction="none", label_smoothing=label_smoothing)


def head_outputs(out, heads) -> dict[str, torch.Tensor]:
    """The model's logits for each target head: a single tensor (or a dict's ``logits``, as
    the anticipation head gives) is the only head's; other outputs (``frame_logits``) are left out."""
    heads = list(heads)
    if not isinstance(out, dict):
        if len(heads) != 1:
            raise ValueError(f"the model gives one output but the data has heads {sorted(heads)}")
        return {heads[0]: out}
    if len(heads) == 1 and heads[0] not in out and "logits" in out:
        return {heads[0]: out["logits"]}
    missing = [h for h in heads if h not in out]
    if missing:
        raise ValueError(f"the model gives outputs {sorted(out)} but the data has heads {sorted(heads)}")
    return {h: out[h] for h in heads}


def stream_loss(out, targets: dict[str, torch.Tensor], valid: torch.Tensor, **options) -> torch.Tensor:
    """Mean loss over the valid slots, summed over heads.

    out: logits ``(B, K)`` or a dict head -> logits; targets: head -> ``(B,)`` or
    ``(B, K)``; valid: bool ``(B,)``. Outputs are matched to heads by :func:`head_outputs`.
    """
    out = head_outputs(out, targets)
    weights = valid.float() / valid.float().sum().clamp(min=1.0)  # (B,)
    total = 0.0
    for head, logits in out.items():
        freq = options.get("class_freq", {}) or {}
        per_sample = head_loss(
            logits, targets[head], options.get("kind", "ce"), options.get("label_smoothing", 0.0),
            freq.get(head), options.get("eql_lambda", 0.003),
        )  # fmt: skip
        total = total + (per_sample * weights).sum()
    return total
