"""Training augmentation (MeMViT A.2-A.3, as SlowFast): random short-side scale in
``[256, 340]`` then a random ``224`` crop and a horizontal flip -- one view drawn per stream
segment, so every clip of a segment (and the memory it writes) sees the same crop and flip.
Evaluation reads the center crop. For other clip sizes the scale range keeps its ratio to the
crop (``size * 256/224 .. size * 340/224``)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

SCALE = (256 / 224, 340 / 224)  # short side / crop


@dataclass(frozen=True)
class View:
    """One segment's view: the short side to read at, the crop's relative position (0..1 of
    the free room) and whether to mirror."""

    short_side: int
    x: float
    y: float
    flip: bool


@dataclass(frozen=True)
class ClipAugment:
    size: int  # crop side
    scale: tuple[float, float] = SCALE
    flip: bool = True

    def draw(self, rng: random.Random | None = None) -> View:
        """A random view from ``rng`` (default: Python's global generator, which training
        checkpoints save, so a resumed run draws the same views)."""
        rng = rng or random
        low, high = round(self.size * self.scale[0]), round(self.size * self.scale[1])
        return View(rng.randint(max(low, self.size), max(high, self.size)), rng.random(), rng.random(), self.flip and rng.random() < 0.5)

    def apply(self, clip: torch.Tensor, view: View) -> torch.Tensor:
        """``(C, T, H, W)`` read at ``view.short_side`` -> ``(C, T, size, size)``, cropped and maybe mirrored."""
        height, width = clip.shape[-2:]
        top = int(view.y * (height - self.size) + 0.5)
        left = int(view.x * (width - self.size) + 0.5)
        out = clip[..., top : top + self.size, left : left + self.size]
        return out.flip(-1) if view.flip else out

    def reader_options(self, options: dict, view: View) -> dict:
        """ClipReader options that read a segment at the view's scale, uncropped."""
        return {**options, "short_side": view.short_side, "crop": None}


def training_augment(config) -> ClipAugment | None:  # config: longvid.memvit.run_config.MeMViTRunConfig
    """The training clips' augmentation (``config.augment``), scaled to ``config.size``."""
    return ClipAugment(config.size) if config.augment else None
