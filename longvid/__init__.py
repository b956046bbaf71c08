"""longvid: long video understanding with memory (MeMViT, MA-LMM, ReWind)."""

from longvid.errors import LongvidError

__all__ = ["LongvidError", "build_model", "list_models", "load_checkpoint", "load_state", "save_state"]

_LAZY = {
    "build_model": "longvid.registry",
    "list_models": "longvid.registry",
    "load_checkpoint": "longvid.core.checkpoints",
    "save_state": "longvid.core.state",
    "load_state": "longvid.core.state",
}


def __getattr__(name: str):
    """Import heavy entry points (torch models) on first use so ``import longvid`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'longvid' has no attribute {name!r}")
