"""ReWind's temporal grounding: start/end pointers over the frames in the memory.

:class:`GroundingHead` points at the first and last frame of a moment from the LLM's
hidden states; :func:`best_span` turns the pointer logits into a frame span,
:func:`span_seconds` into seconds, :func:`span_scores` scores given spans (DiDeMo's 21
proposals), and :func:`frames_in` gives the training targets.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class GroundingHead(nn.Module):
    """Start/end pointers over frames: two queries from a summary state, one key per frame.

    ``forward(frames (B, n, E), final (B, E), valid (B, n) bool) -> logits (B, 2, n)``
    (``-inf`` at invalid frames); row 0 points at the first frame of the moment, row 1 at its last.
    """

    def __init__(self, dim: int, head_dim: int):
        super().__init__()
        self.query = nn.Linear(dim, 2 * head_dim)
        self.key = nn.Linear(dim, head_dim)
        self.head_dim = head_dim

    def forward(self, frames: torch.Tensor, final: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        queries = self.query(final).view(final.shape[0], 2, self.head_dim)  # (B, 2, d)
        logits = queries @ self.key(frames).transpose(1, 2) / math.sqrt(self.head_dim)  # (B, 2, n)
        return logits.masked_fill(~valid[:, None, :], float("-inf"))


def pointer_loss(logits: torch.Tensor, target_frames: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of start/end pointer ``logits (B, 2, n)`` against frame indices ``(B, 2)``."""
    return F.cross_entropy(logits.flatten(0, 1).float(), target_frames.flatten().to(logits.device))


def best_span(logits: torch.Tensor) -> tuple[int, int]:
    """The frame span ``(start, end)``, ``start <= end``, maximizing ``log p(start) + log p(end)``
    under pointer ``logits (2, n)``."""
    log_p = logits.float().log_softmax(-1)
    joint = (log_p[0][:, None] + log_p[1][None, :]).triu()  # (n, n); entries below the diagonal are 0
    joint = joint.masked_fill(torch.ones_like(joint, dtype=torch.bool).tril(-1), float("-inf"))
    flat = int(joint.flatten().argmax())
    return flat // joint.shape[1], flat % joint.shape[1]


def span_scores(logits: torch.Tensor, times: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """Scores ``(S,)`` of the time spans ``spans (S, 2)`` seconds under pointer ``logits (2, n)``
    over frames at ``times (n,)``: ``log p(start = first frame in the span) + log p(end = last
    frame in it)``, the quantity :func:`best_span` maximizes (so the best-scored span agrees with
    it; equal to ``start_logit + end_logit`` up to a constant). A frame is in ``[start, end)``
    when its time is; a span holding no frame (past a shorter video's end) scores ``-inf``."""
    log_p = logits.float().log_softmax(-1)  # (2, n)
    times = times.to(log_p.device, torch.float64)
    spans = spans.to(log_p.device, torch.float64)
    inside = (times[None, :] >= spans[:, :1]) & (times[None, :] < spans[:, 1:])  # (S, n)
    positions = torch.arange(len(times), device=log_p.device)
    first = torch.where(inside, positions, len(times)).min(1).values  # (S,)
    last = torch.where(inside, positions, -1).max(1).values
    found = inside.any(1)
    scores = log_p[0][first.clamp(max=len(times) - 1)] + log_p[1][last.clamp(min=0)]
    return torch.where(found, scores, torch.full_like(scores, float("-inf")))


def span_seconds(times: torch.Tensor, start: int, end: int) -> tuple[float, float]:
    """Seconds covered by frames ``start..end`` of frames at ``times (n,)``: half the frame
    spacing (1 s for a single frame) before the first and after the last, never before 0 (the
    end is cut to the video's duration where that is known: :func:`longvid.eval.metrics.clamp_intervals`)."""
    spacing = float(times[1] - times[0]) if len(times) > 1 else 1.0
    return max(0.0, float(times[start]) - spacing / 2), float(times[end]) + spacing / 2


def frames_in(times: torch.Tensor, interval: tuple[float, float]) -> tuple[int, int]:
    """First and last of the frames at ``times (n,)`` inside ``[start, end)`` (the nearest
    frame to the interval's centre when none is): pointer targets for grounding."""
    inside = ((times >= interval[0]) & (times < interval[1])).nonzero().flatten()
    if len(inside) == 0:
        centre = int((times - (interval[0] + interval[1]) / 2).abs().argmin())
        return centre, centre
    return int(inside[0]), int(inside[-1])
