"""Evaluation metrics for long-video tasks.

* classification: :func:`topk_accuracy`, :func:`class_mean_recall` (EPIC anticipation),
  :func:`epic_accuracy` (verb / noun / action, an action is right when both are);
* spatio-temporal detection: :func:`box_iou`, :func:`voc_average_precision`,
  :func:`frame_map` (AVA frame-level mAP at IoU 0.5);
* temporal grounding: :func:`temporal_iou`, :func:`grounding_metrics`
  (R@{0.3, 0.5, 0.7} and mIoU); DiDeMo's own protocol over its 21 fixed proposals,
  :func:`didemo_proposals`, :func:`didemo_metrics` (Rank@1, Rank@5, mIoU).

Every function takes plain tensors (or lists of small records for detection) and
returns Python floats, so results can be logged and reduced across ranks directly.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Hashable, Iterable, Sequence

import torch


# -- classification ---------------------------------------------------------------------


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Bool ``(N,)``: whether ``labels[i]`` is among the ``k`` highest ``scores[i]``.

    scores: ``(N, K)``; labels: ``(N,)`` class indices. Ties are broken by
    :func:`torch.topk` (lower index first on CPU).
    """
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices  # (N, k)
    return (top == labels.view(-1, 1)).any(dim=1)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy in percent: ``{"top1": ..., "top5": ...}``.

    scores ``(N, K)`` logits or probabilities; labels ``(N,)`` class indices.
    """
    _check_scores(scores, labels)
    return {f"top{k}": 100.0 * topk_correct(scores, labels, k).float().mean().item() for k in ks}


def class_mean_recall(
    scores: torch.Tensor, labels: torch.Tensor, k: int = 5, classes: Iterable[int] | None = None
) -> float:
    """Class-mean recall@k in percent (EPIC-Kitchens anticipation).

    For every class ``c`` (those in ``classes``, or every class present in
    ``labels``), recall@k is the fraction of the samples labelled ``c`` whose
    label is in the top ``k``; the result is the mean over classes, so rare
    classes weigh as much as frequent ones. Classes without samples are skipped.
    """
    _check_scores(scores, labels)
    hit = topk_correct(scores, labels, k).float()
    wanted = torch.unique(labels).tolist() if classes is None else list(classes)
    recalls = [hit[labels == c].mean().item() for c in wanted if bool((labels == c).any())]
    if not recalls:
        raise ValueError("class_mean_recall: no samples for the requested classes")
    return 100.0 * sum(recalls) / len(recalls)


def epic_accuracy(
    verb_scores: torch.Tensor,
    noun_scores: torch.Tensor,
    verb_labels: torch.Tensor,
    noun_labels: torch.Tensor,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """EPIC-Kitchens verb / noun / action top-k accuracy in percent.

    An action is the pair (verb, noun). Action scores are the outer product of
    the verb and noun softmax probabilities, ``(N, V * N_noun)``, so action top-1
    is right exactly when both the verb and the noun top-1 are right.
    Returns keys ``verb_top1, noun_top1, action_top1, verb_top5, ...``.
    """
    _check_scores(verb_scores, verb_labels)
    _check_scores(noun_scores, noun_labels)
    num_nouns = noun_scores.shape[1]
    action = verb_scores.softmax(1).unsqueeze(2) * noun_scores.softmax(1).unsqueeze(1)  # (N, V, Nn)
    action = action.flatten(1)  # (N, V * Nn)
    action_labels = verb_labels * num_nouns + noun_labels
    result = {}
    for k in ks:
        result[f"verb_top{k}"] = 100.0 * topk_correct(verb_scores, verb_labels, k).float().mean().item()
        result[f"noun_top{k}"] = 100.0 * topk_correct(noun_scores, noun_labels, k).float().mean().item()
        result[f"action_top{k}"] = 100.0 * topk_correct(action, action_labels, k).float().mean().item()
    return result


def _check_scores(scores: torch.Tensor, labels: torch.Tensor) -> None:
    if scores.dim() != 2 or labels.dim() != 1 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"need scores (N, K) and labels (N,), got {tuple(scores.shape)} and {tuple(labels.shape)}")
    if scores.shape[0] == 0:
        raise ValueError("no samples to evaluate")


# -- detection (AVA) --------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """One labelled box on one keyframe. ``box`` is ``(x1, y1, x2, y2)``, normalized
    to [0, 1] as in AVA; ``score`` is ignored for ground truth."""

    frame: Hashable  # e.g. (video_id, timestamp)
    box: tuple[float, float, float, float]
    label: int
    score: float = 1.0


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes ``a (N, 4)`` and ``b (M, 4)`` as ``(x1, y1, x2, y2)`` -> ``(N, M)``.

    Continuous coordinates (area = width * height, no +1), as the AVA evaluation.
    """
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)  # (N, M)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def voc_average_precision(is_true: torch.Tensor, num_positives: int) -> float:
    """VOC (2010+) average precision of detections sorted by descending score.

    is_true: bool ``(D,)``, whether each detection matched a new ground truth.
    Precision is made monotonically non-increasing, then summed over the recall
    steps (the area under the interpolated precision-recall curve).
    """
    if num_positives == 0:
        raise ValueError("average precision needs at least one ground truth")
    if is_true.numel() == 0:
        return 0.0
    tp = is_true.double().cumsum(0)
    fp = (~is_true).double().cumsum(0)
    recall = tp / num_positives
    precision = tp / (tp + fp)
    recall = torch.cat([torch.zeros(1, dtype=torch.float64), recall, torch.ones(1, dtype=torch.float64)])
    precision = torch.cat([torch.zeros(1, dtype=torch.float64), precision, torch.zeros(1, dtype=torch.float64)])
    precision = precision.flip(0).cummax(0).values.flip(0)  # monotone envelope
    steps = torch.nonzero(recall[1:] != recall[:-1]).flatten() + 1
    return float(((recall[steps] - recall[steps - 1]) * precision[steps]).sum())


def match_detections(detections: Sequence[Box], truths: Sequence[Box], iou_threshold: float = 0.5) -> torch.Tensor:
    """Greedy VOC matching for one class: bool ``(D,)`` over ``detections`` sorted by
    descending score. A detection is a true positive when its best-IoU ground truth
    on the same frame reaches ``iou_threshold`` and was not matched before."""
    by_frame: dict[Hashable, list[Box]] = defaultdict(list)
    for truth in truths:
        by_frame[truth.frame].append(truth)
    gt_boxes = {frame: torch.tensor([t.box for t in boxes], dtype=torch.float64) for frame, boxes in by_frame.items()}
    used = {frame: torch.zeros(len(boxes), dtype=torch.bool) for frame, boxes in by_frame.items()}
    is_true = torch.zeros(len(detections), dtype=torch.bool)
    for i, det in enumerate(detections):
        if det.frame not in gt_boxes:
            continue
        iou = box_iou(torch.tensor([det.box], dtype=torch.float64), gt_boxes[det.frame])[0]  # (G,)
        best = int(iou.argmax())
        if iou[best] >= iou_threshold and not used[det.frame][best]:
            used[det.frame][best] = True
            is_true[i] = True
    return is_true


def frame_map(
    detections: Sequence[Box], truths: Sequence[Box], iou_threshold: float = 0.5, classes: Iterable[int] | None = None
) -> dict[str, object]:
    """Frame-level mean average precision (AVA v2.2 protocol) in percent.

    AP is computed per class over all keyframes (VOC matching at ``iou_threshold``)
    and averaged over the classes that have ground truth (restricted to ``classes``
    when given, e.g. AVA's 60 evaluated actions).
    Returns ``{"mAP": float, "per_class": {label: AP}}``.
    """
    wanted = sorted({t.label for t in truths}) if classes is None else sorted(set(classes))
    per_class: dict[int, float] = {}
    for label in wanted:
        class_truths = [t for t in truths if t.label == label]
        if not class_truths:
            continue
        class_dets = sorted((d for d in detections if d.label == label), key=lambda d: -d.score)
        is_true = match_detections(class_dets, class_truths, iou_threshold)
        per_class[label] = 100.0 * voc_average_precision(is_true, len(class_truths))
    if not per_class:
        raise ValueError("frame_map: no ground truth boxes for the evaluated classes")
    return {"mAP": sum(per_class.values()) / len(per_class), "per_class": per_class}


# -- temporal grounding -----------------------------------------------------------------


def clamp_intervals(intervals: torch.Tensor, durations: torch.Tensor) -> torch.Tensor:
    """Time intervals ``(N, 2)`` cut to their video, ``[0, durations (N,)]`` seconds, as the
    grounding references do before scoring (a start past the end becomes the end: an empty interval)."""
    if intervals.dim() != 2 or intervals.shape[1] != 2 or durations.shape != intervals.shape[:1]:
        raise ValueError(f"need intervals (N, 2) and durations (N,), got {tuple(intervals.shape)} and {tuple(durations.shape)}")
    top = durations.to(intervals.dtype)[:, None]
    return torch.minimum(intervals.clamp(min=0), top)


def temporal_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of time intervals ``pred (N, 2)`` and ``target (N, 2)`` as ``(start, end)`` -> ``(N,)``.

    Reversed predicted intervals count as empty (IoU 0).
    """
    if pred.shape != target.shape or pred.dim() != 2 or pred.shape[1] != 2:
        raise ValueError(f"need pred and target (N, 2), got {tuple(pred.shape)} and {tuple(target.shape)}")
    pred, target = pred.double(), target.double()
    inter = (torch.minimum(pred[:, 1], target[:, 1]) - torch.maximum(pred[:, 0], target[:, 0])).clamp(min=0)
    union = (pred[:, 1] - pred[:, 0]).clamp(min=0) + (target[:, 1] - target[:, 0]) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def grounding_metrics(
    pred: torch.Tensor, target: torch.Tensor, thresholds: Sequence[float] = (0.3, 0.5, 0.7)
) -> dict[str, float]:
    """Temporal grounding in percent: ``R@t`` (share of IoU >= t) for each threshold, and ``mIoU``."""
    iou = temporal_iou(pred, target)
    if iou.numel() == 0:
        raise ValueError("no samples to evaluate")
    result = {f"R@{t:g}": 100.0 * (iou >= t).double().mean().item() for t in thresholds}
    result["mIoU"] = 100.0 * iou.mean().item()
    return result


# -- DiDeMo (Hendricks et al., ICCV 2017) -------------------------------------------------
#
# The data set's own evaluation (github.com/LisaAnne/LocalizingMoments, ``utils/eval.py``,
# ``eval_predictions``): a video is cut into 5-second segments 0..5; a moment is a pair
# ``(first, last)`` of segment indices, both included, so there are 21 proposals (6 single
# segments and 15 longer contiguous spans). A prediction is the 21 proposals ranked, best
# first; every annotator's ``times`` pair (usually 4) is scored against it:
#   rank(annotator) = 1 + the position of the annotator's pair in the ranking,
#   iou(annotator)  = IoU of the top proposal and the pair, in segments: (inter + 1) / (union + 1)
#                     with inclusive indices, i.e. ``max(0, min(e1, e2) + 1 - max(s1, s2)) /
#                     (max(e1, e2) + 1 - min(s1, s2))``;
# a query's rank is the mean of its 3 best (smallest) annotator ranks and its IoU the mean of its
# 3 best (largest) IoUs: the annotator who disagrees most is left out, so with 4 annotators a
# top-1 proposal counts for Rank@1 only when it is the moment of 3 of them. Rank@k is the share of
# queries whose mean rank is <= k; mIoU the mean of the query IoUs. Queries with fewer than 3
# annotators use all of theirs (numpy's ``sort(x)[:3]`` there).

DIDEMO_SEGMENTS = 6


def didemo_proposals(segments: int = DIDEMO_SEGMENTS) -> list[tuple[int, int]]:
    """The ``(first, last)`` segment pairs of DiDeMo's proposals, in the reference's order: the
    single segments, then spans of 2, 3, ... segments (21 for 6 segments)."""
    return [(first, first + length - 1) for length in range(1, segments + 1) for first in range(segments - length + 1)]


def didemo_iou(pred: tuple[int, int], truth: tuple[int, int]) -> float:
    """IoU of two inclusive segment spans ``(first, last)`` (the reference's ``iou``)."""
    inter = max(0, min(pred[1], truth[1]) + 1 - max(pred[0], truth[0]))
    union = max(pred[1], truth[1]) + 1 - min(pred[0], truth[0])
    return inter / union


def didemo_metrics(rankings, times: Sequence[Sequence[Sequence[int]]], ks: Sequence[int] = (1, 5),
                   keep: int = 3) -> dict[str, float]:
    """DiDeMo's Rank@1, Rank@5 and mIoU in percent (the protocol above), for all queries at once.

    rankings: ``(Q, P, 2)`` (a tensor or nested lists): per query the proposals ``(first, last)``
        best first (all 21, or at least every annotator's pair);
    times: per query, each annotator's ``(first, last)`` (queries may have different counts).
    keep: how many of the best annotator scores are averaged (the reference: 3).
    Returns ``{"Rank@1": ..., "Rank@5": ..., "mIoU": ...}``.
    """
    ranked = torch.as_tensor(rankings, dtype=torch.long)
    if ranked.dim() != 3 or ranked.shape[2] != 2 or ranked.shape[1] == 0:
        raise ValueError(f"need rankings (Q, P, 2) of segment pairs, got {tuple(ranked.shape)}")
    if ranked.shape[0] != len(times):
        raise ValueError(f"need one ranking per query: {ranked.shape[0]} rankings for {len(times)} queries")
    if ranked.shape[0] == 0:
        raise ValueError("no samples to evaluate")
    counts = torch.tensor([len(t) for t in times])  # (Q,) annotators per query
    if bool((counts == 0).any()):
        raise ValueError(f"query {int((counts == 0).nonzero()[0])}: no annotator times")
    truth = torch.full((len(times), int(counts.max()), 2), -1, dtype=torch.long)  # (Q, A, 2); -1: no annotator
    for q, pairs in enumerate(times):
        truth[q, : len(pairs)] = torch.as_tensor(pairs, dtype=torch.long).view(-1, 2)
    present = truth[..., 0] >= 0  # (Q, A)
    same = (truth[:, :, None, :] == ranked[:, None, :, :]).all(-1)  # (Q, A, P)
    found = same.any(-1)
    if bool((present & ~found).any()):
        q, a = (present & ~found).nonzero()[0].tolist()
        raise ValueError(f"query {q}: annotator moment {truth[q, a].tolist()} is not among the ranked proposals")
    rank = same.int().argmax(-1).double() + 1  # (Q, A): 1 + the first position of each annotator's pair
    top = ranked[:, :1, :]  # (Q, 1, 2)
    inter = (torch.minimum(top[..., 1], truth[..., 1]) + 1 - torch.maximum(top[..., 0], truth[..., 0])).clamp(min=0)
    union = torch.maximum(top[..., 1], truth[..., 1]) + 1 - torch.minimum(top[..., 0], truth[..., 0])
    iou = inter.double() / union.double()  # (Q, A)
    used = counts.clamp(max=keep).double()  # (Q,) annotator scores averaged
    best_ranks = rank.masked_fill(~present, float("inf")).sort(-1).values[:, :keep]  # (Q, <=keep) smallest first
    best_ious = iou.masked_fill(~present, -1.0).sort(-1, descending=True).values[:, :keep]
    taken = torch.arange(best_ranks.shape[1])[None, :] < used[:, None]  # (Q, <=keep)
    mean_rank = best_ranks.masked_fill(~taken, 0).sum(-1) / used
    mean_iou = best_ious.masked_fill(~taken, 0).sum(-1) / used
    result = {f"Rank@{k}": 100.0 * (mean_rank <= k).double().mean().item() for k in ks}
    result["mIoU"] = 100.0 * mean_iou.mean().item()
    return result
