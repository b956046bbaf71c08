"""AVA v2.2 files as downloaded (research.google.com/ava): ``ava_train_v2.2.csv`` /
``ava_val_v2.2.csv`` (``video_id, middle_frame_timestamp, x1, y1, x2, y2, action_id,
person_id``, box corners normalized), the action list ``.pbtxt`` (the 60 evaluated classes:
``ava_action_list_v2.2_for_activitynet_2019.pbtxt``), ``ava_val_excluded_timestamps_v2.2.csv``
(``video_id, timestamp``) and person boxes in the same CSV layout (``..., action_id (may be
empty), score``: the detections evaluation uses). Movies are ``ROOT/<video_id>.<ext>``;
timestamps are seconds of the movie, keyframes at 1 fps from 902 to 1798.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field

import torch

from longvid.data.annotations import AnnotationError
from longvid.data.videos import VideoFinder

FIRST_KEYFRAME, LAST_KEYFRAME = 902, 1798

_ITEM = re.compile(r"(?:item|label)\s*\{([^}]*)\}", re.S)


def load_action_list(path: str) -> dict[int, str]:
    """``{action id: name}`` of an AVA ``.pbtxt`` (``item { name: ".." id: N }`` or
    ``label { name: ".." label_id: N ... }``)."""
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: no such file")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    actions = {}
    for match in _ITEM.finditer(text):
        body = match.group(1)
        name = re.search(r'name:\s*"([^"]*)"', body)
        ident = re.search(r"\b(?:label_)?id:\s*(\d+)", body)
        line = text.count("\n", 0, match.start()) + 1
        if name is None or ident is None:
            raise AnnotationError(f"{path}:{line}: an item needs name and id")
        actions[int(ident.group(1))] = name.group(1)
    if not actions:
        raise AnnotationError(f"{path}: no action items (expected item {{ name: \"...\" id: N }})")
    return actions


def load_excluded(path: str) -> set[tuple[str, int]]:
    """``{(video_id, timestamp)}`` of ``ava_val_excluded_timestamps_v2.2.csv``."""
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: no such file")
    out = set()
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            if len(row) != 2 or not row[1].strip().isdigit():
                raise AnnotationError(f"{path}:{line}: expected 'video_id,timestamp', got {','.join(row)!r}")
            out.add((row[0], int(row[1])))
    return out


@dataclass
class Keyframe:
    """The boxes of one keyframe: ``boxes`` (P, 4) normalized ``x1, y1, x2, y2``; ``labels``
    (P, K) multi-hot over the evaluated classes (ground truth) or ``scores`` (P,) (detections)."""

    video_id: str
    timestamp: int
    boxes: torch.Tensor
    labels: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    actions: list[list[int]] = field(default_factory=list)  # per box, every action id of the file (GT)


def _row(path: str, line: int, row: list[str], detections: bool):
    if len(row) not in (7, 8):
        raise AnnotationError(f"{path}:{line}: expected 7 or 8 fields, got {len(row)}")
    try:
        timestamp = int(row[1])
        box = tuple(float(v) for v in row[2:6])
        action = int(row[6]) if row[6].strip() else -1
        last = float(row[7]) if len(row) == 8 and row[7].strip() else (1.0 if detections else -1)
    except ValueError as err:
        raise AnnotationError(f"{path}:{line}: {err}") from None
    x1, y1, x2, y2 = box
    if not (0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1):
        raise AnnotationError(f"{path}:{line}: box {box} is not normalized (0 <= x1 <= x2 <= 1, 0 <= y1 <= y2 <= 1)")
    if not detections and action < 1:
        raise AnnotationError(f"{path}:{line}: action_id must be >= 1, got {row[6]!r}")
    return row[0], timestamp, box, action, last


def load_keyframes(path: str, classes: list[int], detections: bool = False, threshold: float = 0.0) -> list[Keyframe]:
    """Keyframes of an AVA CSV in file order. Ground truth: rows of one box (same person) are
    merged into one multi-hot label over ``classes`` (other action ids are kept in ``actions``
    only). Detections: one box per row, scores below ``threshold`` left out."""
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: no such annotation file")
    index = {a: i for i, a in enumerate(classes)}
    frames: dict[tuple[str, int], dict] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            video_id, timestamp, box, action, last = _row(path, line, row, detections)
            entry = frames.setdefault((video_id, timestamp), {"boxes": [], "actions": [], "scores": [], "keys": {}})
            if detections:
                if last >= threshold:
                    entry["boxes"].append(box)
                    entry["scores"].append(last)
                continue
            key = (box, int(last))
            if key not in entry["keys"]:
                entry["keys"][key] = len(entry["boxes"])
                entry["boxes"].append(box)
                entry["actions"].append([])
            entry["actions"][entry["keys"][key]].append(action)
    out = []
    for (video_id, timestamp), entry in frames.items():
        boxes = torch.tensor(entry["boxes"], dtype=torch.float32).view(-1, 4)
        if detections:
            out.append(Keyframe(video_id, timestamp, boxes, scores=torch.tensor(entry["scores"])))
            continue
        labels = torch.zeros(len(entry["boxes"]), len(classes))
        for b, actions in enumerate(entry["actions"]):
            for a in actions:
                if a in index:
                    labels[b, index[a]] = 1.0
        out.append(Keyframe(video_id, timestamp, boxes, labels=labels, actions=entry["actions"]))
    return out


def find_movie(root: str | VideoFinder, video_id: str) -> str | None:
    """``ROOT/<video_id>.<ext>`` (any video extension: the AVA download mixes .mp4, .mkv, .webm), or None."""
    finder = root if isinstance(root, VideoFinder) else VideoFinder(root)
    return finder.find(video_id)
