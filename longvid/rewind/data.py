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
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from longvid.errors import LongvidError
from longvid.data.annotations import AnnotationError
from longvid.data.jsonfiles import read_json
from longvid.data.videos import VideoFinder

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
    times:    DiDeMo: every annotator's ``(first, last)`` 5-s segment (its own metric scores against all).
    """

    video: str
    where: str
    text: str
    answer: str | None = None
    interval: tuple[float, float] | None = None
    until: float | None = None
    group: str = ""
    times: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class VideoTexts:
    """A data set read from ``path``: its ``format``, ``kind`` (grounding, qa, caption) and rows.

    skipped:   ``(where, why)`` of each row that cannot be used (an interval with start >= end,
               one that starts after its video's end), left out and listed by :meth:`summary`.
    clamped:   how many intervals were cut to their video's duration (:meth:`clamped_to`).
    durations: video -> seconds, once probed (:meth:`clamped_to`; the run's predictions are cut to them).
    """

    path: str
    format: str
    items: tuple[VideoText, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    clamped: int = 0
    durations: dict[str, float] | None = field(default=None, compare=False)

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

    def clamped_to(self, durations: dict[str, float], strict: bool = False) -> "VideoTexts":
        """Intervals cut to their video's duration (``durations``: video -> seconds; a video not in
        it, or 0, is left as it is), as the reference loaders do; a row whose interval starts at or
        after its video's end is skipped (with ``strict``: an :class:`AnnotationError` naming it)."""
        items, skipped, clamped = [], list(self.skipped), 0
        for item in self.items:
            duration = durations.get(item.video) or 0.0
            if item.interval is not None and duration > 0:
                start, end = item.interval
                if start >= duration:
                    why = f"starts at {start:g} s, at or after the video's end ({duration:g} s)"
                    if strict:
                        raise AnnotationError(f"{item.where}: the interval {start:g}-{end:g} {why}")
                    skipped.append((item.where, why))
                    continue
                if end > duration:
                    item = replace(item, interval=(start, float(duration)))
                    clamped += 1
            items.append(item)
        return replace(self, items=tuple(items), skipped=tuple(skipped), clamped=self.clamped + clamped,
                       durations=dict(durations))

    def summary(self, most: int = 20) -> str:
        """One line on the rows left out (``file:line``, or in a one-line JSON file the video and
        the sentence) and the intervals cut to their video ("" when neither happened)."""
        parts = []
        if self.skipped:
            listed = [f"{os.path.basename(where)} ({why})" for where, why in self.skipped[:most]]
            more = f"; and {len(self.skipped) - most} more" if len(self.skipped) > most else ""
            rows = "row" if len(self.skipped) == 1 else "rows"
            parts.append(f"skipped {len(self.skipped)} {rows} that cannot be used (strict=true refuses the file): "
                         + "; ".join(listed) + more)
        if self.clamped:
            parts.append(f"{self.clamped} interval{'s' if self.clamped > 1 else ''} cut to the video's duration")
        return "; ".join(parts)


class _Places:
    """Where a node of JSON file ``path`` is written: ``file:line``, or, in a file written on one
    line (its line numbers say nothing), ``file: <label>`` (e.g. ``train.json: v_x sentence 2``)."""

    def __init__(self, path: str, top):
        self.path, self.one_line = path, getattr(top, "lines", 0) == 1

    def __call__(self, node, label: str) -> str:
        return f"{self.path}: {label}" if self.one_line else f"{self.path}:{getattr(node, 'line', 0)}"


def _where(path: str, node) -> str:
    return f"{path}:{getattr(node, 'line', 0)}"


def _field(where: str, row, name: str, kind: type | tuple, what: str = ""):
    """``row[name]`` checked to be a ``kind``; a clear error naming ``where`` otherwise."""
    if not isinstance(row, dict):
        raise AnnotationError(f"{where}: expected a JSON object{what}, got {type(row).__name__}")
    if name not in row:
        raise AnnotationError(f"{where}: missing field {name!r}{what}")
    value = row[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise AnnotationError(f"{where}: field {name!r} must be {names}, got {value!r}")
    return value


Skipped = list  # (where, why) of the rows a reader leaves out; a reader given None refuses the first instead


def _interval(where: str, start: float, end: float, duration: float | None = None,
              skipped: Skipped | None = None) -> tuple[float, float] | None:
    """``(start, end)`` seconds cut to ``[0, duration]``; None for a row that cannot be used
    (start >= end, nothing after 0, a start past ``duration``): listed in ``skipped``, or, when
    ``skipped`` is None (strict), an :class:`AnnotationError` naming ``where``."""
    start, end = float(start), float(end)
    why = None
    if not end > start:
        why, message = f"start {start:g} >= end {end:g}", f"the interval must have start < end, got {start:g} {end:g}"
    elif end <= 0:
        why = message = f"the interval {start:g}-{end:g} ends before the video starts"
    elif duration is not None and start >= duration:
        why = message = f"the interval {start:g}-{end:g} starts after the video's duration {duration:g}"
    if why is not None:
        if skipped is None:
            raise AnnotationError(f"{where}: {message}")
        skipped.append((where, why))
        return None
    return max(start, 0.0), (min(end, duration) if duration is not None else end)


def _video(finder: VideoFinder, name: str, ext: str, names: tuple[str, ...] = ()) -> str:
    """The file of video ``name`` (or of one of ``names``) under the finder's root, by the shared
    resolver (:mod:`longvid.data.videos`: any video extension, ``ext`` first on ties; ``x.mov.mp4``
    for ``x.mov``); when none is there, the path it was expected at: ``root/name`` when ``name``
    has an extension, else ``root/name + ext``."""
    found = finder.find(name, names=names)
    if found is not None:
        return found
    return os.path.join(finder.root, name if os.path.splitext(name)[1] else name + ext)


def _activitynet_names(video_id: str) -> tuple[str, ...]:
    """ActivityNet videos are saved as ``v_<id>`` or ``<id>``: the other spelling of ``video_id``."""
    return (video_id[2:],) if video_id.startswith("v_") else ("v_" + video_id,)


# -- readers -----------------------------------------------------------------------------------
#
# Each reader takes ``(path, video_root, ext, skipped)``: rows that cannot be used are appended to
# ``skipped`` as ``(where, why)`` and left out; with ``skipped=None`` (strict) the first one is an error.


def read_charades_sta(path: str, video_root: str, ext: str = ".mp4", skipped: Skipped | None = None) -> list[VideoText]:
    """Charades-STA: ``<video id> <start> <end>##<sentence>`` a line (seconds). The released
    ``charades_sta_train.txt`` has 4 lines with start >= end (e.g. ``LEOL6 8.0 7.0``): skipped."""
    items, finder = [], VideoFinder(video_root, (ext,))
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
            interval = _interval(where, start, end, skipped=skipped)
            if interval is not None:
                items.append(VideoText(_video(finder, fields[0], ext), where, sentence.strip(), interval=interval))
    return items


def read_didemo(path: str, video_root: str, ext: str = ".mp4", skipped: Skipped | None = None) -> list[VideoText]:
    """DiDeMo: a list of ``{"video", "description", "times"}``; ``times`` holds each annotator's
    ``[first, last]`` 5-second segment; the target is the most common pair (``train_times``'s
    first when given), ``[first * 5, (last + 1) * 5]`` seconds (the run cuts the last segment to
    a shorter video). In the one-line released files a moment is named ``file: moment <k> (<video>)``."""
    rows = read_json(path)
    if not isinstance(rows, list):
        raise AnnotationError(f"{path}:1: a DiDeMo file is a JSON list of moments")
    place = _Places(path, rows)
    items, finder = [], VideoFinder(video_root, (ext,))
    for k, row in enumerate(rows, 1):
        where = place(row, f"moment {k}")
        video = _field(where, row, "video", str)
        where = place(row, f"moment {k} ({video})")
        description = _field(where, row, "description", str)
        times = row.get("train_times") or _field(where, row, "times", list)
        pairs = [tuple(t) for t in times if isinstance(t, list) and len(t) == 2 and all(isinstance(i, int) for i in t)]
        if not pairs or len(pairs) != len(times):
            raise AnnotationError(f"{where}: 'times' must be [[first, last], ...] segment indices, got {times!r}")
        first, last = Counter(pairs).most_common(1)[0][0]
        interval = _interval(where, first * DIDEMO_SEGMENT, (last + 1) * DIDEMO_SEGMENT, skipped=skipped)
        annotators = tuple(tuple(t) for t in (row.get("times") or times) if isinstance(t, list) and len(t) == 2)
        odd = next((t for t in annotators if not (isinstance(t[0], int) and isinstance(t[1], int) and 0 <= t[0] <= t[1] <= 5)), None)
        if interval is not None and odd is not None:  # DiDeMo's metric ranks the 21 spans of segments 0..5
            if skipped is None:
                raise AnnotationError(f"{where}: 'times' {list(odd)} is not a DiDeMo moment (first <= last in 0..5)")
            skipped.append((where, f"times {list(odd)} is not a DiDeMo moment"))
            interval = None
        if interval is not None:
            items.append(VideoText(_didemo_video(finder, video, ext), where, description.strip(), interval=interval,
                                   times=annotators))
    return items


def _didemo_video(finder: VideoFinder, name: str, ext: str) -> str:
    """DiDeMo names the original Flickr file (``.mov``, ``.avi``, ...): that file, else the AWS
    download script's ``<name>.mp4`` (``x.mov.mp4``), else a converted copy (``x.mp4``); when none
    is there, ``root/<name>``."""
    return finder.find(name) or os.path.join(finder.root, name)


def read_activitynet(path: str, video_root: str, ext: str = ".mp4", skipped: Skipped | None = None) -> list[VideoText]:
    """ActivityNet Captions: ``{"v_<id>": {"duration", "timestamps": [[s, e], ...], "sentences": [...]}}``,
    one row per sentence; an end past the duration is cut to it. The released files are one line
    of JSON: a sentence is named ``file: <video id> sentence <k>`` (the first is sentence 1);
    ``train.json``'s 4 sentences with start >= end (e.g. ``v_N7ppHQNikv8``) are skipped."""
    videos = read_json(path)
    if not isinstance(videos, dict):
        raise AnnotationError(f"{path}:1: an ActivityNet Captions file is a JSON object keyed by video id")
    place = _Places(path, videos)
    items, finder = [], VideoFinder(video_root, (ext,))
    for video_id, row in videos.items():
        where = place(row, video_id)
        duration = float(_field(where, row, "duration", (int, float)))
        stamps = _field(where, row, "timestamps", list)
        sentences = _field(where, row, "sentences", list)
        if len(stamps) != len(sentences):
            raise AnnotationError(f"{where}: {video_id} has {len(stamps)} timestamps for {len(sentences)} sentences")
        for k, (stamp, sentence) in enumerate(zip(stamps, sentences), 1):
            named = place(row, f"{video_id} sentence {k}")
            said = named if place.one_line else f"{named}: {video_id} sentence {k}"  # errors and skips name the sentence
            if not (isinstance(stamp, list) and len(stamp) == 2 and all(isinstance(t, (int, float)) for t in stamp)):
                raise AnnotationError(f"{said}: a timestamp must be [start, end] seconds, got {stamp!r}")
            if not isinstance(sentence, str) or not sentence.strip():
                raise AnnotationError(f"{said}: a sentence must be non-empty text, got {sentence!r}")
            interval = _interval(said, *stamp, duration=duration, skipped=skipped)
            if interval is not None:
                items.append(VideoText(_video(finder, video_id, ext, _activitynet_names(video_id)), named, sentence.strip(), interval=interval))
    return items


def read_moviechat(path: str, video_root: str, ext: str = ".mp4", skipped: Skipped | None = None) -> list[VideoText]:
    """MovieChat-1K: a video's JSON file, or a folder of them (read in name order). Breakpoint
    times are frame indices at ``info.fps``: asked at ``time / fps`` seconds."""
    files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".json")) if os.path.isdir(path) else [path]
    if not files:
        raise AnnotationError(f"{path}: no MovieChat-1K .json files in this folder")
    items, finder = [], VideoFinder(video_root, (ext,))
    for file in files:
        movie = read_json(file)
        place = _Places(file, movie)
        info = _field(place(movie, "the file"), movie, "info", dict)
        video = _video(finder, _field(place(info, "info"), info, "video_path", str), ext)
        fps = float(_field(place(info, "info"), info, "fps", (int, float), " (info)"))
        if not fps > 0:
            raise AnnotationError(f"{place(info, 'info')}: info.fps must be > 0, got {fps:g}")
        for group in ("global", "breakpoint"):
            for k, row in enumerate(movie.get(group, []), 1):
                where = place(row, f"{group} question {k}")
                question = _field(where, row, "question", str)
                answer = _field(where, row, "answer", (str, int, float))
                until = None
                if group == "breakpoint":
                    frame = _field(where, row, "time", (int, float))
                    if frame < 0:
                        raise AnnotationError(f"{where}: breakpoint time must be >= 0 (a frame index), got {frame}")
                    until = frame / fps
                items.append(VideoText(video, where, question.strip(), str(answer).strip(), until=until, group=group))
    return items


def read_videochatgpt(path: str, video_root: str, ext: str = ".mp4", skipped: Skipped | None = None) -> list[VideoText]:
    """Video-ChatGPT instruction data: a list of ``{"q", "a", "video_id"}`` (ActivityNet ids, ``v_...``)."""
    rows = read_json(path)
    if not isinstance(rows, list):
        raise AnnotationError(f"{path}:1: a Video-ChatGPT file is a JSON list of {{'q', 'a', 'video_id'}}")
    place = _Places(path, rows)
    items, finder = [], VideoFinder(video_root, (ext,))
    for k, row in enumerate(rows, 1):
        where = place(row, f"question {k}")
        video_id = _field(where, row, "video_id", str)
        where = place(row, f"question {k} ({video_id})")
        items.append(VideoText(_video(finder, video_id, ext, _activitynet_names(video_id)), where, _field(where, row, "q", str).strip(),
                               _field(where, row, "a", str).strip()))
    return items


def read_captions(path: str, video_root: str, ext: str = ".mp4", skipped: Skipped | None = None) -> list[VideoText]:
    """Video-caption pairs: a list of ``{"video", "caption"}`` with optional ``"start"``/``"end"`` seconds."""
    rows = read_json(path)
    if not isinstance(rows, list):
        raise AnnotationError(f"{path}:1: a caption file is a JSON list of {{'video', 'caption'}}")
    place = _Places(path, rows)
    items, finder = [], VideoFinder(video_root, (ext,))
    for k, row in enumerate(rows, 1):
        where = place(row, f"caption {k}")
        video, caption = _field(where, row, "video", str), _field(where, row, "caption", str)
        where = place(row, f"caption {k} ({video})")
        interval = None
        if "start" in row or "end" in row:
            interval = _interval(where, _field(where, row, "start", (int, float)), _field(where, row, "end", (int, float)),
                                 skipped=skipped)
            if interval is None:
                continue
        items.append(VideoText(_video(finder, video, ext), where, caption.strip(), interval=interval))
    return items


READERS: dict[str, Callable[..., list[VideoText]]] = {
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


def read_data(path: str, video_root: str | None = None, format: str = "auto", ext: str = ".mp4",
              strict: bool = False) -> VideoTexts:
    """Read annotation file (or MovieChat-1K folder) ``path``; videos under ``video_root``
    (default: the annotation's folder). Rows that cannot be used (an interval with start >= end)
    are left out and listed in ``skipped``; with ``strict`` the first one is an :class:`AnnotationError`."""
    if not os.path.exists(path):
        raise AnnotationError(f"{path}: no such annotation file")
    if format != "auto" and format not in READERS:
        raise LongvidError(f"format must be auto or one of {', '.join(FORMATS)}, got {format!r}")
    fmt = detect_format(path) if format == "auto" else format
    root = video_root or (path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)))
    skipped: Skipped | None = None if strict else []
    items = READERS[fmt](path, root, ext, skipped)
    if not items:
        left = f" ({len(skipped)} rows that cannot be used were skipped, the first {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise AnnotationError(f"{path}: no {KIND[fmt]} rows in this {fmt} file{left}")
    return VideoTexts(path, fmt, tuple(items), tuple(skipped or ()))


def video_durations(videos: list[str]) -> dict[str, float]:
    """Each video's duration in seconds from its header (:func:`longvid.video.probe`); a video that
    cannot be probed is left out (its intervals are not cut; reading its frames reports the error)."""
    from longvid.video import VideoError, probe

    durations = {}
    for video in videos:
        try:
            durations[video] = float(probe(video).duration)
        except (VideoError, OSError):
            continue
    return durations


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
