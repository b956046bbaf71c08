"""The LMM run dispatch: presets by family, and a one-line error for a family that is not installed."""

from __future__ import annotations

import importlib.util

import pytest

from longvid.errors import LongvidError
from longvid.engine import recipes as lmm_presets
from longvid import runs as lmm_run


def test_presets_are_routed_by_family(tmp_path):
    assert lmm_presets.family_of("malmm_tiny_lvu") == "malmm" and lmm_presets.family_of("malmm_nsa") == "malmm"
    assert lmm_presets.family_of("memvit_tiny_synthetic") is None and not lmm_run.is_lmm_preset("memvit_tiny_synthetic")
    config = tmp_path / "rewind_like.json"
    config.write_text("{}")
    assert lmm_presets.family_of(str(config)) is None  # a config file keeps its path, whatever its name
    assert {"malmm_lvu", "malmm_tiny_lvu", "malmm_youcook2", "malmm_tiny_nsa"} <= set(lmm_presets.names("malmm"))


@pytest.mark.skipif(importlib.util.find_spec("longvid.rewind.run") is not None, reason="ReWind runs are installed")
def test_a_missing_family_is_one_line():
    with pytest.raises(LongvidError, match=r"'rewind_tiny' is a rewind preset, but rewind training is not part of this installation"):
        lmm_run.train_lmm("rewind_tiny", [])
