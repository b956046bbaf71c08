"""Metrics against hand-computed cases and naive reference loops."""

import math

import pytest
import torch

from longvid.eval import (
    Box,
    box_iou,
    clamp_intervals,
    class_mean_recall,
    didemo_iou,
    didemo_metrics,
    didemo_proposals,
    epic_accuracy,
    frame_map,
    grounding_metrics,
    temporal_iou,
    topk_accuracy,
    voc_average_precision,
)


def test_topk_accuracy_hand_case():
    scores = torch.tensor(
        [
            [0.9, 0.05, 0.03, 0.01, 0.005, 0.005],  # label 0: top1
            [0.1, 0.2, 0.3, 0.15, 0.12, 0.13],  # label 5: rank 4 -> top5 only
            [0.5, 0.2, 0.1, 0.15, 0.12, 0.11],  # label 1: rank 2 -> top5 only
            [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # label 0: last -> miss
        ]
    )
    labels = torch.tensor([0, 5, 1, 0])
    acc = topk_accuracy(scores, labels, ks=(1, 5))
    assert acc["top1"] == pytest.approx(25.0)
    assert acc["top5"] == pytest.approx(75.0)


def test_topk_matches_naive_sort():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(50, 12, generator=gen)
    labels = torch.randint(0, 12, (50,), generator=gen)
    for k in (1, 3, 5):
        naive = sum(int(labels[i]) in sorted(range(12), key=lambda c: -scores[i, c])[:k] for i in range(50))
        assert topk_accuracy(scores, labels, ks=(k,))[f"top{k}"] == pytest.approx(100.0 * naive / 50)


def test_class_mean_recall_weighs_classes_equally():
    # class 0: 3 samples, all hit at k=1; class 1: 1 sample, miss.
    scores = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 1])
    assert class_mean_recall(scores, labels, k=1) == pytest.approx(50.0)  # mean(1, 0); plain accuracy is 75
    assert class_mean_recall(scores, labels, k=1, classes=[0]) == pytest.approx(100.0)
    assert class_mean_recall(scores, labels, k=2) == pytest.approx(100.0)
    with pytest.raises(ValueError):
        class_mean_recall(scores, labels, k=1, classes=[7])


def test_epic_action_needs_both_verb_and_noun():
    verb = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    noun = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.0, 5.0]])
    verb_labels = torch.tensor([0, 0, 0])  # right, right, wrong
    noun_labels = torch.tensor([0, 0, 1])  # right, wrong, right
    acc = epic_accuracy(verb, noun, verb_labels, noun_labels, ks=(1,))
    assert acc["verb_top1"] == pytest.approx(200 / 3)
    assert acc["noun_top1"] == pytest.approx(200 / 3)
    assert acc["action_top1"] == pytest.approx(100 / 3)  # only the first sample


def test_epic_action_top5_is_joint_ranking():
    gen = torch.Generator().manual_seed(1)
    verb, noun = torch.randn(20, 4, generator=gen), torch.randn(20, 3, generator=gen)
    vl, nl = torch.randint(0, 4, (20,), generator=gen), torch.randint(0, 3, (20,), generator=gen)
    acc = epic_accuracy(verb, noun, vl, nl, ks=(5,))
    hits = 0
    for i in range(20):
        pv, pn = verb[i].softmax(0), noun[i].softmax(0)
        pairs = sorted(((pv[v] * pn[n]).item(), v, n) for v in range(4) for n in range(3))[::-1][:5]
        hits += any(v == vl[i] and n == nl[i] for _, v, n in pairs)
    assert acc["action_top5"] == pytest.approx(100.0 * hits / 20)


def test_box_iou_hand_case():
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    b = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]])
    iou = box_iou(a, b)[0]
    assert iou.tolist() == pytest.approx([0.0625 / (0.25 + 0.25 - 0.0625), 0.0, 1.0])


def naive_ap(is_true, num_pos):
    """AP as the sum over each new true positive of (1/num_pos) * max precision at recall >= its recall."""
    tp = fp = 0
    points = []
    for t in is_true:
        tp += t
        fp += not t
        points.append((tp / num_pos, tp / (tp + fp)))
    ap = 0.0
    for i, t in enumerate(is_true):
        if t:
            r = points[i][0]
            ap += max(p for rr, p in points if rr >= r) / num_pos
    return ap


def test_voc_ap_hand_case_and_naive():
    # 3 ground truths, ranked T F T F: AP = 1/3 * 1 + 1/3 * 2/3 = 5/9.
    assert voc_average_precision(torch.tensor([True, False, True, False]), 3) == pytest.approx(5 / 9)
    gen = torch.Generator().manual_seed(2)
    for _ in range(20):
        flags = (torch.rand(15, generator=gen) < 0.4).tolist()
        num_pos = sum(flags) + int(torch.randint(0, 3, (1,), generator=gen))
        if num_pos == 0:
            continue
        assert voc_average_precision(torch.tensor(flags), num_pos) == pytest.approx(naive_ap(flags, num_pos))


def test_frame_map_hand_case():
    f1, f2 = ("vid", 902), ("vid", 903)
    truths = [
        Box(f1, (0.1, 0.1, 0.4, 0.9), label=1),
        Box(f2, (0.5, 0.1, 0.9, 0.9), label=1),
        Box(f1, (0.1, 0.1, 0.4, 0.9), label=2),
    ]
    detections = [
        Box(f1, (0.1, 0.1, 0.4, 0.9), label=1, score=0.9),  # TP
        Box(f1, (0.11, 0.1, 0.4, 0.9), label=1, score=0.8),  # duplicate of a matched box: FP
        Box(f2, (0.0, 0.0, 0.2, 0.2), label=1, score=0.7),  # IoU 0: FP
        Box(f2, (0.52, 0.1, 0.9, 0.9), label=1, score=0.6),  # TP (IoU 0.95)
        Box(f2, (0.1, 0.1, 0.4, 0.9), label=2, score=0.95),  # wrong frame: FP
        Box(f1, (0.1, 0.1, 0.3, 0.9), label=2, score=0.5),  # IoU 2/3 >= 0.5: TP
        Box(f1, (0.1, 0.1, 0.4, 0.9), label=3, score=0.5),  # class without ground truth: ignored
    ]
    result = frame_map(detections, truths)
    # class 1: T F F T, 2 gt -> 1/2 * 1 + 1/2 * 2/4 = 0.75; class 2: F T, 1 gt -> 0.5
    assert result["per_class"] == {1: pytest.approx(75.0), 2: pytest.approx(50.0)}
    assert result["mAP"] == pytest.approx(62.5)
    # a class with ground truth but no detections scores 0
    assert frame_map([], truths, classes=[1])["mAP"] == 0.0


def test_temporal_iou_and_grounding():
    pred = torch.tensor([[0.0, 10.0], [5.0, 15.0], [20.0, 30.0], [4.0, 2.0]])
    target = torch.tensor([[0.0, 10.0], [0.0, 10.0], [0.0, 10.0], [0.0, 10.0]])
    iou = temporal_iou(pred, target)
    assert iou.tolist() == pytest.approx([1.0, 5 / 15, 0.0, 0.0])
    m = grounding_metrics(pred, target)
    assert m["R@0.3"] == pytest.approx(50.0)
    assert m["R@0.5"] == pytest.approx(25.0)
    assert m["R@0.7"] == pytest.approx(25.0)
    assert m["mIoU"] == pytest.approx(100 * (1 + 1 / 3) / 4)
    with pytest.raises(ValueError):
        temporal_iou(pred, target[:2])


def test_intervals_are_cut_to_their_video():
    intervals = torch.tensor([[-0.5, 3.0], [2.0, 31.9], [40.0, 45.0], [1.0, 2.0]], dtype=torch.float64)
    durations = torch.tensor([10.0, 30.4, 30.0, 5.0], dtype=torch.float64)
    assert clamp_intervals(intervals, durations).tolist() == [[0.0, 3.0], [2.0, 30.4], [30.0, 30.0], [1.0, 2.0]]
    assert temporal_iou(clamp_intervals(intervals, durations)[2:3], torch.tensor([[0.0, 30.0]]))[0] == 0.0  # past the end: empty
    with pytest.raises(ValueError):
        clamp_intervals(intervals, durations[:2])


# -- DiDeMo -------------------------------------------------------------------------------

# Rows of LocalizingMoments data/train_data.json (Hendricks et al.), unchanged: each annotator's
# (first, last) 5-second segment.
DIDEMO_TIMES = [[[0, 0], [3, 3], [0, 0], [0, 1]], [[1, 2], [1, 2], [1, 1], [2, 2]]]


def naive_didemo(rankings, times):
    """LocalizingMoments utils/eval.py ``eval_predictions``, written as its plain loops."""
    ranks, ious = [], []
    for ranking, truths in zip(rankings, times):
        ranking = [tuple(s) for s in ranking]
        top = ranking[0]
        query_ious = []
        for t in truths:
            inter = max(0, min(top[1], t[1]) + 1 - max(top[0], t[0]))
            union = max(top[1], t[1]) + 1 - min(top[0], t[0])
            query_ious.append(inter / union)
        ious.append(sum(sorted(query_ious)[-3:]) / len(sorted(query_ious)[-3:]))
        query_ranks = sorted(ranking.index(tuple(t)) + 1 for t in truths)[:3]
        ranks.append(sum(query_ranks) / len(query_ranks))
    return {"Rank@1": 100.0 * sum(r <= 1 for r in ranks) / len(ranks),
            "Rank@5": 100.0 * sum(r <= 5 for r in ranks) / len(ranks), "mIoU": 100.0 * sum(ious) / len(ious)}


def test_didemo_proposals_are_the_21_spans_of_6_segments():
    proposals = didemo_proposals()
    assert len(proposals) == 21 == len(set(proposals))
    assert proposals[:6] == [(i, i) for i in range(6)] and proposals[6] == (0, 1) and proposals[-1] == (0, 5)
    assert all(0 <= a <= b <= 5 for a, b in proposals)
    assert didemo_iou((0, 1), (1, 1)) == 0.5 and didemo_iou((0, 0), (2, 3)) == 0.0 and didemo_iou((1, 4), (1, 4)) == 1.0


def test_didemo_leaves_out_the_annotator_who_disagrees_most():
    proposals = didemo_proposals()

    def first(*spans):  # the given spans first, then the other proposals in order
        return [*spans, *[p for p in proposals if p not in spans]]

    # 3 of 4 annotators on the top proposal: Rank@1 (the 4th, ranked last, is left out); IoU 1
    assert didemo_metrics([first((0, 0), (5, 5))], [[[0, 0], [0, 0], [0, 0], [0, 5]]]) == {"Rank@1": 100.0, "Rank@5": 100.0, "mIoU": 100.0}
    # 2 of 4 on the top proposal, the others ranked 2nd and 3rd: mean rank (1 + 1 + 2) / 3 > 1: not Rank@1
    two = didemo_metrics([first((1, 1), (2, 2), (3, 3))], [[[1, 1], [1, 1], [2, 2], [3, 3]]])
    assert two["Rank@1"] == 0.0 and two["Rank@5"] == 100.0 and two["mIoU"] == pytest.approx(100 * (1 + 1 + 0) / 3)
    # mean of the 3 best ranks: 2, 6, 7 (the 21st left out) -> 5 <= 5; one place lower -> > 5
    ranking = first((4, 4), (1, 1), (0, 1), (2, 2), (3, 3), (4, 5), (0, 2))
    assert didemo_metrics([ranking], [[[1, 1], [4, 5], [0, 2], [0, 5]]])["Rank@5"] == 100.0
    assert didemo_metrics([ranking], [[[1, 1], [0, 2], [0, 2], [0, 5]]])["Rank@5"] == 0.0
    # fewer than 3 annotators: all of theirs
    assert didemo_metrics([first((2, 3))], [[[2, 3], [2, 2]]]) == pytest.approx({"Rank@1": 0.0, "Rank@5": 100.0, "mIoU": 75.0})


def test_didemo_metrics_match_the_reference_loops():
    generator = torch.Generator().manual_seed(0)
    proposals = didemo_proposals()
    rankings, times = [], []
    for q in range(200):
        order = torch.randperm(21, generator=generator).tolist()
        rankings.append([proposals[i] for i in order])
        picks = torch.randint(0, 21, (int(torch.randint(1, 6, (1,), generator=generator)),), generator=generator)
        if q % 3 == 0:  # annotators who agree with the top proposal
            picks[: len(picks) // 2 + 1] = order[0]
        times.append([list(proposals[i]) for i in picks.tolist()])
    assert didemo_metrics(rankings, times) == pytest.approx(naive_didemo(rankings, times), abs=1e-12)
    # the released rows, ranked by the moment-frequency prior of these rows (the reference's baseline)
    counts = {}
    for row in DIDEMO_TIMES:
        for t in row:
            counts[tuple(t)] = counts.get(tuple(t), 0) + 1
    prior = sorted(proposals, key=lambda p: -counts.get(p, 0))
    assert didemo_metrics([prior] * 2, DIDEMO_TIMES) == pytest.approx(naive_didemo([prior] * 2, DIDEMO_TIMES), abs=1e-12)


def test_didemo_metrics_refuse_what_they_cannot_score():
    with pytest.raises(ValueError, match=r"query 0: annotator moment \[5, 5\] is not among the ranked proposals"):
        didemo_metrics([[(0, 0), (1, 1)]], [[[0, 0], [5, 5]]])
    with pytest.raises(ValueError, match="one ranking per query"):
        didemo_metrics([didemo_proposals()], DIDEMO_TIMES)
    with pytest.raises(ValueError, match="no annotator times"):
        didemo_metrics([didemo_proposals()], [[]])
