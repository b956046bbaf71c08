"""``longvid models``: every model preset of every family, then every training recipe."""

from __future__ import annotations

import argparse
import json
from typing import Callable


def cmd_models(args: argparse.Namespace) -> int:
    from longvid.registry import list_models, list_recipes

    found = list_models()
    if args.json:
        print(json.dumps([vars(info) for info in found]))
        return 0
    width = max(len(info.name) for info in found)
    for info in found:
        print(f"{info.name:<{width}}  {info.description}")
    recipes = list_recipes()
    width = max(len(info.name) for info in recipes)
    family_width = max(len(info.family) for info in recipes)
    model_width = max(len(info.model) for info in recipes)
    print("\ntraining recipes (longvid train NAME, longvid eval NAME): name, family, the model it trains, its data")
    for info in recipes:
        print(f"{info.name:<{width}}  {info.family:<{family_width}}  {info.model:<{model_width}}  {info.description}")
    return 0


def add_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    sub = command("models", cmd_models, "List every model preset of every family, one line each, then every training recipe.")
    sub.add_argument("--json", action="store_true", help="print one JSON list")
