"""Saving and loading stream states: ``save_state(state, path)`` / ``load_state(path)``.

Any state of the stream contract (``docs/streams.md``) has a flat tensor form
(``state_dict()`` / ``from_state_dict(tensors)``); it is written as safetensors with the
state's class in the metadata, so a stream stopped in one process continues in another.
"""

from __future__ import annotations

import importlib
import os

from longvid.core.checkpoints import CheckpointError, read_metadata, read_safetensors
from longvid.fileio import write_atomically


def save_state(state, path: str | os.PathLike) -> None:
    """Write ``state`` (all its streams) to ``path`` (safetensors, atomically)."""
    from safetensors.torch import save_file

    cls = type(state)
    tensors = {k: v.detach().contiguous() for k, v in state.state_dict().items()}
    metadata = {"format": "longvid-state", "class": f"{cls.__module__}:{cls.__qualname__}"}
    write_atomically(os.fspath(path), lambda tmp: save_file(tensors, tmp, metadata=metadata), suffix=".safetensors")


def load_state(path: str | os.PathLike, device=None):
    """The state saved by :func:`save_state` at ``path`` (on ``device``, default CPU)."""
    path = os.fspath(path)
    metadata = read_metadata(path)
    if metadata.get("format") != "longvid-state" or ":" not in metadata.get("class", ""):
        raise CheckpointError(f"{path}: not a longvid stream state (no state class in its metadata)")
    module, _, qualname = metadata["class"].partition(":")
    try:
        cls = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError):
        raise CheckpointError(f"{path}: its state class {metadata['class']} does not exist in this version of longvid") from None
    state = cls.from_state_dict(read_safetensors(path))
    return state if device is None else state.to(device)
