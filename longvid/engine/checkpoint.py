"""Checkpoints: tensors in safetensors, everything else in a small JSON, both atomic.

A checkpoint ``<dir>/step_000120`` is two files: ``.safetensors`` (model weights,
optimizer tensors, the streams' memory state, RNG states) and ``.json`` (config,
step, epoch, scheduler state, optimizer hyper-parameters, the data position and
the layout of the nested objects). Each file is written to a temporary name and
renamed, and the JSON (written last) marks the checkpoint complete, so a run
killed at any moment leaves only complete checkpoints behind.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import json
import os
import warnings

import torch
from safetensors.torch import save_file

from longvid.core.checkpoints import CheckpointError, load_tensors, read_safetensors
from longvid.fileio import write_atomically, write_text_atomically


def flatten(obj, prefix: str, tensors: dict[str, torch.Tensor]):
    """A JSON layout of ``obj`` (dataclasses, lists, tuples, dicts, tensors, scalars);
    its tensors go to ``tensors`` under keys starting with ``prefix``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        fields = {f.name: flatten(getattr(obj, f.name), f"{prefix}.{f.name}", tensors) for f in dataclasses.fields(obj)}
        return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    if isinstance(obj, (list, tuple)):
        items = [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"cannot checkpoint a dict with non-str/int keys at {prefix}")
        return {"__dict__": [[k, flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {prefix}")


def unflatten(layout, tensors: dict[str, torch.Tensor], device=None):
    """Inverse of :func:`flatten`."""
    if isinstance(layout, list):
        return [unflatten(v, tensors, device) for v in layout]
    if not isinstance(layout, dict):
        return layout
    if "__tensor__" in layout:
        tensor = tensors[layout["__tensor__"]]
        return tensor.to(device) if device is not None else tensor
    if "__tuple__" in layout:
        return tuple(unflatten(v, tensors, device) for v in layout["__tuple__"])
    if "__dict__" in layout:
        return {k: unflatten(v, tensors, device) for k, v in layout["__dict__"]}
    module, _, qualname = layout["__dataclass__"].partition(":")
    cls = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    values = {k: unflatten(v, tensors, device) for k, v in layout["fields"].items()}
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    obj = cls(**{k: v for k, v in values.items() if k in init})
    for key in set(values) - init:
        object.__setattr__(obj, key, values[key])
    return obj


def save_checkpoint(directory: str, step: int, tensors: dict, record: dict, keep: int = 2) -> str:
    """Write ``step_<step>.safetensors`` + ``.json`` atomically; keep the newest ``keep``.

    A failed write (disk full, no permission) removes what it wrote and raises
    :class:`CheckpointError`; the earlier checkpoints stay as they were.
    """
    base = os.path.join(directory, f"step_{step:08d}")
    try:
        os.makedirs(directory, exist_ok=True)
        write_atomically(base + ".safetensors", lambda tmp: save_file(tensors, tmp))
        write_text_atomically(base + ".json", json.dumps(record))
    except OSError as err:
        for ext in (".json", ".safetensors"):
            if os.path.exists(base + ext):
                os.remove(base + ext)
        earlier = list_checkpoints(directory)
        kept = f"; the last complete checkpoint is {earlier[-1]}" if earlier else ""
        raise CheckpointError(f"cannot write checkpoint {base}: {err.strerror or err}{kept}") from None
    for old in list_checkpoints(directory)[:-keep]:
        for ext in (".json", ".safetensors"):
            if os.path.exists(old + ext):
                os.remove(old + ext)
    return base


def list_checkpoints(directory: str) -> list[str]:
    """Complete checkpoints (those with their JSON) in ``directory``, oldest first."""
    found = [p[: -len(".json")] for p in glob.glob(os.path.join(directory, "step_*.json"))]
    return sorted(p for p in found if os.path.exists(p + ".safetensors"))


def load_checkpoint(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, record)`` of a checkpoint base path (without extension) or folder (latest
    readable one; see :func:`load_latest`)."""
    tensors, record, _ = load_latest(path)
    return tensors, record


def load_latest(path: str) -> tuple[dict[str, torch.Tensor], dict, str]:
    """``(tensors, record, base path)`` of a checkpoint base path, or of the newest readable
    checkpoint in a folder: a damaged newest one is named in a warning and the previous
    complete one is used. Raises :class:`CheckpointError` when none can be read."""
    if not os.path.isdir(path):
        base = path.removesuffix(".json").removesuffix(".safetensors")
        if not (os.path.exists(base + ".json") and os.path.exists(base + ".safetensors")):
            raise CheckpointError(f"{base}: checkpoint not found (need .json and .safetensors)")
        return (*_read(base), base)
    found = list_checkpoints(path)
    if not found:
        raise CheckpointError(f"{path}: no checkpoint found")
    damaged = []
    for base in reversed(found):
        try:
            tensors, record = _read(base)
        except CheckpointError as err:
            damaged.append(str(err))
            continue
        for message in damaged:
            warnings.warn(f"{message}; using {base} instead", stacklevel=2)
        return tensors, record, base
    raise CheckpointError(f"{path}: every checkpoint is damaged ({damaged[0]})")


def _read(base: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read one checkpoint; a damaged file raises :class:`CheckpointError` naming it."""
    try:
        with open(base + ".json", encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{base}.json is damaged ({err})") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{base}.json is damaged (not a JSON object)")
    return read_safetensors(base + ".safetensors"), record


def load_model_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: str) -> None:
    """Load a training checkpoint's ``model.*`` tensors into ``model``; a checkpoint of
    another model raises :class:`CheckpointError` naming what does not fit."""
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    load_tensors(model, weights, path)
