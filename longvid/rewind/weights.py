"""ReWind's trained weights as files: ``NAME.safetensors`` holds the trainable parts (memory,
projections, heads, separator, LoRA adapters: :func:`~longvid.rewind.model.trainable_state_dict`),
``NAME.json`` beside it names the frozen parts (image encoder and LLM: paths or hub ids; none
for a tiny preset's built-in backbones, drawn from ``seed``) and the preset, so
:func:`load_weights` rebuilds the whole model from the pair.

The ``.safetensors`` file alone also loads into a model built by hand:
``build_model(preset, encoder=..., llm=..., checkpoint=PATH)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

from longvid.errors import LongvidError
from longvid.fileio import write_atomically, write_text_atomically

FORMAT = "longvid-rewind-weights/1"


def config_path(weights: str | os.PathLike) -> str:
    """The JSON file beside a weights file: ``run/rewind.safetensors`` -> ``run/rewind.json``."""
    return os.path.splitext(os.fspath(weights))[0] + ".json"


def save_weights(model, path: str | os.PathLike, preset: str, encoder: str | None = None, llm: str | None = None,
                 seed: int = 0, stages: Sequence[str] = ()) -> str:
    """Write ``model``'s trainable weights to ``path`` (``.safetensors``) and the JSON naming its
    frozen parts beside it, each atomically; ``stages``: the training stages these weights went
    through (an empty list means untrained). Returns ``path``."""
    from safetensors.torch import save_file

    from longvid.rewind.model import trainable_state_dict

    path = os.fspath(path)
    if not path.endswith(".safetensors"):
        raise LongvidError(f"{path}: ReWind weights are written as a .safetensors file")
    tensors = {k: v.detach().cpu().contiguous() for k, v in trainable_state_dict(model).items()}
    record = {"format": FORMAT, "family": "rewind", "preset": preset, "encoder": encoder, "llm": llm, "seed": seed,
              "stages": list(stages), "trainable_tensors": len(tensors), "config": dataclasses.asdict(model.config)}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomically(path, lambda tmp: save_file(tensors, tmp), suffix=".safetensors")
    write_text_atomically(config_path(path), json.dumps(record, indent=1) + "\n")
    return path


def read_weights_config(path: str | os.PathLike) -> dict:
    """The JSON record beside weights file ``path`` (one-line errors for a missing or foreign file)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LongvidError(f"{path}: no such weights file")
    if not path.endswith(".safetensors"):
        raise LongvidError(f"{path}: ReWind weights are a .safetensors file (with its .json beside it)")
    record_path = config_path(path)
    if not os.path.isfile(record_path):
        raise LongvidError(f"{path}: no {os.path.basename(record_path)} beside it naming the frozen encoder and LLM "
                           f"(build the model yourself and pass the file as checkpoint=)")
    try:
        with open(record_path, encoding="utf-8") as f:
            record = json.load(f)
    except json.JSONDecodeError as err:
        raise LongvidError(f"{record_path}:{err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise LongvidError(f"{record_path}: not a ReWind weights record (format {FORMAT!r})")
    return record


def trained_stages(path: str | os.PathLike) -> list[str] | None:
    """The training stages weights file ``path`` went through, from its JSON record (None: no record
    beside it, e.g. a file written by hand)."""
    if not os.path.isfile(config_path(path)):
        return None
    return list(read_weights_config(path).get("stages", []))


def load_weights(path: str | os.PathLike, encoder=None, llm=None, device=None, selector=None):
    """The ReWind model of weights file ``path``: its preset on the frozen parts its JSON names
    (``encoder`` / ``llm``: a path, hub id or module instead, e.g. a local copy), the trained
    weights loaded (a missing or unexpected tensor is an error)."""
    from longvid.rewind.model import build_model
    from longvid.rewind.parts import image_encoder

    record = read_weights_config(path)
    encoder = encoder if encoder is not None else record["encoder"]
    if isinstance(encoder, (str, os.PathLike)):
        encoder = image_encoder(os.fspath(encoder), device)
    try:
        return build_model(record["preset"], encoder=encoder,
                           llm=llm if llm is not None else record["llm"], checkpoint=path, selector=selector,
                           seed=int(record.get("seed", 0)), device=device)
    except RuntimeError as err:  # load_state_dict: a tensor of another shape (other backbones' widths)
        first = str(err).split("size mismatch for ", 1)[-1].split(":", 1)[0]
        raise LongvidError(f"{os.fspath(path)}: these weights do not fit the model built on the given encoder/LLM "
                           f"(size mismatch for {first})") from None
