"""MeMViT (CVPR 2022) and MViTv2: the family's model, configs and presets, attention with
memory, KV memory state and heads.

- :mod:`~longvid.memvit.config`: ``MeMViTConfig``, ``PRESETS``, ``get_config``, ``describe``
- :mod:`~longvid.memvit.model`: ``MeMViT``, ``build_model``, ``load_model`` (from a saved checkpoint)
- :mod:`~longvid.memvit.attention`: pooling attention with relative positions and memory
- :mod:`~longvid.memvit.memory`: the cached, compressed keys/values (``KVMemoryState``)
- :mod:`~longvid.memvit.heads`: classification, verb/noun, anticipation and AVA box heads
"""

from longvid.memvit.attention import ATTENTION_IMPLS, set_attention
from longvid.memvit.config import HEADS, PRESETS, MeMViTConfig, describe, get_config
from longvid.memvit.memory import KVMemorySpec, KVMemoryState, LayerCache
from longvid.memvit.model import MeMViT, block_layout, build_model, load_model

__all__ = [
    "HEADS", "PRESETS", "KVMemorySpec", "KVMemoryState", "LayerCache", "MeMViT", "MeMViTConfig", "block_layout",
    "build_model", "describe", "get_config", "load_model", "ATTENTION_IMPLS", "set_attention",
]  # fmt: skip
