"""Annotation formats and sequential multi-video clip streams.

Annotation readers (each validates its rows and reports bad ones with their line
numbers as a :class:`AnnotationError`):

* :func:`load_annotations` — the generic CSV / JSON / JSONL format: ``video``,
  ``label`` (index or class name; several ``;``-separated in CSV, a list in JSON),
  optional ``start``/``end`` seconds, ``question``/``answer``, ``query``/
  ``target_start``/``target_end``; other columns are kept in ``meta``;
* :func:`load_epic_kitchens` — EPIC-Kitchens-100 action CSVs (verb and noun heads);
* :func:`load_ava` — AVA v2.2 box CSVs, grouped into keyframes;
* :func:`load_kinetics_folder` — ``root/<class>/<video>.mp4`` folders;
* :func:`load_lvu` — LVU per-video label files.

Sources: a :class:`ClipSource` gives a video's clips and targets (played as sequential
streams by :class:`longvid.engine.sampler.StreamSampler`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence

import torch

from longvid.errors import LongvidError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")


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


# -- EPIC-Kitchens-100 ----------------------------------------------------------------------

EPIC_COLUMNS = (
    "narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp", "stop_timestamp",
    "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun", "noun_class", "all_nouns",
    "all_noun_classes",
)  # fmt: skip


def parse_timestamp(text: str) -> float:
    """``HH:MM:SS.ff`` (EPIC-Kitchens) -> seconds. Raises ValueError when malformed."""
    match = re.fullmatch(r"(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)", text.strip())
    if match is None:
        raise ValueError(f"bad timestamp {text!r} (expected HH:MM:SS.ff)")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def load_epic_kitchens(
    path: str | os.PathLike, video_root: str | os.PathLike, video_pattern: str = "{participant_id}/videos/{video_id}.MP4"
) -> Annotations:
    """Read an EPIC-Kitchens-100 action CSV (``EPIC_100_train.csv`` / ``_validation.csv``).

    Each row becomes a :class:`Sample` with heads ``verb`` and ``noun``,
    ``start``/``end`` from ``start_timestamp``/``stop_timestamp`` and the video
    at ``video_root/video_pattern``. The other columns go to ``meta``. Rows
    without ``verb_class``/``noun_class`` columns (test split) get no labels.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: no such annotation file")
    samples = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        required = ("participant_id", "video_id", "start_timestamp", "stop_timestamp")
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise AnnotationError(f"{path}:1: not an EPIC-Kitchens CSV: missing columns {', '.join(missing)}")
        labelled = "verb_class" in reader.fieldnames and "noun_class" in reader.fieldnames
        for row in reader:
            line = reader.line_num
            try:
                start, end = parse_timestamp(row["start_timestamp"]), parse_timestamp(row["stop_timestamp"])
                labels = {"verb": (int(row["verb_class"]),), "noun": (int(row["noun_class"]),)} if labelled else {}
            except (ValueError, TypeError, AttributeError) as err:
                raise AnnotationError(f"{path}:{line}: {err}") from None
            if end < start:
                raise AnnotationError(f"{path}:{line}: stop_timestamp is before start_timestamp")
            video = os.path.join(os.fspath(video_root), video_pattern.format(**row))
            meta = {k: v for k, v in row.items() if k not in ("start_timestamp", "stop_timestamp")}
            samples.append(Sample(video, labels, start, end, meta, line))
    return Annotations(samples)


# -- AVA v2.2 -----------------------------------------------------------------------------


@dataclass
class AvaKeyframe:
    """All boxes of one AVA keyframe.

    boxes:   float ``(P, 4)`` normalized ``(x1, y1, x2, y2)``, one row per person box.
    actions: per box, the action ids (1-based AVA ids).
    person_ids: per box, the person id (-1 when the file has none).
    scores:  per box and action, the detection score (prediction files), else None.
    """

    video_id: str
    timestamp: int
    video: str
    boxes: torch.Tensor
    actions: list[list[int]]
    person_ids: list[int]
    scores: list[list[float]] | None = None
    lines: list[int] = field(default_factory=list)


def load_ava(
    path: str | os.PathLike, video_root: str | os.PathLike = "", ext: str = ".mp4", predictions: bool = False
) -> list[AvaKeyframe]:
    """Read an AVA v2.2 CSV (no header): ``video_id, middle_frame_timestamp, x1, y1,
    x2, y2, action_id, person_id`` — or with ``predictions``, ``..., action_id, score``.

    Rows of the same keyframe and the same box are merged (one box, several
    actions). Keyframes come back in file order.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: no such annotation file")
    frames: dict[tuple[str, int], AvaKeyframe] = {}
    box_rows: dict[tuple[str, int], list[tuple[float, ...]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            video_id, timestamp, box, action, last = _ava_row(path, line, row, predictions)
            key = (video_id, timestamp)
            if key not in frames:
                video = os.path.join(os.fspath(video_root), video_id + ext)
                frames[key] = AvaKeyframe(video_id, timestamp, video, torch.zeros(0, 4), [], [], [] if predictions else None)
                box_rows[key] = []
            frame = frames[key]
            frame.lines.append(line)
            person = -1 if predictions else int(last)
            # the same box (and person) on several rows carries several actions
            index = next((i for i, (b, p) in enumerate(zip(box_rows[key], frame.person_ids)) if b == box and p == person), None)
            if index is None:
                box_rows[key].append(box)
                frame.person_ids.append(person)
                frame.actions.append([])
                if predictions:
                    frame.scores.append([])
                index = len(box_rows[key]) - 1
            frame.actions[index].append(action)
            if predictions:
                frame.scores[index].append(float(last))
    for key, frame in frames.items():
        frame.boxes = torch.tensor(box_rows[key], dtype=torch.float32).view(-1, 4)
    return list(frames.values())


def _ava_row(path: str, line: int, row: list[str], predictions: bool):
    if len(row) not in (7, 8):
        raise AnnotationError(f"{path}:{line}: expected 7 or 8 fields, got {len(row)}")
    if predictions and len(row) != 8:
        raise AnnotationError(f"{path}:{line}: a prediction row needs a score in the 8th field")
    try:
        timestamp = int(row[1])
        box = tuple(float(v) for v in row[2:6])
        action = int(row[6])
        last = (float(row[7]) if predictions else int(row[7])) if len(row) == 8 else -1
    except ValueError as err:
        raise AnnotationError(f"{path}:{line}: {err}") from None
    x1, y1, x2, y2 = box
    if not (0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1):
        raise AnnotationError(f"{path}:{line}: box {box} is not normalized (0 <= x1 <= x2 <= 1, 0 <= y1 <= y2 <= 1)")
    if action < 1:
        raise AnnotationError(f"{path}:{line}: action_id must be >= 1, got {action}")
    return row[0], timestamp, box, action, last


def ava_boxes(keyframes: Sequence[AvaKeyframe]) -> list:
    """Flatten keyframes into :class:`longvid.eval.Box` records for :func:`longvid.eval.frame_map`."""
    from longvid.eval.metrics import Box

    out = []
    for kf in keyframes:
        for b, box in enumerate(kf.boxes.tolist()):
            for a, action in enumerate(kf.actions[b]):
                score = kf.scores[b][a] if kf.scores is not None else 1.0
                out.append(Box((kf.video_id, kf.timestamp), tuple(box), action, score))
    return out


# -- Kinetics-style folders and LVU -----------------------------------------------------------


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


def load_lvu(path: str | os.PathLike, video_root: str | os.PathLike, ext: str = ".mp4") -> Annotations:
    """An LVU task file (``lvu_1.0/<task>/<split>.csv``): a header line, then
    space-separated rows ``<class index> <class name> <youtube_id> ...``; the video
    is ``video_root/<youtube_id><ext>``. Regression tasks (float targets) are not
    classification files and are rejected."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: no such annotation file")
    samples, names = [], {}
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            fields = text.split()
            if line == 1 or not fields:
                continue
            if len(fields) < 3 or not re.fullmatch(r"\d+", fields[0]):
                raise AnnotationError(f"{path}:{line}: expected '<class index> <class name> <youtube_id> ...', got {text.strip()!r}")
            label = int(fields[0])
            if names.setdefault(label, fields[1]) != fields[1]:
                raise AnnotationError(f"{path}:{line}: class {label} is named both {names[label]!r} and {fields[1]!r}")
            video = os.path.join(os.fspath(video_root), fields[2] + ext)
            meta = {"class": fields[1], "youtube_id": fields[2], "extra": fields[3:]}
            samples.append(Sample(video, {"label": (label,)}, meta=meta, line=line))
    classes = [names.get(i, str(i)) for i in range(max(names) + 1)] if names else []
    return Annotations(samples, {"label": classes})


# -- clip sources --------------------------------------------------------------------------


class ClipSource(Protocol):
    """Videos as sequences of clips, for :class:`StreamSampler`."""

    def __len__(self) -> int:
        """Number of videos."""

    def num_clips(self, video: int) -> int:
        """Clips in video ``video`` (may over-estimate for files; streams end early then)."""

    def clips(self, video: int, first: int = 0) -> Iterator[torch.Tensor]:
        """Clips ``(C, T, H, W)`` of ``video`` from clip ``first`` on."""

    def targets(self, video: int) -> dict[str, torch.Tensor]:
        """Per-head targets of ``video``: a long scalar (class) or a float vector (multi-hot)."""


class TensorVideos:
    """Generated or in-memory videos: ``videos[i]`` is ``(N_i, C, T, H, W)``, N_i clips.

    targets: per video, head name -> class index (int) or a target tensor.
    """

    def __init__(self, videos: Sequence[torch.Tensor], targets: Sequence[dict]):
        if len(videos) != len(targets):
            raise ValueError(f"{len(videos)} videos but {len(targets)} targets")
        for i, video in enumerate(videos):
            if video.dim() != 5 or video.shape[0] == 0:
                raise ValueError(f"video {i} must be (N, C, T, H, W) with N >= 1, got {tuple(video.shape)}")
        self.videos = list(videos)
        self._targets = [{k: torch.as_tensor(v) for k, v in t.items()} for t in targets]

    def __len__(self) -> int:
        return len(self.videos)

    def num_clips(self, video: int) -> int:
        return self.videos[video].shape[0]

    def clips(self, video: int, first: int = 0) -> Iterator[torch.Tensor]:
        return iter(self.videos[video][first:])

    def targets(self, video: int) -> dict[str, torch.Tensor]:
        return self._targets[video]


class FileVideos:
    """Annotated video files read with :class:`~longvid.video.ClipReader`.

    Single-label heads give long class indices; with ``multilabel`` (e.g. LVU
    genre), targets are multi-hot vectors of ``num_classes[head]``.
    ``reader_options`` go to ClipReader (clip_frames, stride, fps, short_side, crop...).
    ``augment`` (:class:`longvid.memvit.augment.ClipAugment`): one random scale, crop and
    flip per ``clips()`` call (one stream segment), else the reader's center crop.
    """

    def __init__(self, samples: Sequence[Sample], multilabel: dict[str, int] | None = None, augment=None, **reader_options):
        self.samples = list(samples)
        self.multilabel = multilabel or {}
        self.reader_options = reader_options
        self.augment = augment
        self._num_clips: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _reader(self, video: int, options: dict | None = None):
        from longvid.video.reader import ClipReader

        sample = self.samples[video]
        return ClipReader(sample.video, start=sample.start or 0.0, end=sample.end, **(options or self.reader_options))

    def num_clips(self, video: int) -> int:
        """Clips of the sample's time range, from the container header (may over-estimate)."""
        if video not in self._num_clips:
            reader = self._reader(video)
            info = reader.info
            seconds = max(0.0, (reader.end if reader.end is not None else info.duration) - reader.start)
            frames = round(seconds * info.fps) if info.fps else info.num_frames
            info = dataclasses.replace(info, duration=seconds, num_frames=frames)
            self._num_clips[video] = max(1, info.num_clips(reader.clip_frames, reader.stride, reader.fps, reader.tail))
        return self._num_clips[video]

    def clips(self, video: int, first: int = 0) -> Iterator[torch.Tensor]:
        options, view = None, None
        if self.augment is not None:
            view = self.augment.draw()
            options = self.augment.reader_options(self.reader_options, view)
        for clip in self._reader(video, options):
            if clip.index >= first:
                yield clip.frames if view is None else self.augment.apply(clip.frames, view)

    def targets(self, video: int) -> dict[str, torch.Tensor]:
        out = {}
        for head, labels in self.samples[video].labels.items():
            if head in self.multilabel:
                target = torch.zeros(self.multilabel[head])
                target[list(labels)] = 1.0
                out[head] = target
            elif len(labels) == 1:
                out[head] = torch.tensor(labels[0])
            else:
                raise LongvidError(f"{self.samples[video].video}: {len(labels)} labels for head {head!r}; use multilabel")
        return out
