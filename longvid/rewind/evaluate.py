"""Evaluating ReWind on question answering and temporal grounding.

Closed-answer QA: the candidate answer with the highest log-likelihood is the
prediction (answer accuracy). Grounding: the model writes ``"<start>-<end> s"``; the
first two numbers are the predicted interval (an unreadable answer counts as IoU 0),
scored with R@0.3/0.5/0.7 and mIoU (:func:`longvid.eval.metrics.grounding_metrics`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from longvid.eval.metrics import grounding_metrics
from longvid.core.stream import Frames

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def watch(model, item: "VideoQuestion"):
    """``item``'s video watched by ``model`` with its question as the memory's instruction."""
    frames = Frames(item.frames.transpose(0, 1)[None], item.timestamps[None])  # (1, N, 3, H, W)
    return model.watch(frames, model.init_state(1, instructions=[item.question]))


@dataclass
class VideoQuestion:
    """One video as frames ``(3, N, H, W)`` in [0, 1] at ``timestamps (N,)`` seconds, a question,
    and its answer: a string (QA) or a ``(start, end)`` interval in seconds (grounding)."""

    frames: torch.Tensor
    timestamps: torch.Tensor
    question: str
    answer: str | tuple[float, float]


def parse_interval(text: str) -> tuple[float, float] | None:
    """The first two numbers of ``text`` as ``(start, end)`` seconds, ordered; None without two."""
    numbers = [float(n) for n in _NUMBER.findall(text)[:2]]
    if len(numbers) < 2:
        return None
    return min(numbers), max(numbers)


@torch.no_grad()
def evaluate_qa(model, items: Iterable[VideoQuestion], candidates: Sequence[str]) -> dict[str, float]:
    """Answer accuracy (%) choosing among ``candidates`` by log-likelihood."""
    correct = total = 0
    for item in items:
        state = watch(model, item)
        choice = int(model.score(state, [item.question], list(candidates))[0].argmax())
        correct += candidates[choice] == item.answer
        total += 1
    return {"accuracy": 100.0 * correct / max(total, 1), "samples": float(total)}


@torch.no_grad()
def evaluate_grounding(model, items: Iterable[VideoQuestion], max_new_tokens: int = 12) -> dict[str, float]:
    """R@0.3/0.5/0.7 and mIoU (%) of generated intervals; also the share of readable answers."""
    predicted, target, readable = [], [], 0
    for item in items:
        state = watch(model, item)
        interval = parse_interval(model.answer(state, [item.question], max_new_tokens=max_new_tokens)[0])
        readable += interval is not None
        predicted.append(interval or (0.0, 0.0))
        target.append(item.answer)
    result = grounding_metrics(torch.tensor(predicted), torch.tensor(target))
    result["readable"] = 100.0 * readable / len(target)
    return result
