"""longvid: long video understanding with memory (MeMViT, MA-LMM, ReWind)."""

from longvid.errors import LongvidError

__all__ = ["LongvidError", "build_model", "load_checkpoint"]

_LAZY = {
    "build_model": "longvid.models.memvit",
    "load_checkpoint": "longvid.checkpoints",
}


def __getattr__(name: str):
    """Import heavy entry points (torch models) on first use so ``import longvid`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'longvid' has no attribute {name!r}")
