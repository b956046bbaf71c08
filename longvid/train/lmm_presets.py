"""The run presets of the LMM families (MA-LMM, ReWind) that ``longvid train`` / ``longvid eval`` know.

A family module registers each of its presets with :func:`register` when it is imported
(``longvid.train.malmm_run``; ``longvid.train.rewind_run`` when present). ``builder`` makes
the preset's run config (what :mod:`longvid.train.lmm_run` hands back to the family).
Names starting with ``rewind_`` belong to ReWind even when its module is absent, so they
get a one-line error rather than falling through to the MeMViT path.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

FAMILY_MODULES = {"malmm": "longvid.train.malmm_run", "rewind": "longvid.train.rewind_run"}


@dataclass(frozen=True)
class LMMPreset:
    name: str
    family: str
    builder: Callable[[], Any]


PRESETS: dict[str, LMMPreset] = {}


def register(name: str, family: str, builder: Callable[[], Any]) -> None:
    """Record run preset ``name`` of ``family`` ("malmm" or "rewind")."""
    if family not in FAMILY_MODULES:
        raise ValueError(f"unknown LMM family {family!r}: {', '.join(FAMILY_MODULES)}")
    PRESETS[name] = LMMPreset(name, family, builder)


def _load_families() -> None:
    for module in FAMILY_MODULES.values():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # the module exists but something it imports does not
                raise


def family_of(name: str) -> str | None:
    """The family of LMM run preset ``name``, or None when it is not one (e.g. a MeMViT config)."""
    _load_families()
    if name in PRESETS:
        return PRESETS[name].family
    return "rewind" if name.startswith("rewind_") else None


def names(family: str | None = None) -> list[str]:
    """The registered run presets (of ``family``), sorted."""
    _load_families()
    return sorted(n for n, p in PRESETS.items() if family is None or p.family == family)
