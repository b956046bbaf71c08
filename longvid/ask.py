"""Ask a question about a video file: stream it at 1 fps into a model's memory, then answer.

``ask_rewind`` is what ``longvid ask VIDEO "question" --model rewind`` runs (the model from
``longvid.rewind.build_model(preset, encoder=..., llm=..., checkpoint=...)``). With
``until`` (breakpoint mode) the video is read only up to ``until`` seconds, so the
answer uses only what an online viewer had seen by then.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch

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


class TimePastEndWarning(UserWarning):
    """The breakpoint time is past the end of the video: the answer sees the whole video."""


def _check_until(video: str | os.PathLike, until: float | None) -> float:
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


@torch.no_grad()
def ask_rewind(
    video: str | os.PathLike,
    question: str,
    model,
    until: float | None = None,
    keep_every: int = 1,
    spill_dir: str | os.PathLike | None = None,
    max_new_tokens: int = 32,
) -> Answer:
    """Watch ``video`` at 1 fps with ``model`` (a :class:`longvid.rewind.ReWind`), the question
    as the memory's instruction, one sub-clip per step, and answer ``question``.

    ``keep_every`` / ``spill_dir``: the frame store's policy (every k-th frame; memory-mapped
    files in that folder).
    """
    from longvid.core.stream import Frames
    from longvid.video import ClipReader

    _check_until(video, until)
    model.eval()
    # Frames at t <= until are kept: the reader stops before ``end``.
    reader = ClipReader(video, clip_frames=model.config.clip_frames, fps=1.0, short_side=None, crop=None, mean=None,
                        std=None, end=None if until is None else until + 1e-3, background=True)
    state = model.init_state(1, instructions=[question], keep_every=keep_every, spill_dir=spill_dir)
    weights = next(model.parameters())  # frames go to the model's device and dtype
    for clip in reader:
        pixels = clip.frames.transpose(0, 1)[None, : clip.num_valid]  # (1, n, 3, H, W) in [0, 1]
        _, state = model(Frames(pixels, clip.timestamps[None, : clip.num_valid]).to(weights.device, weights.dtype), state)
    if int(state.memory.num_frames[0]) == 0:
        raise LongvidError(f"{video}: no frames before {until} s")
    (chosen,) = model.select(state, [question])
    text = model.answer(state, [question], max_new_tokens=max_new_tokens, frames=[chosen])[0]
    (prompt,) = model.prompt_embeddings(state, *model.tokenize([question]), frames=[chosen])
    return Answer(
        text=text,
        frames_seen=int(state.memory.num_frames[0]),
        memory_tokens=int(state.memory.lengths[0]),
        llm_input_tokens=len(prompt),
        selected_times=[float(t) for t in state.memory.times[0, chosen.to(state.memory.times.device)]],
        memory_bytes=state.memory.nbytes,
        buffer_ram_bytes=state.frames.ram_nbytes,
        buffer_disk_bytes=state.frames.disk_nbytes,
    )


def load_malmm(preset: str, encoder: str, llm: str, qformer_tokenizer: str | None,
               weights: str | os.PathLike | None = None, device=None):
    """An MA-LMM from a preset, an image encoder, an LLM and a Q-Former tokenizer (paths or
    hub ids), and trained weights (ours or a released ``.pth``; None: a random Q-Former)."""
    from longvid.malmm import build_model, load_malmm_weights

    tensors = _read_weights(weights)
    model = build_model(preset, encoder=encoder, llm=llm, qformer_tokenizer=qformer_tokenizer, device=device)
    if tensors is not None:
        _load_weights(load_malmm_weights, model, tensors, weights)
    return model


def _read_weights(path: str | os.PathLike | None) -> dict[str, torch.Tensor] | None:
    from longvid.core.checkpoints import read_state_dict

    if path is None:
        return None
    if not os.path.isfile(path):
        raise LongvidError(f"{path}: no such weights file")
    return read_state_dict(path)


def _load_weights(load, model, tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """``load(model, tensors)``, its errors naming the file."""
    from longvid.core.checkpoints import CheckpointError

    try:
        load(model, tensors)
    except LongvidError as err:
        raise CheckpointError(f"{os.fspath(path)}: {err}") from None


@torch.no_grad()
def ask_malmm(
    video: str | os.PathLike,
    question: str,
    model,
    until: float | None = None,
    num_frames: int = 20,
    fps: float | None = None,
) -> Answer:
    """Watch ``video`` with ``model`` (a :class:`longvid.malmm.MALMM` with encoder and LLM)
    one frame at a time and answer ``question`` (also the Q-Former instruction).

    Frames: ``num_frames`` spread uniformly over the video (or over ``[0, until]``), or a
    fixed ``fps`` for online use on videos of any length (memory stays at L slots).
    """
    from longvid.core.stream import Frames
    from longvid.video import ClipReader

    duration = _check_until(video, until)
    if fps is None:
        if num_frames < 1:
            raise LongvidError(f"--frames must be >= 1, got {num_frames}")
        span = duration if until is None else min(until, duration)
        fps = num_frames / span if span > 0 else 1.0
    reader = ClipReader(video, clip_frames=1, fps=fps, short_side=None, crop=None, mean=None, std=None, tail="drop",
                        end=None if until is None else until + 1e-3, background=True)
    model.eval()
    state = model.init_state(1, instructions=[question])
    weights = next(model.parameters())  # frames go to the model's device and dtype
    for clip in reader:  # one frame per clip: (3, 1, H, W) in [0, 1]
        frames = Frames(clip.frames.permute(1, 0, 2, 3)[None], clip.timestamps[None]).to(weights.device, weights.dtype)  # (1, 1, 3, H, W)
        _, state = model(frames, state)
    if int(state.frames_seen[0]) == 0:
        raise LongvidError(f"{video}: no frames were read")
    prompt_tokens = len(model.llm.tokenize_prompts([question])[0])
    return Answer(
        text=model.answer(state, [question])[0],
        frames_seen=int(state.frames_seen[0]),
        memory_tokens=state.memory_tokens(),
        llm_input_tokens=int(state.visual_tokens()[0]) + prompt_tokens,
        selected_times=[],
        memory_bytes=state.nbytes,
        buffer_ram_bytes=0,
        buffer_disk_bytes=0,
    )
