"""longvid: long video understanding with memory (MeMViT, MA-LMM, ReWind)."""

from longvid.errors import LongvidError

__all__ = ["LongvidError", "build_model", "list_models", "load_checkpoint", "load_state", "save_state"]

_LAZY = {
    "build_model": "longvid.models.registry",
    "list_models": "longvid.models.registry",
    "load_checkpoint": "longvid.checkpoints",
    "save_state": "longvid.state",
    "load_state": "longvid.state",
}


def __getattr__(name: str):
    """Import heavy entry points (torch models) on first use so ``import longvid`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'longvid' has no attribute {name!r}")
