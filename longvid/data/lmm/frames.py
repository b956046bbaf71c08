"""MA-LMM's frame sampling from video files: ``num_frames`` frames spread uniformly over a
video or a segment of it.

MA-LMM reads frames pre-extracted at 10 fps and takes indices ``round(linspace(first, last,
T))`` (``first``/``last``: the segment's first and last frame). Here the same positions are
taken in time: T target times ``linspace(start, last, T)`` (``last``: the segment end, or the
video's last frame), each given the decoded frame nearest to it, in one decoding pass that
holds only T frames.
"""

from __future__ import annotations

import os

import torch

from longvid.errors import LongvidError
from longvid.video.transforms import resize


def uniform_times(start: float, last: float, count: int) -> torch.Tensor:
    """``count`` times from ``start`` to ``last`` inclusive, evenly spaced: ``(count,)`` float64."""
    if count < 1:
        raise LongvidError(f"num_frames must be >= 1, got {count}")
    return torch.linspace(start, max(start, last), count, dtype=torch.float64)


def read_uniform_frames(path: str | os.PathLike, count: int, size: int, start: float | None = None,
                        end: float | None = None) -> torch.Tensor:
    """``count`` frames uniformly over ``[start, end]`` seconds of ``path`` (None: the video's
    first / last frame), each the decoded frame nearest its target time, resized to
    ``size x size`` (aspect not kept, as MA-LMM's eval transform). Returns uint8 ``(T, 3, size, size)``."""
    from longvid.video import ClipReader, probe

    info = probe(path)
    frame_time = 1.0 / info.fps if info.fps else 0.0
    last_frame = max(0.0, info.duration - frame_time)
    first = 0.0 if start is None else min(float(start), last_frame)
    last = last_frame if end is None else min(float(end), last_frame)
    targets = uniform_times(first, last, count)  # (T,)
    reader = ClipReader(path, clip_frames=1, stride=1, short_side=size, crop=None, mean=None, std=None, dtype=torch.uint8,
                        tail="drop", start=max(0.0, first - frame_time), end=last + 2 * frame_time + 1e-3)
    best_distance = torch.full((count,), float("inf"), dtype=torch.float64)
    chosen: list[torch.Tensor | None] = [None] * count
    for clip in reader:  # one frame per clip: (3, 1, H, W) uint8
        distance = (targets - float(clip.timestamps[0])).abs()
        closer = (distance < best_distance).nonzero().flatten().tolist()
        if closer:
            frame = resize(clip.frames.permute(1, 0, 2, 3), (size, size))[0]  # (3, size, size)
            for i in closer:
                chosen[i], best_distance[i] = frame, distance[i]
    if chosen[0] is None:
        raise LongvidError(f"{os.fspath(path)}: no frames could be read between {first:g} s and {last:g} s")
    return torch.stack([frame for frame in chosen])  # (T, 3, size, size)
