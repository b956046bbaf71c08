"""MeMViT end to end: the official tiny model's logits, presets, heads, state contract."""

import os

import numpy as np
import pytest
import torch

import longvid
from longvid.errors import LongvidError
from longvid.models.memvit import PRESETS, block_layout, build_model

REF = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "memvit_tiny")
REF = os.environ.get("LONGVID_MEMVIT_TINY", REF if os.path.isdir(REF) else "/work/shared/reference/memvit_tiny")


def _ref_clip(k: int) -> torch.Tensor:
    return torch.randn(1, 3, 16, 64, 64, generator=torch.Generator().manual_seed(k))


@pytest.mark.skipif(not os.path.isdir(REF), reason="reference data not available")
@pytest.mark.parametrize("outputs, boundary", [("outputs.npz", None), ("outputs_boundary3.npz", 3)])
def test_official_tiny_logits(outputs, boundary):
    """Load the official tiny checkpoint, stream its 8 clips, match its logits to 1e-5."""
    model = longvid.build_model("memvit_tiny", num_classes=10).eval()
    report = longvid.load_checkpoint(model, os.path.join(REF, "memvit_tiny.pyth"))
    assert report.ok and not report.adapted
    ref = np.load(os.path.join(REF, outputs))["logits"]  # (8, 1, 10)
    state = model.init_state(1)
    with torch.inference_mode():
        for k in range(8):
            if k == boundary:  # clips 3..7 are another video
                state = state.reset(torch.tensor([True]))
            logits, state = model(_ref_clip(k), state)
            np.testing.assert_allclose(logits.numpy(), ref[k], atol=1e-5, rtol=0)
