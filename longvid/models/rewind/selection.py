"""ReWind's dynamic frame selection (DFS): instruction relevance top-L, then DPC-KNN.

Stage 1 scores every frame held in the memory against the pooled instruction
encoding and keeps the ``L`` most relevant frames; stage 2 clusters those ``L``
frames with density peaks (DPC-KNN) and keeps the ``K_c`` frames with the largest
``density * distance-indicator``: frames that are both typical of a group and far
from any denser frame, i.e. one representative per distinct moment.

Every function returns frame indices in temporal (ascending) order, and breaks
score ties towards the lower (earlier) index, so results are deterministic.
:func:`sample_top_indices` is the training-time counterpart of the top-``L`` choice: a
draw from the relevance softmax whose log-probability carries the gradient.
"""

from __future__ import annotations

import math

import torch

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


def select_frames(
    frame_tokens: torch.Tensor,
    query: torch.Tensor,
    top_l: int,
    num_select: int,
    k: int,
    cluster_tokens: torch.Tensor | None = None,
    dpc: bool = True,
) -> torch.Tensor:
    """Dynamic frame selection: the ``top_l`` frames most relevant to ``query``, then DPC-KNN.

    Args:
        frame_tokens: ``(N, n_w, D)``, keys for the relevance scores.
        query: ``(D,)``, the pooled instruction encoding (in the keys' space).
        top_l, num_select, k: ``L``, ``K_c`` and the DPC-KNN neighbours.
        cluster_tokens: ``(N, n_w, D')`` the memory tokens whose per-frame mean is the
            frame vector for DPC-KNN (default: ``frame_tokens``).
        dpc: False keeps the ``num_select`` most relevant frames instead (an ablation).

    Returns a LongTensor ``(min(num_select, top_l, N),)`` of frame indices, ascending.
    """
    scores = relevance_scores(frame_tokens, query)  # (N,)
    if not dpc:
        return top_indices(scores, min(num_select, top_l))
    candidates = top_indices(scores, top_l)  # (L,)
    tokens = frame_tokens if cluster_tokens is None else cluster_tokens
    vectors = tokens[candidates].mean(dim=1)  # (L, D')
    return candidates[dpc_knn(vectors, num_select, k)]
