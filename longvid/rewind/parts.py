"""ReWind's frozen image encoder from a path or hub id, the EVA ViT-g of BLIP-2 / InstructBLIP included.

ReWind reads EVA-CLIP ViT-g features. In ``transformers`` that tower lives inside BLIP-2 and
InstructBLIP checkpoints (``Blip2VisionModel`` / ``InstructBlipVisionModel``, ``vision_model.*``
tensors), which :class:`~longvid.core.encoders.FrozenImageEncoder` cannot load through
``AutoModel``. :func:`image_encoder` takes the tower alone out of such a checkpoint (reading only
its ``vision_model.*`` tensors, shard by shard) or a vision tower saved on its own; any other
path (CLIP, SigLIP, an ``AutoModel`` with ``last_hidden_state``) goes to
``FrozenImageEncoder.from_pretrained``.
"""

from __future__ import annotations

import json
import os

from longvid.errors import LongvidError

_COMPOSITE = {"instructblip": "InstructBlipVisionModel", "instructblipvideo": "InstructBlipVideoVisionModel",
              "blip-2": "Blip2VisionModel"}
_TOWER = {"instructblip_vision_model": "InstructBlipVisionModel", "blip_2_vision_model": "Blip2VisionModel",
          "instructblipvideo_vision_model": "InstructBlipVideoVisionModel"}


def image_encoder(path_or_id: str, device=None):
    """A frozen image encoder (:class:`~longvid.core.encoders.FrozenImageEncoder`) loaded from ``path_or_id``."""
    import transformers

    from longvid.core.encoders import FrozenImageEncoder, _processor_stats

    try:
        config = transformers.AutoConfig.from_pretrained(path_or_id)
    except (OSError, ValueError) as err:
        raise LongvidError(f"cannot load image encoder {path_or_id!r}: {err}") from err
    model_type = getattr(config, "model_type", "")
    if model_type not in _COMPOSITE and model_type not in _TOWER:
        return FrozenImageEncoder.from_pretrained(path_or_id, device=device)
    if model_type in _TOWER:
        tower = getattr(transformers, _TOWER[model_type]).from_pretrained(path_or_id)
    else:
        tower = getattr(transformers, _COMPOSITE[model_type])(config.vision_config)
        tensors = _vision_tensors(path_or_id)
        result = tower.load_state_dict(tensors, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise LongvidError(f"{path_or_id}: its vision_model tensors do not fit {type(tower).__name__} "
                               f"(missing {result.missing_keys[:2]}, unexpected {result.unexpected_keys[:2]})")
    vision = getattr(config, "vision_config", config)
    mean, std = _processor_stats(path_or_id)
    encoder = FrozenImageEncoder(tower, vision.image_size, mean, std, name=str(path_or_id))
    return encoder.to(device) if device else encoder


def _vision_tensors(path_or_id: str) -> dict:
    """The ``vision_model.*`` tensors of a composite checkpoint (prefix removed), read shard by
    shard (a hub id: only the shards that hold them are fetched)."""
    from safetensors import safe_open

    fetch = (lambda name: os.path.join(path_or_id, name)) if os.path.isdir(path_or_id) else _hub_file(path_or_id)
    index = fetch("model.safetensors.index.json")
    if index is not None and os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted({file for name, file in json.load(f)["weight_map"].items() if name.startswith("vision_model.")})
    else:
        shards = ["model.safetensors"]
    tensors = {}
    for shard in shards:
        local = fetch(shard)
        if local is None or not os.path.isfile(local):
            raise LongvidError(f"{path_or_id}: no {shard} to read the vision tower from")
        with safe_open(local, framework="pt") as f:
            tensors.update({k[len("vision_model."):]: f.get_tensor(k) for k in f.keys() if k.startswith("vision_model.")})
    return tensors


def _hub_file(hub_id: str):
    """``name -> local path`` of a hub checkpoint's file (None when the checkpoint has no such file)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError

    def fetch(name: str) -> str | None:
        try:
            return hf_hub_download(hub_id, name)
        except EntryNotFoundError:
            return None

    return fetch
