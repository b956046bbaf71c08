"""What the frame-based stream models (MA-LMM, ReWind) take per step: :class:`Frames`.

See ``docs/streams.md`` for the whole contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from longvid.errors import LongvidError


@dataclass(frozen=True)
class Frames:
    """One step of ``B`` streams: ``T`` frames each.

    pixels:     ``(B, T, 3, H, W)`` float in [0, 1], any size (the model's encoder resizes).
    timestamps: ``(B, T)`` float64 seconds of stream time.
    valid:      ``(B, T)`` bool or None (all valid); False marks padding after a stream's
                last frame, which leaves that stream's state as it was.
    """

    pixels: torch.Tensor
    timestamps: torch.Tensor
    valid: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.pixels.dim() != 5 or self.pixels.shape[2] != 3:
            raise LongvidError(f"Frames.pixels must be (B, T, 3, H, W), got {tuple(self.pixels.shape)}")
        if tuple(self.timestamps.shape) != tuple(self.pixels.shape[:2]):
            raise LongvidError(f"Frames.timestamps must be (B, T) = {tuple(self.pixels.shape[:2])}, got {tuple(self.timestamps.shape)}")
        if self.valid is not None and tuple(self.valid.shape) != tuple(self.pixels.shape[:2]):
            raise LongvidError(f"Frames.valid must be (B, T) = {tuple(self.pixels.shape[:2])}, got {tuple(self.valid.shape)}")

    @property
    def batch_size(self) -> int:
        return self.pixels.shape[0]

    @property
    def num_frames(self) -> int:
        return self.pixels.shape[1]

    def valid_mask(self) -> torch.Tensor:
        """``(B, T)`` bool, all True when ``valid`` is None."""
        if self.valid is None:
            return torch.ones(self.pixels.shape[:2], dtype=torch.bool, device=self.pixels.device)
        return self.valid

    def index_select(self, index: torch.Tensor) -> "Frames":
        """The streams ``index`` (rows of the batch)."""
        index = torch.as_tensor(index, device=self.pixels.device)
        valid = None if self.valid is None else self.valid[index]
        return Frames(self.pixels[index], self.timestamps[index.to(self.timestamps.device)], valid)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Frames":
        """Move to ``device``; ``dtype`` applies to the pixels only."""
        valid = None if self.valid is None else self.valid.to(device)
        return Frames(self.pixels.to(device=device, dtype=dtype), self.timestamps.to(device), valid)

    @classmethod
    def cat(cls, parts: Sequence["Frames"]) -> "Frames":
        """The streams of ``parts`` as one batch (same ``T`` and frame size)."""
        valid = None
        if any(p.valid is not None for p in parts):
            valid = torch.cat([p.valid_mask() for p in parts])
        return cls(torch.cat([p.pixels for p in parts]), torch.cat([p.timestamps for p in parts]), valid)


def dummy_frames(batch_size: int, num_frames: int, size: int, seed: int = 0, device=None, fps: float = 1.0) -> Frames:
    """Random frames ``(B, T, 3, size, size)`` at ``fps`` from t = 0 (values from ``seed``; the
    global RNG is not touched), for ``dummy_inputs`` of frame-based models."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(batch_size, num_frames, 3, size, size, generator=generator)
    times = (torch.arange(num_frames, dtype=torch.float64) / fps).expand(batch_size, -1).clone()
    return Frames(pixels, times).to(device)
