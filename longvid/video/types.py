"""The types every video module shares: a clip, and the errors and warnings of reading one.

Kept apart from the decoder so the reader and its decoding worker process both import
them from below (neither imports the other's module for them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from longvid.errors import LongvidError


class VideoError(LongvidError):
    """A video cannot be read. ``str(err)`` is one line: ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class VideoDecodeWarning(UserWarning):
    """A video stopped decoding before its end (truncated or corrupt data)."""


@dataclass(frozen=True)
class VideoDamage:
    """How a pass over a damaged video went.

    reason:         why it counts as damaged (a decoder error, frames lost, an early end).
    decoded_until:  the time (seconds from the video's start) of the last decoded frame.
    stopped_early:  decoding ended before the end of the video (or of the requested range).
    """

    reason: str
    decoded_until: float
    stopped_early: bool


@dataclass
class Clip:
    """One clip of a stream.

    frames:      float tensor ``(C, T, H, W)``, model-ready (uint8 with ``dtype=torch.uint8``).
    index:       position of the clip in the stream (0, 1, ...).
    start, end:  seconds covered: ``start`` is the first frame's time, ``end`` the
                 time the next clip starts (the last frame's end for the final clip).
    timestamps:  float64 tensor ``(T,)``, the time of each sampled frame
                 (padded frames repeat the last real one).
    num_valid:   how many of the ``T`` frames are real (``< T`` for a padded tail).
    """

    frames: torch.Tensor
    index: int
    start: float
    end: float
    timestamps: torch.Tensor
    num_valid: int
