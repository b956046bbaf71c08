"""A preset table's config with some fields replaced: what each family's ``get_config`` does."""

from __future__ import annotations

import dataclasses

from longvid.errors import LongvidError


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
