"""One registry of every model preset of every family.

Each family module exposes ``PRESETS`` (name -> config), ``describe(name) -> str`` (one
line) and ``build_model(name, **overrides)``; :func:`build_model` finds the family that
owns a name. Family modules are imported on first use, so listing stays cheap for the
families a user does not touch.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass

from torch import nn

from longvid.errors import LongvidError

FAMILIES: dict[str, str] = {  # family -> module holding PRESETS, describe, build_model
    "memvit": "longvid.memvit",
    "malmm": "longvid.malmm",
    "rewind": "longvid.rewind",
}


@dataclass(frozen=True)
class ModelInfo:
    """A preset: its name, family and a one-line description."""

    name: str
    family: str
    description: str


def preset_config(presets: dict, name: str, label: str, **overrides):
    """``presets[name]`` with fields replaced by ``overrides``; an unknown preset or field is a
    :class:`LongvidError` naming the choices (``label``: e.g. "model", "ReWind")."""
    if name not in presets:
        raise LongvidError(f"unknown {label} preset {name!r}: choose from {', '.join(sorted(presets))}")
    fields = {f.name for f in dataclasses.fields(presets[name])}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise LongvidError(f"unknown config field(s) {', '.join(unknown)} for {label} preset {name!r}: fields are {', '.join(sorted(fields))}")
    return dataclasses.replace(presets[name], **overrides)


def _family_module(family: str):
    return importlib.import_module(FAMILIES[family])


def list_models() -> list[ModelInfo]:
    """Every preset of every family, family by family in registry order, names sorted."""
    found = []
    for family in FAMILIES:
        module = _family_module(family)
        found.extend(ModelInfo(name, family, module.describe(name)) for name in sorted(module.PRESETS))
    return found


def family_of(name: str) -> str:
    """The family that owns preset ``name`` (``LongvidError`` naming the choices if none)."""
    for family in FAMILIES:
        if name in _family_module(family).PRESETS:
            return family
    names = ", ".join(info.name for info in list_models())
    raise LongvidError(f"unknown model preset {name!r}: choose from {names}")


def build_model(name: str, **overrides) -> nn.Module:
    """Build preset ``name`` of any family, with config fields replaced by ``overrides``."""
    return _family_module(family_of(name)).build_model(name, **overrides)
