"""Training augmentation: one random scale/crop/flip per stream segment, center crop otherwise."""

import random

import numpy as np
import torch

from longvid.memvit.augment import ClipAugment, View
from longvid.memvit.windows import Window, WindowClips
from longvid.video import ClipReader, write_video
from longvid.data.annotations import Sample
from longvid.data.sources import FileVideos


def test_apply_equals_slicing_and_mirroring():
    clip = torch.arange(2 * 3 * 10 * 14, dtype=torch.float32).view(2, 3, 10, 14)
    augment = ClipAugment(8)
    out = augment.apply(clip, View(10, x=0.5, y=1.0, flip=True))
    assert torch.equal(out, clip[..., 2:10, 3:11].flip(-1))
    assert torch.equal(augment.apply(clip, View(10, 0.0, 0.0, False)), clip[..., :8, :8])


def test_draws_stay_in_the_scaled_range_and_flip_half_the_time():
    augment = ClipAugment(224)
    views = [augment.draw(random.Random(seed)) for seed in range(400)]
    assert min(v.short_side for v in views) >= 256 and max(v.short_side for v in views) <= 340
    assert 150 < sum(v.flip for v in views) < 250
    assert {ClipAugment(32).draw(random.Random(s)).short_side for s in range(200)} <= set(range(37, 50))


def test_one_view_per_segment(tmp_path):
    path = str(tmp_path / "v.mp4")
    rng = np.random.default_rng(0)
    write_video(path, (rng.integers(0, 255, (24, 40, 3), dtype=np.uint8) for _ in range(24)), fps=8, codec="ffv1", pix_fmt="yuv444p")
    augment = ClipAugment(16)
    options = dict(clip_frames=4, stride=1, short_side=16, crop=16)
    for source in (FileVideos([Sample(path)], augment=augment, **options), WindowClips([Window(path, 0.0, 3.0, 6, 2, {})], augment, **options)):
        random.seed(5)
        clips = list(source.clips(0))
        random.seed(5)
        view = augment.draw()
        plain = [c.frames for c in ClipReader(path, clip_frames=4, stride=1, short_side=view.short_side, crop=None)]
        assert len(clips) == 6
        for clip, full in zip(clips, plain):  # every clip of the segment: the same crop and flip
            assert torch.equal(clip, augment.apply(full, view))
    center = list(FileVideos([Sample(path)], **options).clips(0))
    assert all(c.shape == (3, 4, 16, 16) for c in center)
