"""``key=value`` overrides of a run config (a dataclass): each value converted to its field's type."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Sequence

from longvid.errors import LongvidError


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
