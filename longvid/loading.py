"""Models for streaming: a preset of any family with its weights (a checkpoint, the
package's shipped demo weights, or random ones, said in a note), and the shipped demo
weights' class names."""

from __future__ import annotations

import os

from longvid.data.labels import load_labels
from longvid.errors import LongvidError

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")


def shipped_weights(preset: str) -> str | None:
    """The weights the package ships for ``preset`` (its demo task), if any."""
    path = os.path.join(WEIGHTS_DIR, f"{preset}.safetensors")
    return path if os.path.isfile(path) else None


def shipped_labels(preset: str) -> list[str] | None:
    """Class names of the package's demo weights for ``preset`` (``<preset>.labels.json``), if any."""
    path = os.path.join(WEIGHTS_DIR, f"{preset}.labels.json")
    return load_labels(path) if os.path.isfile(path) else None


DEFAULT_STREAM_PRESET = "memvit_tiny_recall"  # ships weights trained by ``longvid bench`` (recall)


def load_stream_model(preset: str | None, checkpoint: str | None = None, default_preset: str = DEFAULT_STREAM_PRESET,
                      encoder: str | None = None, llm: str | None = None):
    """(model, weights note) for streaming.

    MeMViT presets: ``checkpoint`` is a longvid safetensors file (its stored config is used
    unless ``preset`` is given) or an official MeMViT ``.pyth`` (needs the matching
    ``preset``); without one, the preset runs with the package's shipped demo weights if
    it has them, else with random weights (the note says so). Presets of the other
    families (MA-LMM, ReWind) are built through the registry with their ``encoder`` /
    ``llm`` (path or hub id; default: the preset's) and trained ``checkpoint``.
    """
    from longvid.core.checkpoints import load_checkpoint, read_metadata
    from longvid.memvit import build_model, load_model
    from longvid.registry import family_of

    if preset is not None and family_of(preset) != "memvit":
        return _load_frame_model(preset, checkpoint, encoder, llm)
    if encoder is not None or llm is not None:
        raise LongvidError("--encoder/--llm are for the MA-LMM and ReWind presets (see longvid models)")
    if checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise LongvidError(f"{checkpoint}: no such checkpoint file")
        if preset is None and checkpoint.endswith(".safetensors") and "config" in read_metadata(checkpoint):
            return load_model(checkpoint), f"weights from {checkpoint}"
        model = build_model(preset or default_preset)
        load_checkpoint(model, checkpoint)
        return model, f"weights from {checkpoint}"
    preset = preset or default_preset
    shipped = shipped_weights(preset)
    if shipped is not None:
        return load_model(shipped), f"shipped demo weights ({os.path.basename(shipped)})"
    return build_model(preset), f"RANDOM weights: longvid ships no trained weights for {preset!r}; pass --checkpoint"


def _load_frame_model(preset: str, checkpoint: str | None, encoder: str | None, llm: str | None):
    from longvid.registry import build_model

    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise LongvidError(f"{checkpoint}: no such checkpoint file")
    given = {k: v for k, v in (("encoder", encoder), ("llm", llm), ("checkpoint", checkpoint)) if v is not None}
    model = build_model(preset, **given)
    note = f"weights from {checkpoint}" if checkpoint else "RANDOM trainable weights (untrained): pass --checkpoint for real answers"
    return model, note
