"""Generated videos: seeded scenes of moving shapes, written with PyAV."""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from longvid.video.writer import write_video


def moving_shapes(
    seconds: float, fps: float = 30.0, width: int = 160, height: int = 120, num_shapes: int = 3, seed: int = 0
) -> Iterator[np.ndarray]:
    """Frames ``(H, W, 3)`` uint8 of coloured squares bouncing over a noisy background."""
    rng = np.random.default_rng(seed)
    size = max(4, min(width, height) // 8)
    position = rng.uniform([0, 0], [width - size, height - size], size=(num_shapes, 2))
    velocity = rng.uniform(-3, 3, size=(num_shapes, 2))
    colours = rng.integers(64, 256, size=(num_shapes, 3), dtype=np.uint8)
    background = rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
    for _ in range(int(round(seconds * fps))):
        frame = background.copy()
        for (x, y), colour in zip(position.astype(int), colours):
            frame[y : y + size, x : x + size] = colour
        yield frame
        position += velocity
        for axis, limit in ((0, width - size), (1, height - size)):
            bounced = (position[:, axis] < 0) | (position[:, axis] > limit)
            velocity[bounced, axis] *= -1
            position[:, axis] = position[:, axis].clip(0, limit)


def write_demo_video(
    path: str | os.PathLike, seconds: float = 20.0, fps: float = 30.0, width: int = 160, height: int = 120, seed: int = 0
) -> int:
    """Write a moving-shapes video; returns the number of frames written."""
    return write_video(path, moving_shapes(seconds, fps, width, height, seed=seed), fps=fps)
