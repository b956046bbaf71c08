"""The run presets of the LMM families (MA-LMM, ReWind) that ``longvid train`` / ``longvid eval`` know.

A family module registers each of its presets with :func:`register` when it is imported
(``longvid.malmm.run``; ``longvid.rewind.run`` when present). ``builder`` makes
the preset's run config (what :mod:`longvid.runs` hands back to the family).
Names starting with ``rewind_`` belong to ReWind even when its module is absent, so they
get a one-line error rather than falling through to the MeMViT path.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import typing
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from longvid.errors import LongvidError

FAMILY_MODULES = {"malmm": "longvid.malmm.run", "rewind": "longvid.rewind.run"}


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
    import os

    return "rewind" if name.startswith("rewind_") and not os.path.exists(name) else None  # a config file keeps its path


def names(family: str | None = None) -> list[str]:
    """The registered run presets (of ``family``), sorted."""
    _load_families()
    return sorted(n for n, p in PRESETS.items() if family is None or p.family == family)


def apply_overrides(config, overrides: Sequence[str], name: str):
    """``config`` (a dataclass) with ``key=value`` overrides, each value converted to its field's type
    (``null`` / ``none``: None where the field allows it; ``true`` / ``false`` for booleans); an
    unknown field or a bad value is one :class:`LongvidError` line naming it."""
    hints = typing.get_type_hints(type(config))
    fields = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise LongvidError(f"override {item!r} must look like key=value")
        if key not in hints:
            raise LongvidError(f"unknown field {key!r} for {name}: fields are {', '.join(sorted(hints))}")
        fields[key] = _convert(key, text.strip(), hints[key])
    return dataclasses.replace(config, **fields)


def _convert(key: str, text: str, hint):
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
    if text.lower() in ("null", "none") and type(None) in typing.get_args(hint):
        return None
    kind = kinds[0]
    try:
        if kind is bool:
            if text.lower() not in ("true", "1", "yes", "false", "0", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if kind is int:
            value = json.loads(text)
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError
            return int(value)
        if kind is float:
            return float(text)
        return kind(text)
    except (TypeError, ValueError, json.JSONDecodeError):
        raise LongvidError(f"config field {key} expects {getattr(kind, '__name__', kind)}, got {text!r}") from None
