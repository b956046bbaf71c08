import math

import pytest
import torch

from longvid.video.transforms import (
    KINETICS_MEAN,
    KINETICS_STD,
    center_crop,
    normalize,
    resize,
    resize_short_side,
    short_side_size,
    to_model_input,
)


def naive_bilinear(image: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Loop implementation of bilinear resizing with half-pixel centres (align_corners=False)."""
    channels, in_h, in_w = image.shape
    out = torch.empty(channels, out_h, out_w, dtype=torch.float64)
    for y in range(out_h):
        sy = max((y + 0.5) * in_h / out_h - 0.5, 0.0)
        y0 = min(int(math.floor(sy)), in_h - 1)
        y1 = min(y0 + 1, in_h - 1)
        wy = sy - y0
        for x in range(out_w):
            sx = max((x + 0.5) * in_w / out_w - 0.5, 0.0)
            x0 = min(int(math.floor(sx)), in_w - 1)
            x1 = min(x0 + 1, in_w - 1)
            wx = sx - x0
            for c in range(channels):
                top = image[c, y0, x0] * (1 - wx) + image[c, y0, x1] * wx
                bottom = image[c, y1, x0] * (1 - wx) + image[c, y1, x1] * wx
                out[c, y, x] = top * (1 - wy) + bottom * wy
    return out


def test_short_side_size():
    assert short_side_size(120, 160, 224) == (224, 299)  # 160 * 224 / 120 = 298.67
    assert short_side_size(360, 640, 224) == (224, 398)
    assert short_side_size(47, 31, 224) == (340, 224)  # portrait
    assert short_side_size(50, 50, 10) == (10, 10)


def test_resize_matches_naive_bilinear_when_enlarging():
    image = torch.rand(2, 5, 7, dtype=torch.float64)
    out = resize(image[None], (9, 11))[0]
    torch.testing.assert_close(out, naive_bilinear(image, 9, 11), atol=1e-12, rtol=0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_resize_uint8_within_one_of_rounded_float(channels_last):
    image = torch.randint(0, 256, (1, 3, 6, 8), dtype=torch.uint8)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    out = resize(image, (12, 16))
    assert out.dtype == torch.uint8
    expected = naive_bilinear(image[0].double(), 12, 16).round()
    assert (out[0].double() - expected).abs().max() <= 1


def test_shrinking_keeps_constant_image_constant():
    image = torch.full((2, 3, 40, 60), 0.25)
    out = resize_short_side(image, 10)
    assert out.shape == (2, 3, 10, 15)
    torch.testing.assert_close(out, torch.full_like(out, 0.25))


def test_center_crop_matches_slicing():
    frames = torch.arange(2 * 3 * 7 * 10).reshape(2, 3, 7, 10)
    out = center_crop(frames, (4, 5))
    assert torch.equal(out, frames[:, :, 1:5, 2:7])  # top = (7-4)//2, left = (10-5)//2
    assert center_crop(frames, 7).shape[-2:] == (7, 7)
    with pytest.raises(ValueError, match="larger than the frame"):
        center_crop(frames, 8)


def test_normalize_matches_loop():
    frames = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    out = normalize(frames, KINETICS_MEAN, (0.2, 0.25, 0.3))
    for c, (m, s) in enumerate(zip(KINETICS_MEAN, (0.2, 0.25, 0.3))):
        expected = (frames[:, c].double() / 255 - m) / s
        torch.testing.assert_close(out[:, c].double(), expected, atol=1e-5, rtol=0)


def test_to_model_input_order_and_layout():
    frames = torch.randint(0, 256, (3, 30, 50, 3), dtype=torch.uint8)  # (T, H, W, C)
    out = to_model_input(frames, short_side=40, crop=32)
    assert out.shape == (3, 3, 32, 32)  # (C, T, H, W)
    manual = normalize(center_crop(resize_short_side(frames.permute(0, 3, 1, 2), 40), 32), KINETICS_MEAN, KINETICS_STD)
    torch.testing.assert_close(out, manual.permute(1, 0, 2, 3))
    raw = to_model_input(frames, short_side=None, crop=None, mean=None, std=None)
    torch.testing.assert_close(raw, frames.permute(3, 0, 1, 2).float() / 255)


def test_uint8_output_is_the_unnormalized_pixels():
    frames = torch.randint(0, 256, (3, 30, 50, 3), dtype=torch.uint8)
    raw = to_model_input(frames, short_side=40, crop=32, mean=None, std=None, dtype=torch.uint8)
    assert raw.dtype == torch.uint8 and raw.shape == (3, 3, 32, 32)
    scaled = to_model_input(frames, short_side=40, crop=32, mean=None, std=None)
    torch.testing.assert_close(raw.float() / 255, scaled)
    with pytest.raises(ValueError, match="cannot be normalized"):
        to_model_input(frames, dtype=torch.uint8)
