"""Ask an MA-LMM a question about a video file: its frames one at a time into the memory bank, then answer.

:func:`load_malmm` and :func:`ask_malmm` are what ``longvid ask VIDEO "question" --model malmm`` runs.
"""

from __future__ import annotations

import os

import torch

from longvid.core.asking import Answer, AskOptions, check_until
from longvid.errors import LongvidError

TRAINED_PARTS = "Q-Former, its queries and the LLM projection"  # what trained weights hold (the rest is frozen)
DEFAULT_PRESET = "malmm_qa"


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

    duration = check_until(video, until)
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


def needs_backbones(options: AskOptions) -> bool:
    """Whether the encoder and the LLM must be given: always for MA-LMM."""
    return True


def check_trained(weights: str) -> None:
    """MA-LMM weights carry no training record: nothing more to check."""


def answer(video: str | os.PathLike, question: str, options: AskOptions) -> Answer:
    """Load the MA-LMM ``options`` name and answer ``question`` about ``video``."""
    from longvid.precision import for_inference

    model = load_malmm(options.preset or DEFAULT_PRESET, options.encoder, options.llm, options.qformer_tokenizer or None,
                       options.weights, device=options.device)
    model = for_inference(model, options.dtype)
    return ask_malmm(video, question, model, until=options.until, num_frames=options.frames, fps=options.fps)


def summary(answer: Answer, options: AskOptions) -> str:
    """One line: what the answer cost (frames, memory, LLM input)."""
    return (f"[malmm: {answer.frames_seen} frames, memory {answer.memory_tokens} tokens / {answer.memory_bytes} B, "
            f"{answer.llm_input_tokens} LLM input tokens]")
