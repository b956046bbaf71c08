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


def segment_times(start: float, end: float, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """MA-LMM's training sampling in time: ``[start, end)`` cut into ``count`` equal segments and
    one time drawn uniformly in each (``generator``: None uses the global RNG). ``(count,)`` float64."""
    if count < 1:
        raise LongvidError(f"num_frames must be >= 1, got {count}")
    bounds = torch.linspace(start, max(start, end), count + 1, dtype=torch.float64)
    return bounds[:-1] + torch.rand(count, generator=generator, dtype=torch.float64) * (bounds[1:] - bounds[:-1])


def _span(path: str | os.PathLike, start: float | None, end: float | None):
    """The video's info, one frame's duration and ``[first, last]``: the requested range clipped to
    the video's first and last frame times."""
    from longvid.video import probe

    info = probe(path)
    frame_time = 1.0 / info.fps if info.fps else 0.0
    last_frame = max(0.0, info.duration - frame_time)
    first = 0.0 if start is None else min(float(start), last_frame)
    last = last_frame if end is None else min(float(end), last_frame)
    return frame_time, first, last


def read_frames_at(path: str | os.PathLike, times: torch.Tensor, short_side: int) -> torch.Tensor:
    """The decoded frames nearest to ``times`` ``(T,)`` (seconds, any order), resized so the shorter
    side is ``short_side`` (aspect kept), in one decoding pass holding T frames: uint8 ``(T, 3, h, w)``."""
    from longvid.video import ClipReader

    frame_time, _, _ = _span(path, None, None)
    times = times.to(torch.float64)
    lo, hi = float(times.min()), float(times.max())
    reader = ClipReader(path, clip_frames=1, stride=1, short_side=short_side, crop=None, mean=None, std=None, dtype=torch.uint8,
                        tail="drop", start=max(0.0, lo - frame_time), end=hi + 2 * frame_time + 1e-3)
    best_distance = torch.full(times.shape, float("inf"), dtype=torch.float64)
    chosen: list[torch.Tensor | None] = [None] * len(times)
    for clip in reader:  # one frame per clip: (3, 1, h, w) uint8
        distance = (times - float(clip.timestamps[0])).abs()
        for i in (distance < best_distance).nonzero().flatten().tolist():
            chosen[i], best_distance[i] = clip.frames[:, 0], distance[i]
    if any(frame is None for frame in chosen):
        raise LongvidError(f"{os.fspath(path)}: no frames could be read between {lo:g} s and {hi:g} s")
    return torch.stack(chosen)  # (T, 3, h, w)


def read_uniform_frames(path: str | os.PathLike, count: int, size: int, start: float | None = None,
                        end: float | None = None) -> torch.Tensor:
    """``count`` frames uniformly over ``[start, end]`` seconds of ``path`` (None: the video's
    first / last frame), each the decoded frame nearest its target time, resized to
    ``size x size`` (aspect not kept, as MA-LMM's eval transform). Returns uint8 ``(T, 3, size, size)``."""
    _, first, last = _span(path, start, end)
    frames = read_frames_at(path, uniform_times(first, last, count), size)
    return resize(frames, (size, size))


def read_training_frames(path: str | os.PathLike, count: int, size: int, start: float | None = None, end: float | None = None,
                         sampling: str = "random", augment: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """A training draw of ``count`` frames, as MA-LMM's training datasets and transform make it:
    ``sampling="random"``: one frame at a random time in each of ``count`` equal segments
    (:func:`segment_times`), ``"uniform"``: :func:`uniform_times`; ``augment``: one random
    resized crop (area 0.5-1, aspect 3/4-4/3) and a horizontal flip with probability 1/2 for all
    frames, from frames read at a short side of ``size * 256 / 224`` (MA-LMM's frames are
    256 high for a 224 input); otherwise a square resize. Returns uint8 ``(T, 3, size, size)``."""
    frame_time, first, last = _span(path, start, end)
    if sampling == "random":
        times = segment_times(first, last + frame_time, count, generator).clamp_max(last)
    elif sampling == "uniform":
        times = uniform_times(first, last, count)
    else:
        raise LongvidError(f"train_sampling must be 'random' or 'uniform', got {sampling!r}")
    if not augment:
        return resize(read_frames_at(path, times, size), (size, size))
    frames = read_frames_at(path, times, max(size, round(size * 256 / 224)))
    return random_resized_crop(frames, size, generator=generator)


def random_resized_crop(frames: torch.Tensor, size: int, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3),
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """One random crop of area ``scale`` x the frame and aspect in ``ratio`` (log-uniform), the same
    for every frame (torchvision's ``RandomResizedCrop.get_params``: 10 tries, then the centre crop
    of the nearest allowed aspect), resized to ``size x size``, then flipped left-right with
    probability 1/2. frames ``(T, 3, H, W)`` -> ``(T, 3, size, size)``."""
    import math

    H, W = frames.shape[-2:]
    area = H * W
    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))
    for _ in range(10):
        target = area * uniform(*scale)
        aspect = math.exp(uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= W and 0 < h <= H:
            top = int(torch.randint(0, H - h + 1, (), generator=generator))
            left = int(torch.randint(0, W - w + 1, (), generator=generator))
            break
    else:
        aspect = W / H
        w, h = (round(H * ratio[1]), H) if aspect > ratio[1] else ((W, round(W / ratio[0])) if aspect < ratio[0] else (W, H))
        top, left = (H - h) // 2, (W - w) // 2
    crop = resize(frames[..., top : top + h, left : left + w], (size, size))
    return crop.flip(-1) if float(torch.rand((), generator=generator)) < 0.5 else crop
