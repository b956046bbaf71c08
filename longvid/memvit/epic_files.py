"""EPIC-KITCHENS-100 action annotations, as downloaded from
``epic-kitchens/epic-kitchens-100-annotations``.

* ``EPIC_100_train.csv`` / ``EPIC_100_validation.csv`` (``narration_id, participant_id,
  video_id, narration_timestamp, start_timestamp, stop_timestamp, start_frame, stop_frame,
  narration, verb, verb_class, noun, noun_class, all_nouns, all_noun_classes``) and
  ``EPIC_100_test_timestamps.csv`` (``narration_id, participant_id, video_id, start_timestamp,
  stop_timestamp, start_frame, stop_frame``: no class columns, read with ``require_labels=False``);
* ``EPIC_100_video_info.csv`` (``video_id, duration, fps, resolution``);
* ``EPIC_100_verb_classes.csv`` / ``EPIC_100_noun_classes.csv`` (``id, key, instances, category``);
* ``EPIC_100_tail_verbs.csv`` / ``EPIC_100_tail_nouns.csv`` (first column: class id) and
  ``EPIC_100_unseen_participant_ids_validation.csv`` (``participant_id``): the official
  evaluation splits.

Videos are found at ``ROOT/P01/videos/P01_11.MP4`` (the download layout) or ``ROOT/P01_11.MP4``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

from longvid.errors import LongvidError
from longvid.data.annotations import AnnotationError, parse_timestamp
from longvid.data.videos import VideoFinder

REQUIRED = ("narration_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp")


@dataclass(frozen=True)
class EpicSegment:
    """One action segment: ``start``/``end`` seconds in video ``video`` (a path, "" when missing);
    ``verb``/``noun`` class ids (-1 in the test file)."""

    narration_id: str
    participant_id: str
    video_id: str
    video: str
    start: float
    end: float
    verb: int
    noun: int
    line: int


@dataclass
class EpicAnnotations:
    """The segments whose video was found, in file order, and what was not."""

    path: str
    segments: list[EpicSegment]
    missing_videos: list[str] = field(default_factory=list)
    skipped_segments: int = 0
    fps: dict[str, float] = field(default_factory=dict)  # video_id -> fps (EPIC_100_video_info.csv)
    labelled: bool = True  # False: the test timestamps file (no verb_class/noun_class; every class id -1)

    def summary(self) -> str:
        videos = len({s.video_id for s in self.segments})
        missing = f"; {len(self.missing_videos)} videos missing ({self.skipped_segments} segments skipped)" if self.missing_videos else ""
        unlabelled = " (no labels: the test split)" if not self.labelled else ""
        return f"{os.path.basename(self.path)}: {len(self.segments)} segments in {videos} videos{unlabelled}{missing}"


def find_video(root: str | VideoFinder, participant_id: str, video_id: str) -> str | None:
    """``ROOT/P01/videos/P01_11.MP4`` or ``ROOT/P01_11.MP4`` (any video extension, in any case), or None."""
    finder = root if isinstance(root, VideoFinder) else VideoFinder(root)
    return finder.find(video_id, folders=(os.path.join(participant_id, "videos"), ""))


def load_epic_actions(
    path: str, video_root: str, num_verbs: int = 97, num_nouns: int = 300, strict: bool = False,
    require_labels: bool = True, check_videos: bool = True,
) -> EpicAnnotations:  # fmt: skip
    """Read an EPIC-100 action CSV; every error names ``file:line``.

    Segments whose video is not under ``video_root`` are skipped and counted (an error
    with ``strict``). Class ids must lie in ``[0, num_verbs)`` / ``[0, num_nouns)``.
    """
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: no such annotation file")
    found: dict[str, str | None] = {}
    segments, missing, skipped, finder = [], [], 0, VideoFinder(video_root)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        absent = [c for c in REQUIRED if c not in columns]
        if absent:
            raise AnnotationError(f"{path}:1: not an EPIC-KITCHENS-100 action CSV: missing columns {', '.join(absent)}")
        labelled = "verb_class" in columns and "noun_class" in columns
        if require_labels and not labelled:
            raise AnnotationError(f"{path}:1: no verb_class/noun_class columns (the test file has no labels to train on or score: `longvid eval ... val_data=FILE --predictions OUT.json` writes its submission)")
        for row in reader:
            line = reader.line_num
            segment = _segment(path, line, row, labelled, num_verbs, num_nouns)
            video_id = segment.video_id
            if video_id not in found:
                found[video_id] = find_video(finder, segment.participant_id, video_id) if check_videos else ""
                if found[video_id] is None:
                    where = os.path.join(video_root, segment.participant_id, "videos", video_id + ".MP4")
                    if strict:
                        raise AnnotationError(f"{path}:{line}: video {video_id} not found (looked for {where} and {os.path.join(video_root, video_id + '.MP4')})")
                    missing.append(video_id)
            if found[video_id] is None:
                skipped += 1
                continue
            segments.append(EpicSegment(**{**segment.__dict__, "video": found[video_id]}))
    if not segments and not missing:
        raise AnnotationError(f"{path}: no segments (the file has no rows besides its header)")
    if not segments:
        raise AnnotationError(f"{path}: none of the {len(missing)} videos was found under {video_root} (expected ROOT/P01/videos/P01_11.MP4 or ROOT/P01_11.MP4)")
    return EpicAnnotations(path, segments, missing, skipped, labelled=labelled)


def _segment(path: str, line: int, row: dict, labelled: bool, num_verbs: int, num_nouns: int) -> EpicSegment:
    try:
        start, end = parse_timestamp(row["start_timestamp"] or ""), parse_timestamp(row["stop_timestamp"] or "")
    except ValueError as err:
        raise AnnotationError(f"{path}:{line}: {err}") from None
    if end < start:
        raise AnnotationError(f"{path}:{line}: stop_timestamp {row['stop_timestamp']} is before start_timestamp {row['start_timestamp']}")
    verb = noun = -1
    if labelled:
        verb = _class_id(path, line, "verb_class", row.get("verb_class"), num_verbs)
        noun = _class_id(path, line, "noun_class", row.get("noun_class"), num_nouns)
    ids = {k: (row.get(k) or "").strip() for k in ("narration_id", "participant_id", "video_id")}
    empty = [k for k, v in ids.items() if not v]
    if empty:
        raise AnnotationError(f"{path}:{line}: empty {', '.join(empty)}")
    return EpicSegment(ids["narration_id"], ids["participant_id"], ids["video_id"], "", start, end, verb, noun, line)


def _class_id(path: str, line: int, column: str, value, count: int) -> int:
    text = (value or "").strip()
    if not text.isdigit():
        raise AnnotationError(f"{path}:{line}: {column} must be a class id, got {value!r}")
    if int(text) >= count:
        raise AnnotationError(f"{path}:{line}: {column} {text} is outside [0, {count})")
    return int(text)


def load_video_info(path: str) -> dict[str, float]:
    """``EPIC_100_video_info.csv`` -> ``{video_id: fps}``."""
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: no such file")
    fps = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"video_id", "fps"} <= set(reader.fieldnames or []):
            raise AnnotationError(f"{path}:1: not EPIC_100_video_info.csv: needs columns video_id and fps")
        for row in reader:
            try:
                fps[row["video_id"]] = float(row["fps"])
            except (TypeError, ValueError):
                raise AnnotationError(f"{path}:{reader.line_num}: fps must be a number, got {row['fps']!r}") from None
            if not fps[row["video_id"]] > 0:
                raise AnnotationError(f"{path}:{reader.line_num}: fps must be > 0, got {row['fps']!r}")
    return fps


def load_id_column(path: str, column: str | None = None) -> set[str]:
    """The ids of a split file: ``column`` (default: the first column) of every row."""
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: no such file")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            raise AnnotationError(f"{path}:1: empty file")
        key = column or reader.fieldnames[0]
        if key not in reader.fieldnames:
            raise AnnotationError(f"{path}:1: no column {key!r}")
        return {row[key].strip() for row in reader if row.get(key)}


def load_class_count(path: str) -> int:
    """Number of classes of ``EPIC_100_verb_classes.csv`` / ``_noun_classes.csv`` (ids 0..K-1)."""
    ids = load_id_column(path, "id")
    bad = [i for i in ids if not i.isdigit()]
    if bad:
        raise LongvidError(f"{path}: class ids must be integers, got {bad[0]!r}")
    return max(int(i) for i in ids) + 1
