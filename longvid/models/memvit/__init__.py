"""MeMViT (CVPR 2022) and MViTv2: the family's model, configs and presets, attention with
memory, KV memory state and heads.

- :mod:`~longvid.models.memvit.config`: ``MeMViTConfig``, ``PRESETS``, ``get_config``, ``describe``
- :mod:`~longvid.models.memvit.model`: ``MeMViT``, ``build_model``
- :mod:`~longvid.models.memvit.attention`: pooling attention with relative positions and memory
- :mod:`~longvid.models.memvit.memory`: the cached, compressed keys/values (``KVMemoryState``)
- :mod:`~longvid.models.memvit.heads`: classification, verb/noun, anticipation and AVA box heads
"""

from longvid.models.memvit.attention import ATTENTION_IMPLS, set_attention
from longvid.models.memvit.config import HEADS, PRESETS, MeMViTConfig, describe, get_config
from longvid.models.memvit.memory import KVMemorySpec, KVMemoryState, LayerCache
from longvid.models.memvit.model import MeMViT, block_layout, build_model

__all__ = [
    "HEADS", "PRESETS", "KVMemorySpec", "KVMemoryState", "LayerCache", "MeMViT", "MeMViTConfig", "block_layout",
    "build_model", "describe", "get_config", "ATTENTION_IMPLS", "set_attention",
]  # fmt: skip
