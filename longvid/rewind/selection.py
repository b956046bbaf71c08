"""Which stored frames ReWind's LLM reads: dynamic frame selection (DFS) and other selectors.

DFS scores every frame held in the memory against the pooled instruction encoding and
keeps the ``L`` most relevant frames; then it clusters those ``L`` frames with density
peaks (DPC-KNN) and keeps the ``K_c`` frames with the largest
``density * distance-indicator``: frames that are both typical of a group and far from
any denser frame, i.e. one representative per distinct moment.

With ``cut`` (:func:`relevance_cut`, not in the paper; ``RewindConfig.relevance_cut``), the
``L`` candidates are first cut where their sorted relevance drops most (keeping at least
``K_c``): DPC-KNN then spreads the ``K_c`` frames over the relevant moments only, instead of
spending one on an irrelevant frame when a single moment is relevant.

A selector is passed to the model (``ReWind(..., selector=...)``, or ``selector=`` of
``answer``/``score``/...): called with one :class:`Candidates` per stream, it returns
each stream's frame indices. :class:`DFS` is the paper's; :class:`UniformSelector`,
:class:`RandomSelector`, :class:`OracleSelector` (frames inside annotated intervals,
given as an argument) and :class:`NoSelector` are baselines and bounds. A selector keeps
no record of what it chose; the random ones draw from the ``torch.Generator`` they are
given.

Every function returns frame indices in temporal (ascending) order, and breaks
score ties towards the lower (earlier) index, so results are deterministic.
:func:`sample_top_indices` is the training-time counterpart of the top-``L`` choice: a
draw from the relevance softmax whose log-probability carries the gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from longvid.errors import LongvidError


def top_indices(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` largest ``scores (N,)``, ties to the lower index, ascending.

    Returns a LongTensor ``(min(count, N),)``.
    """
    if count < 0:
        raise LongvidError(f"cannot select {count} frames: the count must be >= 0")
    order = torch.sort(scores, descending=True, stable=True).indices  # stable: ties keep index order
    return torch.sort(order[:count]).values


def sample_top_indices(scores: torch.Tensor, count: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``count`` of ``scores (N,)`` without replacement: each draw picks frame ``i`` with
    probability ``softmax(scores)_i`` over the frames not drawn yet (Plackett-Luce), sampled
    with the Gumbel-top-k trick.

    Returns the drawn indices ``(min(count, N),)`` ascending and the log-probability of the
    draw sequence, a differentiable function of ``scores`` (for score-function gradients).
    """
    if count < 0:
        raise LongvidError(f"cannot draw {count} frames: the count must be >= 0")
    count = min(count, scores.shape[0])
    uniform = torch.rand(scores.shape, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    gumbel = (-torch.log(-torch.log(uniform))).to(scores.device, scores.dtype)
    order = torch.topk(scores.detach() + gumbel, count).indices  # (count,) in draw order
    # Draw j has log-probability s_j - logsumexp over the frames not drawn before it.
    drawn = scores[order]  # (count,)
    log_prob = scores.new_zeros(())
    available = torch.ones_like(scores, dtype=torch.bool)
    for index, score in zip(order.tolist(), drawn):  # count <= L draws, each normalised over what is left
        log_prob = log_prob + score - torch.logsumexp(scores.masked_fill(~available, -math.inf), dim=0)
        available[index] = False
    return torch.sort(order).values, log_prob


def dpc_knn(features: torch.Tensor, num_select: int, k: int) -> torch.Tensor:
    """Density-peak clustering with k nearest neighbours: pick ``num_select`` frames.

    Args:
        features: ``(N, D)``, one vector per frame.
        num_select: how many frames to keep (all ``N`` when ``num_select >= N``).
        k: neighbours used for the density (at most ``N - 1`` are used).

    With Euclidean distances ``d_ij``:

    * density ``rho_i = exp(-mean of d_ij^2 over the k nearest other frames)``;
    * distance indicator ``delta_i = min d_ij over j with rho_j > rho_i``, or
      ``max_j d_ij`` for a frame that no frame is strictly denser than;
    * score ``rho_i * delta_i``; the ``num_select`` highest scores are kept, ties to
      the lower index.

    Returns a LongTensor ``(min(num_select, N),)`` of frame indices in temporal order.
    """
    if features.dim() != 2:
        raise LongvidError(f"dpc_knn takes one vector per frame (N, D), got shape {tuple(features.shape)}")
    if k < 1:
        raise LongvidError(f"dpc_knn needs k >= 1 neighbours, got {k}")
    num_frames = features.shape[0]
    if num_select >= num_frames:
        return torch.arange(num_frames, device=features.device)
    # Exact pairwise differences (no matmul expansion), so d_ii == 0 and duplicates tie exactly.
    dist = torch.cdist(features[None], features[None], compute_mode="donot_use_mm_for_euclid_dist")[0]  # (N, N)
    neighbours = min(k, num_frames - 1)
    others = dist + torch.diag(torch.full((num_frames,), math.inf, dtype=dist.dtype, device=dist.device))
    nearest = torch.topk(others, neighbours, dim=1, largest=False, sorted=True).values  # (N, k)
    density = torch.exp(-(nearest**2).mean(dim=1))  # (N,)
    denser = density[None, :] > density[:, None]  # (N, N): [i, j] = rho_j > rho_i
    to_denser = torch.where(denser, dist, torch.full_like(dist, math.inf)).min(dim=1).values  # (N,)
    indicator = torch.where(denser.any(dim=1), to_denser, dist.max(dim=1).values)  # (N,)
    return top_indices(density * indicator, num_select)


def relevance_scores(frame_tokens: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Attention scores of an instruction against each frame's memory tokens.

    Args:
        frame_tokens: ``(N, n_w, D)``, the memory tokens of ``N`` frames (keys).
        query: ``(D,)``, the pooled instruction encoding.

    Returns ``(N,)``: each frame's mean over its tokens of ``<query, token> / sqrt(D)``.
    """
    if frame_tokens.dim() != 3 or query.shape != frame_tokens.shape[-1:]:
        raise LongvidError(
            f"relevance needs frame tokens (N, n_w, D) and a query (D,), got {tuple(frame_tokens.shape)} "
            f"and {tuple(query.shape)}"
        )
    logits = frame_tokens @ query / math.sqrt(query.shape[-1])  # (N, n_w)
    return logits.mean(dim=1)


def relevance_cut(relevance: Tensor, top_l: int, min_keep: int) -> Tensor:
    """The ``n`` most relevant frames, ``n`` in ``min_keep .. top_l``, cut where relevance drops most.

    With the relevances sorted ``r_1 >= r_2 >= ...`` (ties to the lower index), ``n`` is the
    rank with the largest drop ``r_n - r_{n+1}`` (the smallest such ``n`` on ties). Relevances
    are the logits of the relevance softmax, so a drop is a log ratio of probabilities: a
    frame is kept when no larger gap separates it from the most relevant one. When no ``n``
    in the range has a frame after it (``min_keep > min(top_l, N - 1)``) the
    ``min(top_l, N)`` most relevant frames are kept, as without the cut.

    Args:
        relevance: ``(N,)`` each frame's relevance.
    Returns a LongTensor ``(n,)`` of frame indices, ascending.
    """
    min_keep = max(min_keep, 1)
    order = torch.sort(relevance, descending=True, stable=True).indices  # (N,)
    last = min(top_l, relevance.shape[0] - 1)  # the largest n with a frame after it
    if min_keep > last:
        return torch.sort(order[: min(top_l, relevance.shape[0])]).values
    ranked = relevance[order].double()
    drops = ranked[min_keep - 1 : last] - ranked[min_keep : last + 1]  # drop after rank n = min_keep .. last
    count = min_keep + int(torch.argmax(drops))  # argmax: first of equal drops
    return torch.sort(order[:count]).values


def select_frames(relevance: Tensor, vectors: Tensor, top_l: int, num_select: int, k: int, dpc: bool = True,
                  cut: bool = False) -> Tensor:
    """Dynamic frame selection: the ``top_l`` frames most relevant to the instruction, then DPC-KNN.

    Args:
        relevance: ``(N,)`` each frame's relevance (:func:`relevance_scores`).
        vectors: ``(N, D)`` each frame's vector for DPC-KNN (its mean memory token).
        top_l, num_select, k: ``L``, ``K_c`` and the DPC-KNN neighbours.
        dpc: False keeps the ``num_select`` most relevant frames instead (an ablation).
        cut: the candidates are the top ``L`` cut at their largest relevance drop
            (:func:`relevance_cut`, at least ``num_select``) before DPC-KNN.

    Returns a LongTensor ``(min(num_select, top_l, N),)`` of frame indices, ascending.
    """
    if not dpc:
        return top_indices(relevance, min(num_select, top_l))
    candidates = relevance_cut(relevance, top_l, num_select) if cut else top_indices(relevance, top_l)  # (<= L,)
    return candidates[dpc_knn(vectors[candidates], num_select, k)]


def uniform_indices(total: int, count: int) -> Tensor:
    """``min(count, total)`` frame indices spread evenly over ``0 .. total - 1`` (both ends included)."""
    return torch.linspace(0, total - 1, min(count, total)).round().long()


# -- selectors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidates:
    """The frames one stream's selector chooses from: those in its memory (up to the question's time).

    times:     ``(n,)`` float64 seconds of each frame.
    relevance: ``(n,)`` each frame's DFS relevance to the question (detached).
    vectors:   ``(n, D)`` each frame's mean memory token (detached).
    """

    times: Tensor
    relevance: Tensor
    vectors: Tensor

    def __len__(self) -> int:
        return self.times.shape[0]


@dataclass(frozen=True)
class DFS:
    """Dynamic frame selection (top-``L`` relevance, then ``K_c`` by DPC-KNN; ``dpc=False``: the
    ``K_c`` most relevant instead; ``cut``: the top ``L`` cut at their largest relevance drop
    first, :func:`relevance_cut`). ``learned``: its choice follows the DFS projections, which
    ``ReWind.answer_loss(policy_weight=...)`` trains."""

    top_l: int
    num_select: int
    k: int
    dpc: bool = True
    cut: bool = False
    learned = True

    def __call__(self, candidates: Sequence[Candidates]) -> list[Tensor]:
        return [select_frames(c.relevance, c.vectors, self.top_l, self.num_select, self.k, self.dpc, self.cut)
                for c in candidates]


@dataclass(frozen=True)
class UniformSelector:
    """``num_select`` frames spread evenly over each stream's frames."""

    num_select: int
    learned = False

    def __call__(self, candidates: Sequence[Candidates]) -> list[Tensor]:
        return [uniform_indices(len(c), self.num_select) for c in candidates]


@dataclass(frozen=True)
class RandomSelector:
    """``num_select`` frames drawn uniformly without replacement from ``generator``."""

    num_select: int
    generator: torch.Generator
    learned = False

    def __call__(self, candidates: Sequence[Candidates]) -> list[Tensor]:
        return [_first_sorted(torch.randperm(len(c), generator=self.generator), self.num_select) for c in candidates]


@dataclass(frozen=True)
class OracleSelector:
    """``num_select`` frames inside each stream's annotated ``intervals`` (a list of ``(start, end)``
    seconds per stream, end excluded): first one frame of each interval, then a second of each, ...
    (so ``num_select`` frames cover as many intervals as they can), in random order from
    ``generator``, topped up with random other frames when fewer frames are inside: the best a
    selector could do, given the annotations of what a question needs."""

    num_select: int
    intervals: Sequence[Sequence[tuple[float, float]]]
    generator: torch.Generator
    learned = False

    def __call__(self, candidates: Sequence[Candidates]) -> list[Tensor]:
        if len(self.intervals) != len(candidates):
            raise LongvidError(f"the oracle has annotations for {len(self.intervals)} streams, not {len(candidates)}")
        chosen = []
        for c, intervals in zip(candidates, self.intervals):
            order = torch.randperm(len(c), generator=self.generator)  # (n,) random priority
            rank = torch.full((len(c),), len(c))  # (n,) a frame's place among its interval's frames; n: outside all
            for interval in intervals:
                inside = order[inside_intervals(c.times, [interval])[order]]  # this interval's frames, random order
                rank[inside] = torch.minimum(rank[inside], torch.arange(len(inside)))
            chosen.append(_first_sorted(order[torch.argsort(rank[order], stable=True)], self.num_select))
        return chosen


@dataclass(frozen=True)
class NoSelector:
    """No frames: the LLM reads the memory tokens only (ReWind without DFS)."""

    learned = False

    def __call__(self, candidates: Sequence[Candidates]) -> list[Tensor]:
        return [torch.zeros(0, dtype=torch.long) for _ in candidates]


def inside_intervals(times: Tensor, intervals: Sequence[tuple[float, float]]) -> Tensor:
    """``(n,)`` bool: which of ``times (n,)`` lie in some ``[start, end)`` of ``intervals``."""
    inside = torch.zeros(times.shape, dtype=torch.bool)
    for start, end in intervals:
        inside |= (times.cpu() >= start) & (times.cpu() < end)
    return inside


def _first_sorted(order: Tensor, count: int) -> Tensor:
    """The first ``count`` of ``order``, ascending."""
    return torch.sort(order[:count]).values
