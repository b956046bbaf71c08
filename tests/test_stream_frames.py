"""Frames, the step input of the frame-based stream models."""

import pytest
import torch

from longvid.errors import LongvidError
from longvid.core.stream import Frames, dummy_frames


def test_select_cat_and_checks():
    a, b = dummy_frames(2, 3, 8, seed=1), dummy_frames(1, 3, 8, seed=2)
    joined = Frames.cat([a, b])
    assert joined.batch_size == 3 and joined.num_frames == 3 and joined.valid is None
    assert torch.equal(joined.index_select(torch.tensor([2])).pixels, b.pixels)
    assert torch.equal(joined.timestamps[0], torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    padded = Frames(b.pixels, b.timestamps, torch.tensor([[True, True, False]]))
    mixed = Frames.cat([a, padded])
    assert mixed.valid.tolist() == [[True] * 3, [True] * 3, [True, True, False]]
    assert torch.equal(dummy_frames(2, 3, 8, seed=1).pixels, a.pixels)  # seeded, not the global RNG
    with pytest.raises(LongvidError, match="timestamps must be"):
        Frames(a.pixels, a.timestamps[:, :2])
    with pytest.raises(LongvidError, match="pixels must be"):
        Frames(a.pixels[:, :, :2], a.timestamps)
