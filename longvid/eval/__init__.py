"""Evaluation metrics."""

from longvid.eval.metrics import (
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
    topk_correct,
    voc_average_precision,
)

__all__ = [
    "Box",
    "box_iou",
    "clamp_intervals",
    "class_mean_recall",
    "didemo_iou",
    "didemo_metrics",
    "didemo_proposals",
    "epic_accuracy",
    "frame_map",
    "grounding_metrics",
    "temporal_iou",
    "topk_accuracy",
    "topk_correct",
    "voc_average_precision",
]
