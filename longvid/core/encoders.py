"""Frozen image encoders from ``transformers``, returning every token of every frame.

:class:`FrozenImageEncoder` wraps a vision tower (CLIP, SigLIP, SigLIP2, or any
``AutoModel`` whose output has ``last_hidden_state``, e.g. ViT / DINOv2), loaded by
local path or hub id. It is frozen (no gradients, eval mode) and maps frames
``(T, 3, H, W)`` in [0, 1] to tokens ``(T, N, C)`` (CLS + patch tokens as the tower
returns them, no final pooling). :class:`FeatureCache` stores one video's features on
disk (safetensors) under a key made from the file, the encoder and the sampling.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Callable

import torch
import torch.nn as nn

from longvid.errors import LongvidError
from longvid.fileio import write_atomically
from longvid.video.transforms import CLIP_MEAN, CLIP_STD, normalize, resize

_VISION_TOWERS = {"clip": "CLIPVisionModel", "siglip": "SiglipVisionModel", "siglip2": "Siglip2VisionModel"}


class FrozenImageEncoder(nn.Module):
    """A frozen vision tower: ``tokens = encoder(frames)``.

    Args:
        model: a ``transformers`` vision model whose output has ``last_hidden_state``
            (and ``hidden_states`` when ``layer != -1``).
        image_size: square input side in pixels.
        mean, std: per-channel normalisation of [0, 1] pixels.
        layer: which hidden state to return (-1: the last; -2: the penultimate, ...).
        name: an identifier (path or hub id) used in feature-cache keys.
    """

    def __init__(self, model: nn.Module, image_size: int, mean=CLIP_MEAN, std=CLIP_STD, layer: int = -1, name: str = ""):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.layer = layer
        self.name = name

    @classmethod
    def from_pretrained(cls, path_or_id: str, layer: int = -1, dtype: torch.dtype | None = None, device=None) -> "FrozenImageEncoder":
        """Load a vision tower by local path or hub id (CLIP/SigLIP checkpoints load only their vision half)."""
        import transformers

        try:
            config = transformers.AutoConfig.from_pretrained(path_or_id)
            model_class = getattr(transformers, _VISION_TOWERS.get(config.model_type, "AutoModel"))
            model = model_class.from_pretrained(path_or_id, dtype=dtype)
        except (OSError, ValueError) as err:
            raise LongvidError(f"cannot load image encoder {path_or_id!r}: {err}") from err
        vision_config = getattr(config, "vision_config", config)
        image_size = getattr(vision_config, "image_size", 224)
        image_size = image_size if isinstance(image_size, int) else image_size[0]
        mean, std = _processor_stats(path_or_id)
        return cls(model.to(device) if device else model, image_size, mean, std, layer, name=str(path_or_id))

    @property
    def width(self) -> int:
        """Token width C."""
        config = self.model.config
        return getattr(getattr(config, "vision_config", config), "hidden_size")

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """frames ``(T, 3, H, W)`` (float in [0, 1] or uint8) -> ``(T, 3, S, S)`` resized
        (bilinear, aspect not kept, as MA-LMM's eval transform) and normalised."""
        return normalize(resize(frames, (self.image_size, self.image_size)), self.mean, self.std)

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels ``(B, 3, S, S)`` (preprocessed) -> tokens ``(B, N, C)``."""
        parameter = next(self.model.parameters())
        output = self.model(pixel_values=pixels.to(parameter.device, parameter.dtype), output_hidden_states=self.layer != -1)
        tokens = output.last_hidden_state if self.layer == -1 else output.hidden_states[self.layer]
        return tokens.float()

    def encode_frames(self, frames: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """frames ``(T, 3, H, W)`` (float in [0, 1] or uint8) -> tokens ``(T, N, C)``, encoded ``batch_size`` frames at a time."""
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise LongvidError(f"frames must be (T, 3, H, W), got {tuple(frames.shape)}")
        chunks = [self(self.preprocess(frames[i : i + batch_size])) for i in range(0, frames.shape[0], batch_size)]
        return torch.cat(chunks)


def _processor_stats(path_or_id: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """image_mean / image_std from a local preprocessor_config.json, else CLIP's."""
    config_path = os.path.join(path_or_id, "preprocessor_config.json")
    if os.path.isfile(config_path):
        with open(config_path) as f:
            config = json.load(f)
        return tuple(config.get("image_mean", CLIP_MEAN)), tuple(config.get("image_std", CLIP_STD))
    return CLIP_MEAN, CLIP_STD


class FeatureCache:
    """Per-video feature files: ``root/<key>.safetensors``, key from file identity + settings."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        os.makedirs(self.root, exist_ok=True)

    def key(self, video: str | os.PathLike, encoder: str, sampling: str) -> str:
        """A key that changes when the file (path, size, mtime), the encoder or the sampling changes."""
        try:
            stat = os.stat(video)
        except OSError as err:
            raise LongvidError(f"cannot read video {os.fspath(video)!r}: {err.strerror}") from err
        ident = json.dumps([os.path.abspath(video), stat.st_size, stat.st_mtime_ns, encoder, sampling])
        return hashlib.sha1(ident.encode()).hexdigest()

    def path(self, key: str) -> str:
        return os.path.join(self.root, key + ".safetensors")

    def get_or_compute(self, key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Load the features for ``key`` or compute, store and return them."""
        from safetensors.torch import load_file, save_file

        path = self.path(key)
        if os.path.exists(path):
            return load_file(path)["features"]
        features = compute()
        write_atomically(path, lambda tmp: save_file({"features": features.contiguous().cpu()}, tmp))
        return features
