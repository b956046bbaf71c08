"""longvid: long video understanding with memory (MeMViT, MA-LMM, ReWind)."""

from longvid.errors import LongvidError

__all__ = ["LongvidError", "build_model", "list_models", "load_checkpoint", "load_state", "save_state"]

# The entry points import their modules (torch, the models) when called, so ``import longvid`` stays light.


def build_model(name: str, **overrides):
    """Build model preset ``name`` of any family (:func:`longvid.registry.build_model`)."""
    from longvid.registry import build_model as build

    return build(name, **overrides)


def list_models():
    """Every model preset of every family (:func:`longvid.registry.list_models`)."""
    from longvid.registry import list_models as listed

    return listed()


def load_checkpoint(model, path, strict: bool = True):
    """Load weights from ``path`` into ``model`` (:func:`longvid.core.checkpoints.load_checkpoint`)."""
    from longvid.core.checkpoints import load_checkpoint as load

    return load(model, path, strict=strict)


def save_state(state, path) -> None:
    """Write ``state`` (all its streams) to ``path`` (:func:`longvid.core.state.save_state`)."""
    from longvid.core.state import save_state as save

    save(state, path)


def load_state(path, device=None):
    """The state saved by :func:`save_state` at ``path`` (:func:`longvid.core.state.load_state`)."""
    from longvid.core.state import load_state as load

    return load(path, device=device)
