"""The run dispatch of the registry: MA-LMM and ReWind recipes go to their family's run module."""

import pytest

from longvid import registry
from longvid.errors import LongvidError


def test_presets_are_routed_by_family(tmp_path):
    assert registry.run_family("malmm_tiny_lvu") == "malmm" and registry.run_family("malmm_nsa") == "malmm"
    assert registry.run_family("memvit_tiny_synthetic") is None
    config = tmp_path / "rewind_like.json"
    config.write_text("{}")
    assert registry.run_family(str(config)) is None  # a config file keeps its path, whatever its name
    malmm = {info.name for info in registry.list_recipes() if info.family == "malmm"}
    assert {"malmm_lvu", "malmm_tiny_lvu", "malmm_youcook2", "malmm_tiny_nsa"} <= malmm


def test_an_unknown_rewind_name_gets_rewinds_error():
    assert registry.run_family("rewind_nope") == "rewind"
    with pytest.raises(LongvidError, match=r"unknown ReWind run preset 'rewind_nope': choose from rewind_paper, rewind_tiny"):
        registry.train("rewind_nope", [])
