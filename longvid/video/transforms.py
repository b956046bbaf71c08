"""Tensor transforms for video clips (no torchvision).

All functions take frames shaped ``(T, C, H, W)`` (uint8 or float) and return the
same layout, except :func:`to_model_input`, which produces the model layout
``(C, T, H, W)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

# Kinetics statistics used by PySlowFast / MeMViT (inputs scaled to [0, 1] first).
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)
# CLIP / EVA-CLIP statistics used by the LMMs' image encoders.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """The (height, width) after scaling so that the shorter side is ``short_side``.

    The longer side is rounded to the nearest integer, as PySlowFast does.
    """
    if height <= width:
        return short_side, max(1, int(round(width * short_side / height)))
    return max(1, int(round(height * short_side / width))), short_side


def resize(frames: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """Bilinear resize (half-pixel centres) of ``(T, C, H, W)`` frames to ``size = (H', W')``.

    uint8 frames are resized by PyTorch's uint8 kernels (fast for the channels-last
    layout that decoded ``(T, H, W, C)`` frames have once permuted) and stay uint8,
    within 1 of the rounded float result. ``antialias`` only has an effect when shrinking.
    """
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    shrinking = size[0] < frames.shape[-2] or size[1] < frames.shape[-1]
    if frames.dtype in (torch.bfloat16, torch.float16) and frames.device.type == "cpu":  # no CPU kernel: resize in float32
        resized = F.interpolate(frames.float(), size=size, mode="bilinear", align_corners=False, antialias=antialias and shrinking)
        return resized.to(frames.dtype)
    return F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=antialias and shrinking)


def resize_short_side(frames: torch.Tensor, short_side: int, antialias: bool = True) -> torch.Tensor:
    """Resize ``(T, C, H, W)`` frames so the shorter side equals ``short_side``."""
    return resize(frames, short_side_size(frames.shape[-2], frames.shape[-1], short_side), antialias)


def center_crop(frames: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Center crop ``(T, C, H, W)`` frames to ``size`` (an int for a square)."""
    crop_h, crop_w = (size, size) if isinstance(size, int) else size
    height, width = frames.shape[-2:]
    if crop_h > height or crop_w > width:
        raise ValueError(f"crop {crop_h}x{crop_w} is larger than the frame {height}x{width}")
    top = (height - crop_h) // 2
    left = (width - crop_w) // 2
    return frames[..., top : top + crop_h, left : left + crop_w]


def normalize(frames: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Scale uint8 frames to [0, 1] (float frames are taken as already scaled),
    then subtract ``mean`` and divide by ``std`` per channel. ``(T, C, H, W)``."""
    x = frames.float().div_(255.0) if frames.dtype == torch.uint8 else frames.float()
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def resize_and_crop(
    frames: torch.Tensor, short_side: int | None = 224, crop: int | tuple[int, int] | None = 224
) -> torch.Tensor:
    """uint8 ``(T, H, W, C)`` frames -> ``(T, H', W', C)``: short-side resize, then center crop
    (``None`` skips a step). Each frame is resized on its own, so resizing frames one at a
    time as they are decoded gives the same pixels as resizing a whole clip."""
    x = frames.permute(0, 3, 1, 2)  # (T, C, H, W), channels-last in memory
    if short_side is not None:
        x = resize_short_side(x, short_side)
    if crop is not None:
        x = center_crop(x, crop)
    return x.permute(0, 2, 3, 1)


def to_model_input(
    frames: torch.Tensor,
    short_side: int | None = 224,
    crop: int | tuple[int, int] | None = 224,
    mean: Sequence[float] | None = KINETICS_MEAN,
    std: Sequence[float] | None = KINETICS_STD,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 ``(T, H, W, C)`` frames -> float ``(C, T, H', W')`` model input.

    Resize (short side) first, then center crop, then normalize; ``None`` skips a step.
    Without normalization the output is scaled to [0, 1]. ``dtype=torch.uint8`` returns
    the resized, cropped uint8 pixels (normalize later, e.g. on the GPU).
    """
    if dtype not in (torch.float32, torch.uint8):
        raise ValueError(f"dtype must be torch.float32 or torch.uint8, got {dtype}")
    if dtype == torch.uint8 and (mean is not None or std is not None):
        raise ValueError("uint8 output cannot be normalized: pass mean=None, std=None")
    x = resize_and_crop(frames, short_side, crop).permute(0, 3, 1, 2)  # (T, C, H', W'), channels-last in memory
    planar = torch.empty((x.shape[1], x.shape[0], x.shape[2], x.shape[3]), dtype=x.dtype)  # (C, T, H', W')
    planar.copy_(x.permute(1, 0, 2, 3))  # the layout change, on the small uint8 data
    if dtype == torch.uint8:
        return planar
    return scale_and_normalize(planar, mean, std)


def scale_and_normalize(pixels: torch.Tensor, mean: Sequence[float] | None = KINETICS_MEAN,
                        std: Sequence[float] | None = KINETICS_STD) -> torch.Tensor:
    """uint8 (or [0, 1] float) pixels ``(..., C, T, H, W)`` -> float32 ``(x / 255 - mean) / std``
    per channel (only scaled without ``mean``/``std``), on the pixels' device. The same
    arithmetic wherever it runs: normalizing a uint8 clip later (on the GPU, or after a
    process hand-over) gives bitwise the model input the reader's float clips have on CPU."""
    scale = 255.0 if pixels.dtype == torch.uint8 else 1.0
    if mean is None or std is None:
        return torch.mul(pixels, 1.0 / scale)  # converts to float32 in the same pass
    # (x / scale - mean) / std, folded into one subtraction and one multiplication
    shift = torch.tensor(mean, dtype=torch.float32).mul_(scale).view(-1, 1, 1, 1).to(pixels.device)
    inverse = torch.tensor(std, dtype=torch.float32).mul_(scale).reciprocal_().view(-1, 1, 1, 1).to(pixels.device)
    return pixels.to(torch.float32).sub_(shift).mul_(inverse)
