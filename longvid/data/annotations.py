"""Annotation files: the generic format and Kinetics-style folders, read into :class:`Sample` rows.

Readers validate their rows and report bad ones with their file and line numbers as an
:class:`AnnotationError`:

* :func:`load_annotations` — the generic CSV / JSON / JSONL format: ``video``,
  ``label`` (index or class name; several ``;``-separated in CSV, a list in JSON),
  optional ``start``/``end`` seconds, ``question``/``answer``, ``query``/
  ``target_start``/``target_end``; other columns are kept in ``meta``;
* :func:`load_kinetics_folder` — ``root/<class>/<video>.mp4`` folders.

:func:`parse_timestamp` reads ``HH:MM:SS.ff`` times. The readers of one family's data sets live
in that family's folder (EPIC-KITCHENS and AVA: ``longvid.memvit``; LVU, Breakfast, ...:
``longvid.malmm``; Charades-STA, MovieChat-1K, ...: ``longvid.rewind``). Clip sources (videos
as clip streams) are in :mod:`longvid.data.sources`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from longvid.errors import LongvidError
from longvid.data.videos import VIDEO_EXTENSIONS  # also imported from here


class AnnotationError(LongvidError):
    """A bad annotation file or row; the message names the file and line."""


@dataclass(frozen=True)
class Sample:
    """One annotated video (or time range of a video).

    video:   absolute path.
    labels:  head name -> class indices, e.g. ``{"label": (3,)}`` or
             ``{"verb": (2,), "noun": (10,)}``; empty for unlabelled rows.
    start, end: seconds (None: the whole video).
    meta:    everything else in the row (question, answer, query, ids, ...).
    line:    where the row is in its file (1-based; JSON lists: item number).
    """

    video: str
    labels: dict[str, tuple[int, ...]] = field(default_factory=dict)
    start: float | None = None
    end: float | None = None
    meta: dict = field(default_factory=dict, compare=False)
    line: int = 0

    @property
    def label(self) -> tuple[int, ...]:
        """The labels of the single-head formats (``labels["label"]``)."""
        return self.labels.get("label", ())


@dataclass
class Annotations:
    """Parsed annotation file: samples plus, per head, the class names (index order)."""

    samples: list[Sample]
    classes: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]


# -- generic format -----------------------------------------------------------------------

_GENERIC_KNOWN = ("video", "label", "start", "end")
_FLOAT_FIELDS = ("start", "end", "target_start", "target_end")


def load_annotations(
    path: str | os.PathLike,
    classes: Sequence[str] | None = None,
    check_files: bool = True,
    num_classes: int | None = None,
    require_labels: bool = False,
) -> Annotations:
    """Read the generic annotation format (``.csv``, ``.json`` list or ``.jsonl``).

    Labels that are all integers are class indices, kept as they are (never renumbered).
    Otherwise they are class names, indexed by ``classes`` when given or by their
    sorted set (save ``result.classes`` so other files map the same way).
    ``check_files`` reports rows whose video does not exist; ``num_classes`` rejects
    labels outside ``[0, num_classes)``; ``require_labels`` rejects unlabelled rows.
    Every error names ``file:line``; a file without rows is an error.
    """
    path = os.fspath(path)
    rows = list(_read_rows(path))
    if not rows:
        raise AnnotationError(f"{path}: no samples (the file has no rows besides its header)")
    folder = os.path.dirname(os.path.abspath(path))
    tokens = [(line, _label_tokens(path, line, row.get("label"))) for line, row in rows]
    class_list, lookup = _class_lookup(path, tokens, classes)
    samples = []
    for (line, row), (_, labels) in zip(rows, tokens):
        video = row.get("video")
        if not isinstance(video, str) or not video.strip():
            raise AnnotationError(f"{path}:{line}: missing 'video'")
        video = os.path.normpath(os.path.join(folder, os.path.expanduser(video.strip())))
        if check_files and not os.path.isfile(video):
            raise AnnotationError(f"{path}:{line}: video not found: {video}")
        meta = {k: v for k, v in row.items() if k not in _GENERIC_KNOWN and v not in (None, "")}
        for key in _FLOAT_FIELDS[2:]:
            if key in meta:
                meta[key] = _float(path, line, key, meta[key])
        start = _float(path, line, "start", row.get("start"))
        end = _float(path, line, "end", row.get("end"))
        if start is not None and end is not None and end <= start:
            raise AnnotationError(f"{path}:{line}: end {end:g} must be after start {start:g}")
        label = tuple(lookup(line, t) for t in labels)
        if require_labels and not label:
            raise AnnotationError(f"{path}:{line}: no label")
        for index in label:
            if num_classes is not None and not 0 <= index < num_classes:
                raise AnnotationError(f"{path}:{line}: label {index} is outside [0, {num_classes}) (num_classes={num_classes})")
        samples.append(Sample(video, {"label": label} if label else {}, start, end, meta, line))
    return Annotations(samples, {"label": class_list} if class_list else {})


def _read_rows(path: str) -> Iterator[tuple[int, dict]]:
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: no such annotation file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, strict=True)
            rows = _csv_rows(path, reader)
            if reader.fieldnames is None or "video" not in reader.fieldnames:
                raise AnnotationError(f"{path}:1: the header must name a 'video' column, got {reader.fieldnames}")
            for line, row in rows:
                if None in row:
                    raise AnnotationError(f"{path}:{line}: more fields than the header has")
                yield line, row
    elif ext == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for line_num, text in enumerate(f, 1):
                if text.strip():
                    yield line_num, _json_object(path, line_num, text)
    elif ext == ".json":
        with open(path, encoding="utf-8") as f:
            try:
                items = json.load(f)
            except json.JSONDecodeError as err:
                raise AnnotationError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
        if not isinstance(items, list):
            raise AnnotationError(f"{path}: expected a JSON list of samples")
        for item_num, item in enumerate(items, 1):
            if not isinstance(item, dict):
                raise AnnotationError(f"{path}: item {item_num} is not an object")
            yield item_num, item
    else:
        raise AnnotationError(f"{path}: unknown annotation format {ext!r} (use .csv, .json or .jsonl)")


def _csv_rows(path: str, reader: csv.DictReader) -> Iterator[tuple[int, dict]]:
    """``(line, row)`` of a strict CSV reader; a malformed row (an unterminated quote, ...)
    raises :class:`AnnotationError` naming the line it starts on. Reads the header first."""
    def rows():
        while True:
            first = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                raise AnnotationError(f"{path}:{first}: malformed CSV ({err})") from None
            yield reader.line_num, row

    try:
        reader.fieldnames  # reads the header
    except csv.Error as err:
        raise AnnotationError(f"{path}:1: malformed CSV header ({err})") from None
    return rows()


def _json_object(path: str, line: int, text: str) -> dict:
    try:
        item = json.loads(text)
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}:{line}: invalid JSON ({err.msg})") from None
    if not isinstance(item, dict):
        raise AnnotationError(f"{path}:{line}: expected a JSON object")
    return item


def _label_tokens(path: str, line: int, value) -> list[str]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else str(value).split(";")
    tokens = [str(v).strip() for v in items]
    if any(not t for t in tokens):
        raise AnnotationError(f"{path}:{line}: empty label in {value!r}")
    return tokens


def _class_lookup(path, tokens, classes):
    """(class names or None, function (line, token) -> index)."""
    all_tokens = [t for _, ts in tokens for t in ts]
    if classes is None and all(re.fullmatch(r"-?\d+", t) for t in all_tokens):
        return None, lambda line, t: int(t)
    if classes is None:
        for line, ts in tokens:
            numbers = [t for t in ts if re.fullmatch(r"-?\d+", t)]
            if numbers:
                raise AnnotationError(
                    f"{path}:{line}: label {numbers[0]!r} is a class index but other rows name classes; "
                    "use one kind, or give the class list"
                )
    names = list(classes) if classes is not None else sorted(set(all_tokens))
    index = {name: i for i, name in enumerate(names)}

    def lookup(line: int, token: str) -> int:
        if token in index:
            return index[token]
        if re.fullmatch(r"\d+", token) and int(token) < len(names):
            return int(token)
        raise AnnotationError(f"{path}:{line}: unknown class {token!r}")

    return names, lookup


def _float(path: str, line: int, name: str, value) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AnnotationError(f"{path}:{line}: {name} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise AnnotationError(f"{path}:{line}: {name} must be a finite time >= 0, got {value!r}")
    return number


# -- timestamps ----------------------------------------------------------------------------


def parse_timestamp(text: str) -> float:
    """``HH:MM:SS.ff`` (EPIC-Kitchens) -> seconds. Raises ValueError when malformed."""
    match = re.fullmatch(r"(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)", text.strip())
    if match is None:
        raise ValueError(f"bad timestamp {text!r} (expected HH:MM:SS.ff)")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


# -- Kinetics-style folders ----------------------------------------------------------------


def load_kinetics_folder(root: str | os.PathLike, classes: Sequence[str] | None = None) -> Annotations:
    """``root/<class name>/<video>.<ext>``: class indices follow ``classes`` (default: the
    sorted folder names); a folder not in ``classes`` is an error."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise AnnotationError(f"{root}: no such folder")
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    classes = list(classes) if classes is not None else folders
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise AnnotationError(f"{root}: class folder(s) {', '.join(unknown[:5])} are not in the class list")
    samples = []
    for index, name in enumerate(classes):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        for file in sorted(os.listdir(folder)):
            if file.lower().endswith(VIDEO_EXTENSIONS):
                samples.append(Sample(os.path.join(folder, file), {"label": (index,)}, meta={"class": name}))
    if not samples:
        raise AnnotationError(f"{root}: no videos found in class folders (expected root/<class>/<video>.mp4)")
    return Annotations(samples, {"label": classes})
