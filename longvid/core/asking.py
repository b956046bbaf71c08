"""What asking a video a question shares across families: the :class:`Answer` and its costs,
the options ``longvid ask`` hands a family (:class:`AskOptions`), and the breakpoint check."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

from longvid.errors import LongvidError


@dataclass
class Answer:
    """An answer and what it cost."""

    text: str
    frames_seen: int  # frames watched (1 fps)
    memory_tokens: int  # tokens in the memory
    llm_input_tokens: int  # memory + separator + selected frames + instruction
    selected_times: list[float]  # seconds of the frames DFS selected
    memory_bytes: int
    buffer_ram_bytes: int
    buffer_disk_bytes: int


@dataclass(frozen=True)
class AskOptions:
    """What answering needs besides the video and the question: the model's parts (``preset``:
    None for the family's default) and how to watch; each family reads its own fields."""

    preset: str | None = None
    encoder: str | None = None  # image encoder: path or hub id
    llm: str | None = None  # language model: path or hub id
    weights: str | None = None  # trained weights file
    device: str | None = None
    dtype: Any = "float32"  # the dtype the model runs in (a name or a torch dtype)
    until: float | None = None  # breakpoint: only the video up to this time (seconds)
    frames: int = 20  # MA-LMM: frames spread uniformly over the video
    fps: float | None = None  # MA-LMM: a fixed frame rate instead
    qformer_tokenizer: str | None = "bert-base-uncased"  # MA-LMM: Q-Former instruction tokenizer ('' or None: none)
    keep_every: int = 1  # ReWind: the feature buffer keeps every k-th frame
    spill_dir: str | None = None  # ReWind: the feature buffer spills to memory-mapped files here
    max_new_tokens: int = 32  # ReWind: answer length


class TimePastEndWarning(UserWarning):
    """The breakpoint time is past the end of the video: the answer sees the whole video."""


def check_until(video: str | os.PathLike, until: float | None) -> float:
    """The video's duration (opening it: a bad file fails here); warns once when the
    breakpoint ``until`` is past its end."""
    from longvid.video import probe

    if until is not None and until < 0:
        raise LongvidError(f"--time must be >= 0 seconds, got {until}")
    duration = probe(video).duration
    if until is not None and duration > 0 and until > duration:
        warnings.warn(f"{os.fspath(video)}: --time {until:g} s is past the end of the video ({duration:.2f} s); "
                      f"the answer sees the whole video", TimePastEndWarning, stacklevel=3)
    return duration
