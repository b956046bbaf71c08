"""``longvid train`` / ``longvid eval`` for the LMM families: dispatch by the preset's family.

Each family's run module exports ``train(config_name, overrides, resume, progress)`` and
``evaluate(config_name, overrides, checkpoint, progress, predictions)``:
:mod:`longvid.malmm.run` for MA-LMM, ``longvid.rewind.run`` for ReWind.
"""

from __future__ import annotations

import importlib
from typing import Sequence

from longvid.errors import LongvidError
from longvid.engine import recipes as lmm_presets


def is_lmm_preset(name: str) -> bool:
    return lmm_presets.family_of(name) is not None


def _family_module(name: str):
    family = lmm_presets.family_of(name)
    if family is None:
        raise LongvidError(f"{name!r} is not an LMM run preset: choose from {', '.join(lmm_presets.names())}")
    module = lmm_presets.FAMILY_MODULES[family]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        raise LongvidError(f"{name!r} is a {family} preset, but {family} training is not part of this installation ({module} is missing)") from None


def train_lmm(name: str, overrides: Sequence[str] = (), resume: bool = False, progress: bool = True):
    """Train LMM run preset ``name`` with ``key=value`` overrides; returns the step records."""
    return _family_module(name).train(name, list(overrides), resume, progress)


def eval_lmm(name: str, overrides: Sequence[str] = (), checkpoint: str | None = None, progress: bool = True,
             predictions: str | None = None) -> dict:
    """Evaluate LMM run preset ``name``; writes ``out_dir/metrics.json`` and returns the metrics."""
    return _family_module(name).evaluate(name, list(overrides), checkpoint, progress, predictions)
