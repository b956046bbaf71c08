"""Ask a question about a video file, whatever the family: what ``longvid ask`` runs.

The family (``model``: "malmm" or "rewind") answers through its own ask module
(:mod:`longvid.malmm.ask`, :mod:`longvid.rewind.ask`, found by :func:`longvid.registry.answerer`);
this module checks the options every family shares and that the weights are trained.
"""

from __future__ import annotations

import os

from longvid.core.asking import Answer, AskOptions
from longvid.errors import LongvidError
from longvid.registry import answerer, family_of

__all__ = ["Answer", "AskOptions", "ask", "check_ask", "check_trained", "summary"]


def _answerer(model: str):
    family = answerer(model)
    if family is None:
        raise LongvidError(f"{model} does not answer questions")
    return family


def check_ask(model: str, options: AskOptions, allow_untrained: bool = False) -> None:
    """Every ``ask`` option checked before an encoder or LLM loads."""
    family = _answerer(model)
    if (not options.encoder or not options.llm) and family.needs_backbones(options):
        raise LongvidError(f"ask --model {model} needs --encoder and --llm (local paths or hub ids)")
    if options.weights is None and not allow_untrained:
        raise LongvidError(f"ask --model {model} needs trained weights (--weights FILE): without them the "
                           f"{family.TRAINED_PARTS} are random and the answer is noise "
                           f"(--allow-untrained runs it anyway)")
    if options.weights is not None and not allow_untrained:
        family.check_trained(options.weights)
    for flag, value in (("--frames", options.frames), ("--keep-every", options.keep_every), ("--max-new-tokens", options.max_new_tokens)):
        if value < 1:
            raise LongvidError(f"{flag} must be >= 1, got {value}")
    if options.fps is not None and not options.fps > 0:
        raise LongvidError(f"--fps must be > 0, got {options.fps:g}")
    if options.until is not None and not options.until >= 0:
        raise LongvidError(f"--time must be >= 0 seconds, got {options.until:g}")


def check_trained(preset: str | None, checkpoint: str | None, allow_untrained: bool, command: str, flag: str) -> None:
    """A preset that answers questions (MA-LMM, ReWind) answers only with trained weights: a
    ``checkpoint``, and (ReWind weights with their JSON record) one that went through a training
    stage; else a one-line error unless ``allow_untrained``."""
    if allow_untrained or preset is None:
        return
    family = answerer(family_of(preset))
    if family is None:
        return
    if checkpoint is None:
        raise LongvidError(f"{command} --model {preset} needs trained weights ({flag}): without them the "
                           f"{family.TRAINED_PARTS} are random and the answers are noise (--allow-untrained runs it anyway)")
    family.check_trained(checkpoint)


def ask(video: str | os.PathLike, question: str, model: str, options: AskOptions) -> Answer:
    """Load the ``model`` family's preset that ``options`` name and answer ``question`` about ``video``."""
    return _answerer(model).answer(video, question, options)


def summary(model: str, answer: Answer, options: AskOptions) -> str:
    """One line: what the answer cost, as the family counts it."""
    return _answerer(model).summary(answer, options)
