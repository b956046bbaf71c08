"""ReWind's data sets, read from their official annotation files unchanged, and their videos' features.

Each reader returns a :class:`VideoTexts`: one :class:`VideoText` per question, query or caption,
each naming its video file and where it is written (``file:line``, for errors).

| format | file | what a row gives |
|---|---|---|
| ``charades_sta`` | ``charades_sta_{train,test}.txt``: ``<video> <start> <end>##<sentence>`` lines | grounding |
| ``didemo`` | ``{train,val,test}_data.json``: a list of ``{"video", "description", "times": [[s, e], ...]}``, 5-s segment indices | grounding |
| ``activitynet`` | ActivityNet Captions ``train.json`` / ``val_1.json``: ``{"v_<id>": {"duration", "timestamps", "sentences"}}`` | grounding (and stage-1 captions) |
| ``moviechat`` | MovieChat-1K: one JSON per video, ``{"info": {"video_path", "fps", ...}, "global": [{"question", "answer"}], "breakpoint": [{"time": <frame>, "question", "answer"}]}`` (a file or a folder of them) | QA, global and breakpoint |
| ``videochatgpt`` | Video-ChatGPT ``VideoInstruct_Dataset.json``: a list of ``{"q", "a", "video_id"}`` | QA (stage 2) |
| ``captions`` | generic video-caption pairs: a JSON list of ``{"video", "caption"}`` (optional ``"start"``, ``"end"`` seconds) | stage 1 |

Videos are read from files at 1 fps (:func:`video_features`); the frozen encoder's features of a
whole video are computed once and cached on disk (:class:`FeatureFiles`).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable

import torch

from longvid.errors import LongvidError
from longvid.data.annotations import AnnotationError
from longvid.data.jsonfiles import read_json

FORMATS = ("charades_sta", "didemo", "activitynet", "moviechat", "videochatgpt", "captions")
KIND = {"charades_sta": "grounding", "didemo": "grounding", "activitynet": "grounding", "moviechat": "qa",
        "videochatgpt": "qa", "captions": "caption"}
DIDEMO_SEGMENT = 5.0  # seconds per DiDeMo segment index


@dataclass(frozen=True)
class VideoText:
    """One annotated question, query or caption on a video.

    video:    the video file's path.
    where:    ``file:line`` of the annotation.
    text:     the question, the grounding query or the caption.
    answer:   the QA answer (None otherwise).
    interval: the grounding target, or a caption's segment, in seconds (None: none / whole video).
    until:    breakpoint questions: the seconds of video seen when asked (None: the whole video).
    group:    MovieChat-1K's ``"global"`` or ``"breakpoint"``; ``""`` elsewhere.
    """

    video: str
    where: str
    text: str
    answer: str | None = None
    interval: tuple[float, float] | None = None
    until: float | None = None
    group: str = ""


@dataclass(frozen=True)
class VideoTexts:
    """A data set read from ``path``: its ``format``, ``kind`` (grounding, qa, caption) and rows."""

    path: str
    format: str
    items: tuple[VideoText, ...]

    @property
    def kind(self) -> str:
        return KIND[self.format]

    def videos(self) -> list[str]:
        """The distinct video files, in first-seen order."""
        return list(dict.fromkeys(item.video for item in self.items))

    def found_missing(self) -> tuple[list[str], list[str]]:
        """The videos that exist and those that do not."""
        videos = self.videos()
        return [v for v in videos if os.path.isfile(v)], [v for v in videos if not os.path.isfile(v)]

    def without(self, missing: list[str]) -> "VideoTexts":
        gone = set(missing)
        return replace(self, items=tuple(item for item in self.items if item.video not in gone))


def _where(path: str, node) -> str:
    return f"{path}:{getattr(node, 'line', 0)}"


def _field(path: str, row, name: str, kind: type | tuple, what: str = ""):
    """``row[name]`` checked to be a ``kind``; a clear ``file:line`` error otherwise."""
    if not isinstance(row, dict):
        raise AnnotationError(f"{_where(path, row)}: expected a JSON object{what}, got {type(row).__name__}")
    if name not in row:
        raise AnnotationError(f"{_where(path, row)}: missing field {name!r}{what}")
    value = row[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise AnnotationError(f"{_where(path, row)}: field {name!r} must be {names}, got {value!r}")
    return value


def _interval(where: str, start: float, end: float, duration: float | None = None) -> tuple[float, float]:
    if not (start >= 0 and end > start):
        raise AnnotationError(f"{where}: the interval must have 0 <= start < end, got {start:g} {end:g}")
    if duration is not None:
        end = min(end, duration)
        if end <= start:
            raise AnnotationError(f"{where}: the interval {start:g}-{end:g} starts after the video's duration {duration:g}")
    return float(start), float(end)


def _video(root: str, name: str, ext: str) -> str:
    """``root/name`` when ``name`` has a video extension, else ``root/name + ext``."""
    return os.path.join(root, name if os.path.splitext(name)[1] else name + ext)


# -- readers -----------------------------------------------------------------------------------


def read_charades_sta(path: str, video_root: str, ext: str = ".mp4") -> list[VideoText]:
    """Charades-STA: ``<video id> <start> <end>##<sentence>`` a line (seconds)."""
    items = []
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            head, sep, sentence = text.rstrip("\n").partition("##")
            fields = head.split()
            where = f"{path}:{line}"
            if not sep or len(fields) != 3 or not sentence.strip():
                raise AnnotationError(f"{where}: expected '<video> <start> <end>##<sentence>', got {text.strip()!r}")
            try:
                start, end = float(fields[1]), float(fields[2])
            except ValueError:
                raise AnnotationError(f"{where}: start and end must be seconds, got {fields[1]!r} {fields[2]!r}") from None
            items.append(VideoText(_video(video_root, fields[0], ext), where, sentence.strip(),
                                   interval=_interval(where, start, end)))
    return items


def read_didemo(path: str, video_root: str, ext: str = ".mp4") -> list[VideoText]:
    """DiDeMo: a list of ``{"video", "description", "times"}``; ``times`` holds each annotator's
    ``[first, last]`` 5-second segment; the target is the most common pair (``train_times``'s
    first when given), ``[first * 5, (last + 1) * 5]`` seconds."""
    rows = read_json(path)
    if not isinstance(rows, list):
        raise AnnotationError(f"{path}:1: a DiDeMo file is a JSON list of moments")
    items = []
    for row in rows:
        video = _field(path, row, "video", str)
        description = _field(path, row, "description", str)
        times = row.get("train_times") or _field(path, row, "times", list)
        pairs = [tuple(t) for t in times if isinstance(t, list) and len(t) == 2 and all(isinstance(i, int) for i in t)]
        if not pairs or len(pairs) != len(times):
            raise AnnotationError(f"{_where(path, row)}: 'times' must be [[first, last], ...] segment indices, got {times!r}")
        first, last = Counter(pairs).most_common(1)[0][0]
        where = _where(path, row)
        items.append(VideoText(_didemo_video(video_root, video, ext), where, description.strip(),
                               interval=_interval(where, first * DIDEMO_SEGMENT, (last + 1) * DIDEMO_SEGMENT)))
    return items


def _didemo_video(root: str, name: str, ext: str) -> str:
    """DiDeMo names the original Flickr file (``.mov``, ``.avi``, ...); a copy converted to ``ext`` is used when that is what exists."""
    given = os.path.join(root, name)
    converted = os.path.join(root, os.path.splitext(name)[0] + ext)
    return given if os.path.isfile(given) or not os.path.isfile(converted) else converted


def read_activitynet(path: str, video_root: str, ext: str = ".mp4") -> list[VideoText]:
    """ActivityNet Captions: ``{"v_<id>": {"duration", "timestamps": [[s, e], ...], "sentences": [...]}}``,
    one row per sentence; an end past the duration is cut to it."""
    videos = read_json(path)
    if not isinstance(videos, dict):
        raise AnnotationError(f"{path}:1: an ActivityNet Captions file is a JSON object keyed by video id")
    items = []
    for video_id, row in videos.items():
        duration = float(_field(path, row, "duration", (int, float)))
        stamps = _field(path, row, "timestamps", list)
        sentences = _field(path, row, "sentences", list)
        where = _where(path, row)
        if len(stamps) != len(sentences):
            raise AnnotationError(f"{where}: {video_id} has {len(stamps)} timestamps for {len(sentences)} sentences")
        for stamp, sentence in zip(stamps, sentences):
            if not (isinstance(stamp, list) and len(stamp) == 2 and all(isinstance(t, (int, float)) for t in stamp)):
                raise AnnotationError(f"{where}: {video_id}: a timestamp must be [start, end] seconds, got {stamp!r}")
            if not isinstance(sentence, str) or not sentence.strip():
                raise AnnotationError(f"{where}: {video_id}: a sentence must be non-empty text, got {sentence!r}")
            items.append(VideoText(_video(video_root, video_id, ext), where, sentence.strip(),
                                   interval=_interval(where, *stamp, duration=duration)))
    return items


def read_moviechat(path: str, video_root: str, ext: str = ".mp4") -> list[VideoText]:
    """MovieChat-1K: a video's JSON file, or a folder of them (read in name order). Breakpoint
    times are frame indices at ``info.fps``: asked at ``time / fps`` seconds."""
    files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".json")) if os.path.isdir(path) else [path]
    if not files:
        raise AnnotationError(f"{path}: no MovieChat-1K .json files in this folder")
    items = []
    for file in files:
        movie = read_json(file)
        info = _field(file, movie, "info", dict)
        video = _video(video_root, _field(file, info, "video_path", str), ext)
        fps = float(_field(file, info, "fps", (int, float), " (info)"))
        if not fps > 0:
            raise AnnotationError(f"{_where(file, info)}: info.fps must be > 0, got {fps:g}")
        for group in ("global", "breakpoint"):
            for row in movie.get(group, []):
                question = _field(file, row, "question", str)
                answer = _field(file, row, "answer", (str, int, float))
                until = None
                if group == "breakpoint":
                    frame = _field(file, row, "time", (int, float))
                    if frame < 0:
                        raise AnnotationError(f"{_where(file, row)}: breakpoint time must be >= 0 (a frame index), got {frame}")
                    until = frame / fps
                items.append(VideoText(video, _where(file, row), question.strip(), str(answer).strip(), until=until, group=group))
    return items


def read_videochatgpt(path: str, video_root: str, ext: str = ".mp4") -> list[VideoText]:
    """Video-ChatGPT instruction data: a list of ``{"q", "a", "video_id"}`` (ActivityNet ids, ``v_...``)."""
    rows = read_json(path)
    if not isinstance(rows, list):
        raise AnnotationError(f"{path}:1: a Video-ChatGPT file is a JSON list of {{'q', 'a', 'video_id'}}")
    return [VideoText(_video(video_root, _field(path, row, "video_id", str), ext), _where(path, row),
                      _field(path, row, "q", str).strip(), _field(path, row, "a", str).strip()) for row in rows]


def read_captions(path: str, video_root: str, ext: str = ".mp4") -> list[VideoText]:
    """Video-caption pairs: a list of ``{"video", "caption"}`` with optional ``"start"``/``"end"`` seconds."""
    rows = read_json(path)
    if not isinstance(rows, list):
        raise AnnotationError(f"{path}:1: a caption file is a JSON list of {{'video', 'caption'}}")
    items = []
    for row in rows:
        video, caption = _field(path, row, "video", str), _field(path, row, "caption", str)
        where = _where(path, row)
        interval = None
        if "start" in row or "end" in row:
            interval = _interval(where, float(_field(path, row, "start", (int, float))), float(_field(path, row, "end", (int, float))))
        items.append(VideoText(_video(video_root, video, ext), where, caption.strip(), interval=interval))
    return items


READERS: dict[str, Callable[[str, str, str], list[VideoText]]] = {
    "charades_sta": read_charades_sta, "didemo": read_didemo, "activitynet": read_activitynet,
    "moviechat": read_moviechat, "videochatgpt": read_videochatgpt, "captions": read_captions,
}


def detect_format(path: str) -> str:
    """The format of ``path`` from its layout: a ``.txt`` is Charades-STA, a folder MovieChat-1K;
    JSON by its fields."""
    if os.path.isdir(path):
        return "moviechat"
    if path.endswith(".txt"):
        return "charades_sta"
    data = read_json(path)
    if isinstance(data, dict):
        if "info" in data and ("global" in data or "breakpoint" in data):
            return "moviechat"
        first = next(iter(data.values()), None)
        if isinstance(first, dict) and "timestamps" in first and "sentences" in first:
            return "activitynet"
    if isinstance(data, list) and data and isinstance(data[0], dict):
        keys = set(data[0])
        for fmt, needed in (("videochatgpt", {"q", "a", "video_id"}), ("didemo", {"video", "description", "times"}),
                            ("captions", {"video", "caption"})):
            if needed <= keys:
                return fmt
    raise AnnotationError(f"{path}: cannot tell its format; set format= one of {', '.join(FORMATS)}")


def read_data(path: str, video_root: str | None = None, format: str = "auto", ext: str = ".mp4") -> VideoTexts:
    """Read annotation file (or MovieChat-1K folder) ``path``; videos under ``video_root``
    (default: the annotation's folder)."""
    if not os.path.exists(path):
        raise AnnotationError(f"{path}: no such annotation file")
    if format != "auto" and format not in READERS:
        raise LongvidError(f"format must be auto or one of {', '.join(FORMATS)}, got {format!r}")
    fmt = detect_format(path) if format == "auto" else format
    root = video_root or (path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)))
    items = READERS[fmt](path, root, ext)
    if not items:
        raise AnnotationError(f"{path}: no {KIND[fmt]} rows in this {fmt} file")
    return VideoTexts(path, fmt, tuple(items))


# -- features ----------------------------------------------------------------------------------


class FeatureFiles:
    """Frozen-encoder features of whole videos: ``(features (N, P, D_v), times (N,))``, computed once
    per video (``compute``) and kept on disk under ``root`` (None: in memory for this run)."""

    def __init__(self, root: str | None, encoder_id: str, fps: float, dtype: torch.dtype = torch.float16):
        from longvid.core.encoders import FeatureCache

        self.cache = FeatureCache(root) if root else None
        self.encoder_id, self.fps, self.dtype = encoder_id, fps, dtype
        self.memory: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _path(self, video: str) -> str | None:
        if self.cache is None:
            return None
        return self.cache.path(self.cache.key(video, self.encoder_id, f"fps={self.fps:g};dtype={self.dtype}"))

    def has(self, video: str) -> bool:
        path = self._path(video)
        return video in self.memory or (path is not None and os.path.exists(path))

    def get(self, video: str, compute: Callable[[str], tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The video's features (float32) and frame times (float64 seconds)."""
        from safetensors.torch import load_file, save_file

        from longvid.fileio import write_atomically

        if video in self.memory:
            features, times = self.memory[video]
            return features.float(), times
        path = self._path(video)
        if path is not None and os.path.exists(path):
            stored = load_file(path)
            return stored["features"].float(), stored["times"]
        features, times = compute(video)
        features = features.to(self.dtype).contiguous()
        if path is None:
            self.memory[video] = (features, times)
        else:
            write_atomically(path, lambda tmp: save_file({"features": features, "times": times.contiguous()}, tmp))
        return features.float(), times


@torch.no_grad()
def video_features(model, video: str, fps: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``video`` read at ``fps`` (ReWind: 1 fps), ``clip_frames`` at a time, through the model's
    frozen encoder: features ``(N, P, D_v)`` on the CPU and frame times ``(N,)`` seconds."""
    from longvid.video import ClipReader

    reader = ClipReader(video, clip_frames=model.config.clip_frames, fps=fps, short_side=None, crop=None, mean=None,
                        std=None, dtype=torch.uint8, background=True)
    features, times = [], []
    for clip in reader:
        pixels = clip.frames.transpose(0, 1)[None, : clip.num_valid]  # (1, n, 3, H, W) uint8
        features.append(model.encode_frames(pixels)[0].cpu())  # (n, P, D_v)
        times.append(clip.timestamps[: clip.num_valid].double())
    if not features:
        raise LongvidError(f"{video}: no frames decoded")
    return torch.cat(features), torch.cat(times)
