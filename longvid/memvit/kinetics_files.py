"""Kinetics-400/600/700 official annotation CSVs (``train.csv`` / ``validate.csv`` /
``test.csv``: ``label,youtube_id,time_start,time_end,split[,is_cc]``; the test file has no
label) with videos named ``<youtube_id>_<time_start:06d>_<time_end:06d>.mp4`` in one folder
or in class folders (``ROOT/<label>/``, the label as written or with ``_`` for spaces)."""

from __future__ import annotations

import csv
import os
from typing import Sequence

from longvid.data.annotations import AnnotationError, Annotations, Sample
from longvid.data.videos import VideoFinder

COLUMNS = ("youtube_id", "time_start", "time_end")


def is_kinetics_csv(path: str) -> bool:
    """Whether ``path`` is a CSV whose header has the Kinetics columns."""
    if not path.lower().endswith(".csv") or not os.path.isfile(path):
        return False
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    return all(c in header for c in COLUMNS)


def video_name(youtube_id: str, start: int, end: int) -> str:
    """The official clip name without extension: ``<id>_<start:06d>_<end:06d>``."""
    return f"{youtube_id}_{start:06d}_{end:06d}"


def find_video(root: str | VideoFinder, label: str, name: str) -> str | None:
    """Clip ``name`` (any video extension) in ``root``, else in its class folder ``root/<label>/``
    (as written, or with ``_`` for spaces); None when missing."""
    finder = root if isinstance(root, VideoFinder) else VideoFinder(root)
    return finder.find(name, folders=("", label, label.replace(" ", "_")))


def load_kinetics_csv(
    path: str, video_root: str, classes: Sequence[str] | None = None, strict: bool = False
) -> tuple[Annotations, str]:
    """Samples (one whole 10 s clip each, head ``label``) and a one-line summary.

    Class indices follow ``classes`` (a label not in it is an error naming ``file:line``),
    else the sorted labels of the file. Missing videos are skipped and counted (an error
    with ``strict``)."""
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: no such annotation file")
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        absent = [c for c in ("label", *COLUMNS) if c not in (reader.fieldnames or [])]
        if absent:
            raise AnnotationError(f"{path}:1: not a Kinetics CSV with labels: missing columns {', '.join(absent)}")
        for row in reader:
            line = reader.line_num
            label = (row["label"] or "").strip()
            if not label:
                raise AnnotationError(f"{path}:{line}: empty label")
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except (TypeError, ValueError):
                raise AnnotationError(f"{path}:{line}: time_start/time_end must be whole seconds, got {row['time_start']!r}, {row['time_end']!r}") from None
            if end <= start or start < 0:
                raise AnnotationError(f"{path}:{line}: need 0 <= time_start < time_end, got {start}, {end}")
            youtube_id = (row["youtube_id"] or "").strip()
            if not youtube_id:
                raise AnnotationError(f"{path}:{line}: empty youtube_id")
            rows.append((line, label, video_name(youtube_id, start, end)))
    if not rows:
        raise AnnotationError(f"{path}: no samples (the file has no rows besides its header)")
    names = list(classes) if classes is not None else sorted({label for _, label, _ in rows})
    index = {name: i for i, name in enumerate(names)}
    samples, missing, finder = [], 0, VideoFinder(video_root)
    for line, label, name in rows:
        if label not in index:
            raise AnnotationError(f"{path}:{line}: label {label!r} is not in the class list ({len(names)} classes)")
        video = find_video(finder, label, name)
        if video is None:
            if strict:
                raise AnnotationError(f"{path}:{line}: video {name}.mp4 not found in {video_root} or {os.path.join(video_root, label)}")
            missing += 1
            continue
        samples.append(Sample(video, {"label": (index[label],)}, meta={"class": label}, line=line))
    if not samples:
        raise AnnotationError(f"{path}: none of the {len(rows)} videos was found under {video_root} (expected <youtube_id>_<start:06d>_<end:06d>.mp4 there or in class folders)")
    summary = f"{os.path.basename(path)}: {len(samples)} videos of {len(index)} classes" + (f"; {missing} videos missing (skipped)" if missing else "")
    return Annotations(samples, {"label": names}), summary
