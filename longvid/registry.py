"""One registry of every preset of every family: the one place that names the families.

Model presets: each family package (:mod:`longvid.memvit`, :mod:`longvid.malmm`,
:mod:`longvid.rewind`) exposes ``PRESETS`` (name -> config), ``describe(name) -> str`` (one
line) and ``build_model(name, **overrides)``; :func:`build_model` finds the family that owns a
name. Training recipes (``longvid train NAME`` / ``longvid eval NAME``): MeMViT's in
:mod:`longvid.memvit.recipes` (run by the CLI through :mod:`longvid.memvit.run`), MA-LMM's and
ReWind's in their run modules (:mod:`longvid.malmm.run`, :mod:`longvid.rewind.run`), which
:func:`train` and :func:`evaluate` call. Answering (``longvid ask``, ``stream --ask``): the
families' ``ask`` modules (:func:`answerer`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Sequence

from torch import nn

from longvid import malmm, memvit, rewind
from longvid.errors import LongvidError
from longvid.malmm import ask as malmm_ask
from longvid.malmm import run as malmm_run
from longvid.memvit import recipes as memvit_recipes
from longvid.rewind import ask as rewind_ask
from longvid.rewind import run as rewind_run

MODELS: dict[str, ModuleType] = {"memvit": memvit, "malmm": malmm, "rewind": rewind}  # family -> PRESETS, describe, build_model
RECIPES: dict[str, ModuleType] = {"memvit": memvit_recipes, "malmm": malmm_run, "rewind": rewind_run}  # family -> PRESETS, describe
RUNS: dict[str, ModuleType] = {"malmm": malmm_run, "rewind": rewind_run}  # family -> train(...), evaluate(...) of its recipes
ANSWERERS: dict[str, ModuleType] = {"malmm": malmm_ask, "rewind": rewind_ask}  # family -> its ask module


@dataclass(frozen=True)
class ModelInfo:
    """A preset: its name, family and a one-line description."""

    name: str
    family: str
    description: str


@dataclass(frozen=True)
class RecipeInfo:
    """A training recipe: its name, family, the model preset it trains and a one-line description."""

    name: str
    family: str
    model: str
    description: str


def list_models() -> list[ModelInfo]:
    """Every preset of every family, family by family in registry order, names sorted."""
    found = []
    for family, module in MODELS.items():
        found.extend(ModelInfo(name, family, module.describe(name)) for name in sorted(module.PRESETS))
    return found


def list_recipes() -> list[RecipeInfo]:
    """Every training recipe of every family, family by family in registry order, names sorted."""
    found = []
    for family, module in RECIPES.items():
        found.extend(RecipeInfo(name, family, module.PRESETS[name].model, module.describe(name)) for name in sorted(module.PRESETS))
    return found


def family_of(name: str) -> str:
    """The family that owns model preset ``name`` (``LongvidError`` naming the choices if none)."""
    for family, module in MODELS.items():
        if name in module.PRESETS:
            return family
    names = ", ".join(info.name for info in list_models())
    raise LongvidError(f"unknown model preset {name!r}: choose from {names}")


def build_model(name: str, **overrides) -> nn.Module:
    """Build preset ``name`` of any family, with config fields replaced by ``overrides``."""
    return MODELS[family_of(name)].build_model(name, **overrides)


def answerer(family: str) -> ModuleType | None:
    """The ask module of ``family`` (``TRAINED_PARTS``, ``needs_backbones``, ``check_trained``,
    ``answer``, ``summary``), or None for a family that does not answer questions (MeMViT)."""
    return ANSWERERS.get(family)


def run_family(name: str) -> str | None:
    """The family whose own run module trains and evaluates recipe ``name`` (MA-LMM, ReWind), or
    None when it is not one of theirs (a MeMViT recipe or a config file). Names starting with
    ``rewind_`` belong to ReWind, so an unknown one gets ReWind's error naming its recipes."""
    for family, module in RUNS.items():
        if name in module.PRESETS:
            return family
    return "rewind" if name.startswith("rewind_") and not os.path.exists(name) else None  # a config file keeps its path


def _run_module(name: str) -> ModuleType:
    family = run_family(name)
    if family is None:
        names = sorted(n for module in RUNS.values() for n in module.PRESETS)
        raise LongvidError(f"{name!r} is not an LMM run preset: choose from {', '.join(names)}")
    return RUNS[family]


def train(name: str, overrides: Sequence[str] = (), resume: bool = False, progress: bool = True) -> list[dict]:
    """Train the MA-LMM or ReWind recipe ``name`` with ``key=value`` overrides; returns the step records."""
    return _run_module(name).train(name, list(overrides), resume, progress)


def evaluate(name: str, overrides: Sequence[str] = (), checkpoint: str | None = None, progress: bool = True,
             predictions: str | None = None) -> dict:
    """Evaluate the MA-LMM or ReWind recipe ``name``; writes ``out_dir/metrics.json`` and returns the metrics."""
    return _run_module(name).evaluate(name, list(overrides), checkpoint, progress, predictions)
