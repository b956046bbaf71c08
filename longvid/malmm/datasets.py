"""Readers for MA-LMM's released annotation files, each kept exactly as distributed.

Every file is one JSON object keyed by an id (the layouts of ``data/<set>/annotation/*.json``
in the MA-LMM repository); each reader turns it into :class:`LMMItem` rows: a video file, a
time range, the Q-Former instruction (also the LLM prompt) and the target text, with the
prompts and text normalisation of MA-LMM's dataset classes:

=============  ====================================================  ==========================================
data set       entry fields used                                     prompt -> target
=============  ====================================================  ==========================================
``lvu``        ``duration``, ``<task>`` for the 7 tasks               ``what is the {task} of the movie?`` -> label
               (windows of ``history`` s every ``stride`` s)
``breakfast``  ``class_name``                                         ``what type of breakfast is shown in the video?``
``coin``       ``subset``, ``target`` (entries of the chosen split)   ``what is the activity in the video?``
``msrvtt_qa``  ``video``, ``question``, ``answer``                    ``Question: {q} Short answer:`` -> answer
``msvd_qa``    (same)
``activitynet_qa`` (same; video files ``<video>`` or ``v_<video>``)
``youcook2``   ``video``, ``start_time``, ``end_time``, ``caption``   ``what does the video describe?`` -> caption
``msrvtt_caption`` ``video``, ``caption`` (one entry per caption)     ``what does the video describe?`` -> caption
``msvd_caption``   (same)
=============  ====================================================  ==========================================

Errors name the file and the line of the offending entry (``file:line: ...``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from longvid.errors import LongvidError
from longvid.data.annotations import AnnotationError
from longvid.data.videos import VideoFinder
from longvid.data.jsonfiles import JsonWording, read_json_object

LVU_TASKS = ("director", "genre", "relationship", "scene", "way_speaking", "writer", "year")

QA_PROMPT = "Question: {} Short answer:"
CAPTION_PROMPT = "what does the video describe?"
BREAKFAST_PROMPT = "what type of breakfast is shown in the video?"
COIN_PROMPT = "what is the activity in the video?"
LVU_PROMPT = "what is the {} of the movie?"


@dataclass(frozen=True)
class LMMItem:
    """One sample: ``video`` (its name in the data set: a file stem under ``video_root``),
    ``start``/``end`` seconds (None: the whole video), the prompt, the target text, the
    metric group (an LVU task, or the data set's name), where it is in its file (``line``),
    its id, and for captions every reference caption of the segment."""

    key: str
    video: str
    prompt: str
    answer: str
    group: str
    line: int
    start: float | None = None
    end: float | None = None
    references: tuple[str, ...] = field(default=(), compare=False)


MALMM_JSON = JsonWording(syntax="{}", key="expected a quoted key", colon="expected ':' after the key",
                         extra="extra data after the JSON object")  # fmt: skip


def json_entries(path: str) -> list[tuple[str, object, int]]:
    """The top-level ``(key, value, line)`` entries of a JSON object file, in file order
    (``line``: where the key is, 1-based)."""
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: no such annotation file")
    return read_json_object(path, "expected a JSON object keyed by id (MA-LMM's annotation layout)", MALMM_JSON)


def _need(path: str, line: int, key: str, entry: object, name: str, kind: type | tuple[type, ...]):
    """``entry[name]``, checked to be ``kind``."""
    if not isinstance(entry, dict):
        raise AnnotationError(f"{path}:{line}: entry {key!r} is not an object")
    if name not in entry:
        raise AnnotationError(f"{path}:{line}: entry {key!r} has no {name!r} field")
    value = entry[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        want = {str: "a string", (int, float): "a number", (str, int, float): "a string or a number"}.get(kind, str(kind))
        raise AnnotationError(f"{path}:{line}: entry {key!r}: {name!r} must be {want}, got {value!r}")
    return value


_QUESTION_PUNCTUATION = re.compile(r'([.!\"()*#:;~])')


def process_question(text: str) -> str:
    """MA-LMM's question normalisation (LAVIS ``blip_question``): lower case, ``.!"()*#:;~`` removed,
    spaces collapsed."""
    text = _QUESTION_PUNCTUATION.sub("", text.lower())
    return re.sub(r"\s{2,}", " ", text).rstrip("\n").strip(" ")


def process_caption(text: str, max_words: int = 50) -> str:
    """MA-LMM's caption / label normalisation (LAVIS ``blip_caption``): lower case, punctuation
    ``.!\"()*#:;~`` and ``-/`` to spaces, spaces collapsed, at most ``max_words`` words."""
    text = re.sub(r"([.!\"()*#:;~])", " ", text.lower())
    text = re.sub(r"\s{2,}", " ", text).rstrip("\n").strip(" ")
    return " ".join(text.split(" ")[:max_words])


def _number(path, line, key, entry, name) -> float:
    value = _need(path, line, key, entry, name, (int, float))
    if value < 0:
        raise AnnotationError(f"{path}:{line}: entry {key!r}: {name!r} must be >= 0, got {value!r}")
    return float(value)


def read_lvu(path: str, tasks=LVU_TASKS, history: float = 100, stride: float = 20) -> list[LMMItem]:
    """LVU as MA-LMM releases it (``{video_id: {duration, <task>: label, <task>_answer, ...}}``):
    one item per (video, task it labels, window). Windows are ``history`` seconds long and
    start at 0, then every ``stride`` seconds while a whole window fits (MA-LMM's
    ``LVUCLSDataset``); each window is evaluated on its own."""
    unknown = sorted(set(tasks) - set(LVU_TASKS))
    if unknown or not tasks:
        raise LongvidError(f"LVU tasks must be among {', '.join(LVU_TASKS)}, got {', '.join(unknown) or 'none'}")
    items, labelled = [], set()
    for key, entry, line in json_entries(path):
        duration = _number(path, line, key, entry, "duration")
        labelled.update(t for t in LVU_TASKS if t in entry)
        for task in tasks:
            if task not in entry:
                continue
            label = _need(path, line, key, entry, task, str)
            starts = [0.0] + [float(s) for s in range(int(stride), int(duration - history) + 1, int(stride))]
            for start in starts:
                end = min(start + history - 1, duration)
                items.append(LMMItem(f"{key}_{int(start)}_{task}", key, LVU_PROMPT.format(task), process_caption(label), task, line, start, end))
    if not items:
        asked = ",".join(tasks) if set(tasks) != set(LVU_TASKS) else "all"
        has = f"its entries label {', '.join(sorted(labelled))}" if labelled else "no entry labels an LVU task"
        raise AnnotationError(f"{path}: no lvu samples for lvu_tasks={asked} in this file ({has})")
    return items


BREAKFAST_SKIPPED = ("P28-cam01-P28_cereals", "P27-stereo-P27_milk_ch0", "P28-cam02-P28_cereals")  # skipped by MA-LMM


def read_breakfast(path: str) -> list[LMMItem]:
    """Breakfast (``{video: {duration, frame_length, class_name, class_label}}``), whole videos
    (the 3 videos MA-LMM's dataset skips are left out)."""
    return [LMMItem(key, key, BREAKFAST_PROMPT, process_caption(_need(path, line, key, entry, "class_name", str)), "breakfast", line)
            for key, entry, line in json_entries(path) if key not in BREAKFAST_SKIPPED]


COIN_SKIPPED = ("AfiVmAjfTNs", "cjwtcDKTQM8")  # skipped by MA-LMM's COIN dataset


def read_coin(path: str, split: str) -> list[LMMItem]:
    """COIN as MA-LMM reads it (``{video_id: {subset, duration, target, ...}}``): the entries of
    ``subset == split`` (MA-LMM evaluates on ``"val"``)."""
    items = []
    for key, entry, line in json_entries(path):
        if key in COIN_SKIPPED or _need(path, line, key, entry, "subset", str) != split:
            continue
        items.append(LMMItem(key, key, COIN_PROMPT, process_caption(_need(path, line, key, entry, "target", str)), "coin", line))
    return items


def read_qa(path: str, name: str) -> list[LMMItem]:
    """Open-ended video QA (``{question_id: {video, question, answer, ...}}``), whole videos."""
    items = []
    for key, entry, line in json_entries(path):
        video = _need(path, line, key, entry, "video", str)
        question = process_question(_need(path, line, key, entry, "question", str))
        answer = process_question(str(_need(path, line, key, entry, "answer", (str, int, float))))
        items.append(LMMItem(key, video, QA_PROMPT.format(question), answer, name, line))
    return items


def read_youcook2(path: str) -> list[LMMItem]:
    """YouCook2 captions (``{segment: {video, start_time, end_time, caption, ...}}``): one item per
    segment, frames from ``[start_time, end_time]`` of the video."""
    items = []
    for key, entry, line in json_entries(path):
        video = _need(path, line, key, entry, "video", str)
        start, end = _number(path, line, key, entry, "start_time"), _number(path, line, key, entry, "end_time")
        if end < start:
            raise AnnotationError(f"{path}:{line}: entry {key!r}: end_time {end:g} is before start_time {start:g}")
        caption = process_caption(_need(path, line, key, entry, "caption", str))
        items.append(LMMItem(key, video, CAPTION_PROMPT, caption, "youcook2", line, start, end, references=(caption,)))
    return items


def read_video_captions(path: str, name: str) -> list[LMMItem]:
    """MSRVTT / MSVD captions as MA-LMM releases them (``data/<set>/annotation/cap_<split>.json``:
    ``{id: {video, caption, frame_length, ...}}``, one entry per caption, read by MA-LMM's
    ``MSRVTTCapDataset`` / ``MSVDCapDataset``): one item per entry, frames from the whole video.
    Training uses every entry; evaluation scores one caption per video (:func:`one_per_video`)."""
    items = []
    for key, entry, line in json_entries(path):
        video = _need(path, line, key, entry, "video", str)
        caption = process_caption(_need(path, line, key, entry, "caption", str))
        items.append(LMMItem(key, video, CAPTION_PROMPT, caption, name, line, references=(caption,) if caption else ()))
    return items


def one_per_video(items: list[LMMItem]) -> list[LMMItem]:
    """One item per video (in file order), keyed by the video name, with every non-empty caption of
    that video's entries as its references: what MA-LMM's caption evaluation scores (it captions every
    entry and keeps the first caption per ``image_id`` = video; with deterministic frames and one
    prompt the other entries' captions are the same, so they are not generated again)."""
    videos: dict[str, list[LMMItem]] = {}
    for item in items:
        videos.setdefault(item.video, []).append(item)
    merged = []
    for video, entries in videos.items():
        references = tuple(ref for item in entries for ref in item.references)
        first = entries[0]
        merged.append(LMMItem(video, video, first.prompt, references[0] if references else "", first.group, first.line,
                              first.start, first.end, references=references))
    return merged


VIDEO_CAPTIONS = ("msrvtt_caption", "msvd_caption")  # captions scored per video (MA-LMM's image_id = video)
CAPTIONS = ("youcook2", *VIDEO_CAPTIONS)
DATASETS = ("lvu", "breakfast", "coin", "msrvtt_qa", "msvd_qa", "activitynet_qa", "youcook2", *VIDEO_CAPTIONS)


def read_dataset(name: str, path: str, split: str = "train", lvu_tasks=LVU_TASKS, history: float = 100, stride: float = 20) -> list[LMMItem]:
    """The items of data set ``name`` (one of :data:`DATASETS`) in ``path``; ``split`` picks COIN's subset."""
    if name == "lvu":
        items = read_lvu(path, lvu_tasks, history, stride)
    elif name == "breakfast":
        items = read_breakfast(path)
    elif name == "coin":
        items = read_coin(path, split)
    elif name in ("msrvtt_qa", "msvd_qa", "activitynet_qa"):
        items = read_qa(path, name)
    elif name == "youcook2":
        items = read_youcook2(path)
    elif name in VIDEO_CAPTIONS:
        items = read_video_captions(path, name)
    else:
        raise LongvidError(f"unknown data set {name!r}: choose from {', '.join(DATASETS)}")
    if not items:
        raise AnnotationError(f"{path}: no {name} samples in this file")
    return items


@dataclass(frozen=True)
class VideoSummary:
    """Which videos the items name were found under the video root."""

    found: dict[str, str]  # video name -> file
    missing: tuple[str, ...]

    def line(self, path: str) -> str:
        shown = ", ".join(self.missing[:3]) + (" ..." if len(self.missing) > 3 else "")
        return f"{path}: {len(self.found)} videos found, {len(self.missing)} missing" + (f" ({shown})" if self.missing else "")


def video_candidates(dataset: str, name: str) -> list[str]:
    """Where a data set's video ``name`` may be under the video root (relative paths without
    extension), in the layouts the data sets are downloaded in: the name itself; ActivityNet's
    ``v_<id>``; Breakfast's ``P03/cam01/P03_cereals`` for ``P03-cam01-P03_cereals``."""
    found = [name]
    if dataset == "activitynet_qa":
        found.append("v_" + name)
    if dataset == "breakfast":
        found.append(name.replace("-", "/", 2))
    return found


def find_videos(items: list[LMMItem], video_root: str, dataset: str = "") -> VideoSummary:
    """Look up each item's video under ``video_root`` with the shared resolver
    (:mod:`longvid.data.videos`: any video extension, ``.mp4`` first on ties; the root and up to 3
    folders deep; see :func:`video_candidates` for the names tried)."""
    if not os.path.isdir(video_root):
        raise LongvidError(f"video_root {video_root!r} is not a folder")
    index = VideoFinder(video_root).index(max_depth=3)
    found, missing = {}, []
    for name in dict.fromkeys(item.video for item in items):
        path = index.find(name, video_candidates(dataset, name)[1:])
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    return VideoSummary(found, tuple(missing))


def read_coco_references(path: str) -> dict[str, list[str]]:
    """Reference captions of a COCO caption file (MA-LMM's ``annotation/coco_gt/cap_<split>.json``:
    ``{"annotations": [{"image_id", "caption", ...}], "images": [...]}``): image id -> captions."""
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: no such reference file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise AnnotationError(f"{path}: expected a COCO caption file with an 'annotations' list")
    references: dict[str, list[str]] = {}
    for i, row in enumerate(data["annotations"]):
        if not isinstance(row, dict) or "image_id" not in row or not isinstance(row.get("caption"), str):
            raise AnnotationError(f"{path}: annotation {i} needs 'image_id' and a 'caption' string")
        references.setdefault(str(row["image_id"]), []).append(row["caption"])
    return references
