"""Label files: class names in index order, read from text, CSV or JSON files
(:func:`load_labels`) and written as a run's ``classes.json`` (:func:`save_class_list`);
naming a score vector's best classes (:func:`top_labels`)."""

from __future__ import annotations

import csv
import json
import os
from typing import Sequence

import numpy as np

from longvid.errors import LongvidError
from longvid.fileio import write_text_atomically

CLASSES_FILE = "classes.json"  # the class list a run saved in its out_dir (names -> indices)


def load_labels(path: str | os.PathLike) -> list[str]:
    """Class names from a text file (one per line), a CSV (``index,name`` or ``name``
    rows; a header row is skipped), or JSON (a list, or a ``{index: name}`` /
    ``{name: index}`` object)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LongvidError(f"{path}: no such labels file")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise LongvidError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if isinstance(data, list):
            return [str(x) for x in data]
        if isinstance(data, dict):
            pairs = {}
            for key, value in data.items():
                if str(key).lstrip("-").isdigit():
                    pairs[int(key)] = str(value)
                elif isinstance(value, int):
                    pairs[value] = str(key)
                else:
                    raise LongvidError(f"{path}: label map entries must pair an integer index with a name, got {key!r}: {value!r}")
            return _dense(pairs, path)
        raise LongvidError(f"{path}: expected a JSON list or object of labels")
    if path.endswith(".csv"):
        rows = [row for row in csv.reader(text.splitlines()) if row and any(cell.strip() for cell in row)]
        if rows and len(rows[0]) >= 2 and not rows[0][0].strip().isdigit():
            rows = rows[1:]  # header
        if rows and all(len(r) >= 2 and r[0].strip().isdigit() for r in rows):
            return _dense({int(r[0]): r[1].strip() for r in rows}, path)
        return [r[0].strip() for r in rows]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _dense(pairs: dict[int, str], path: str) -> list[str]:
    missing = sorted(set(range(len(pairs))) - set(pairs))
    if missing:
        raise LongvidError(f"{path}: label indices must be 0..{len(pairs) - 1}; missing {missing[:5]}")
    return [pairs[i] for i in range(len(pairs))]


def check_labels(model, labels: Sequence[str] | None) -> None:
    """Refuse class names whose count differs from the classes of ``model``'s config
    (checked again on the first scores for models without a config)."""
    classes = getattr(getattr(model, "config", None), "num_classes", None)
    if labels is not None and isinstance(classes, int) and len(labels) != classes:
        raise LongvidError(f"the labels name {len(labels)} classes but the model has {classes}")


def top_labels(scores: np.ndarray, k: int, labels: Sequence[str] | None) -> list[dict]:
    """The ``k`` best classes of one score vector, best first, ties to the lower index."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [{"label": labels[i] if labels is not None else int(i), "score": round(float(scores[i]), 6)} for i in order]


def save_class_list(directory: str, classes: list[str]) -> str:
    """Write ``directory/classes.json`` (atomically); returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, CLASSES_FILE)
    write_text_atomically(path, json.dumps(classes, indent=0) + "\n")
    return path
