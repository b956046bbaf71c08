"""Clip windows: stream items made of consecutive clips of one long video, the first
``context`` of which only build memory (MeMViT's memory of the preceding clips of the same
video, read sequentially) and the rest carry the loss and the score.

EPIC-KITCHENS-100 uses them for classification (clips inside each action segment, preceded
by the clips before it) and anticipation (one clip ending ``tau_a`` seconds before the
segment starts, preceded by the clips before it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import torch


@dataclass(frozen=True)
class Window:
    """``clips`` consecutive clips of ``video`` read from ``start`` to ``end`` seconds (the last
    clip padded when the range ends inside it); the first ``context`` only write memory.

    targets: head -> class index (-1: not scored for that head). key: the row's id
    (``narration_id``); meta: what the metrics need (participant, verb, noun, ...)."""

    video: str
    start: float
    end: float
    clips: int
    context: int
    targets: dict[str, int]
    key: str = ""
    meta: dict = field(default_factory=dict, compare=False)


def classification_window(video: str, start: float, end: float, span: float, context: int, duration: float | None,
                          targets: dict[str, int], key: str = "", meta: dict | None = None) -> Window:  # fmt: skip
    """Clips inside the segment ``[start, end]``: ``max(1, floor(length / span))`` clips of
    ``span`` seconds centered on it (moved inside the video), after up to ``context`` clips
    that precede them."""
    count = max(1, int((end - start) // span + 1e-9))
    first = max(0.0, (start + end) / 2 - count * span / 2)
    if duration is not None:
        first = max(0.0, min(first, duration - count * span))
    before = min(context, int(first // span + 1e-9))
    begin = first - before * span
    stop = first + count * span
    if duration is not None:
        stop = min(stop, duration)
    return Window(video, begin, stop, before + count, before, targets, key, meta or {})


def anticipation_window(video: str, start: float, tau_a: float, span: float, context: int, targets: dict[str, int],
                        key: str = "", meta: dict | None = None) -> Window | None:  # fmt: skip
    """One observed clip ending ``tau_a`` seconds before the segment ``start`` (shorter and
    padded when the video starts later than a clip before it), after up to ``context``
    clips that precede it; None when the segment starts within ``tau_a`` of the video start."""
    observed_end = start - tau_a
    if observed_end <= 0:
        return None
    first = max(0.0, observed_end - span)
    before = min(context, int(first // span + 1e-9))
    return Window(video, first - before * span, observed_end, before + 1, before, targets, key, meta or {})


class WindowClips:
    """A :class:`~longvid.data.sources.ClipSource` over :class:`Window` items.

    ``scored(item, clip)``: whether clip ``clip`` of item ``item`` carries the loss and the
    score (the clips after the context). ``augment`` (a
    :class:`~longvid.memvit.augment.ClipAugment`): one random view per ``clips()`` call (one
    stream segment), else the readers' center crop."""

    def __init__(self, windows: list[Window], augment=None, **reader_options):
        self.windows = list(windows)
        self.reader_options = reader_options
        self.augment = augment

    def __len__(self) -> int:
        return len(self.windows)

    def num_clips(self, video: int) -> int:
        return self.windows[video].clips

    def scored(self, video: int, clip: int) -> bool:
        return clip >= self.windows[video].context

    def clips(self, video: int, first: int = 0) -> Iterator[torch.Tensor]:
        from longvid.video.reader import ClipReader

        window = self.windows[video]
        options, view = self.reader_options, None
        if self.augment is not None:
            view = self.augment.draw()
            options = self.augment.reader_options(options, view)
        reader = ClipReader(window.video, start=window.start, end=window.end, tail="pad", **options)
        for clip in reader:
            if clip.index >= window.clips:
                return
            if clip.index >= first:
                yield clip.frames if view is None else self.augment.apply(clip.frames, view)

    def targets(self, video: int) -> dict[str, torch.Tensor]:
        return {head: torch.tensor(value) for head, value in self.windows[video].targets.items()}


def clip_seconds(clip_frames: int, stride: int, fps: float) -> float:
    """Seconds one clip of ``clip_frames`` frames every ``stride`` decoded frames covers."""
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be > 0, got {fps}")
    return clip_frames * stride / fps
