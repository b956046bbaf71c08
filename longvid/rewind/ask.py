"""Ask a ReWind a question about a video file: stream it at 1 fps into the memory, then answer.

:func:`ask_rewind` is what ``longvid ask VIDEO "question" --model rewind`` runs (the model from
``longvid.rewind.build_model(preset, encoder=..., llm=..., checkpoint=...)``, or from trained
weights with their JSON record). With ``until`` (breakpoint mode) the video is read only up to
``until`` seconds, so the answer uses only what an online viewer had seen by then.
"""

from __future__ import annotations

import os

import torch

from longvid.core.asking import Answer, AskOptions, check_until
from longvid.errors import LongvidError

TRAINED_PARTS = "memory, projections and LoRA adapters"  # what trained weights hold (the rest is frozen)
DEFAULT_PRESET = "rewind_paper"


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

    check_until(video, until)
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


def weights_record(weights: str | None, preset: str | None) -> dict | None:
    """The JSON record beside trained ReWind ``weights`` (its preset, encoder and LLM), if any;
    a ``preset`` other than the record's is an error."""
    from longvid.rewind.weights import config_path, read_weights_config

    if weights is None or not os.path.isfile(config_path(weights)):
        return None
    record = read_weights_config(weights)
    if preset is not None and preset != record["preset"]:
        raise LongvidError(f"{weights} holds {record['preset']} weights, not --preset {preset}")
    return record


def needs_backbones(options: AskOptions) -> bool:
    """Whether the encoder and the LLM must be given: not when the weights' record names them."""
    return weights_record(options.weights, options.preset) is None


def check_trained(weights: str) -> None:
    """ReWind weights with their JSON record that never went through a training stage: an error."""
    from longvid.rewind.weights import trained_stages

    if trained_stages(weights) == []:
        raise LongvidError(f"{weights}: its record says these ReWind weights were never trained (no stage); "
                           f"--allow-untrained runs them anyway")


def answer(video: str | os.PathLike, question: str, options: AskOptions) -> Answer:
    """Load the ReWind ``options`` name (from the weights' record when there is one, its frozen parts
    unless ``encoder``/``llm`` give local copies) and answer ``question`` about ``video``."""
    from longvid.precision import for_inference
    from longvid.rewind import build_model
    from longvid.rewind.weights import load_weights

    if weights_record(options.weights, options.preset) is not None:
        model = load_weights(options.weights, encoder=options.encoder, llm=options.llm, device=options.device)
    else:
        model = build_model(options.preset or DEFAULT_PRESET, encoder=options.encoder, llm=options.llm,
                            checkpoint=options.weights, device=options.device)
    model = for_inference(model, options.dtype)
    return ask_rewind(video, question, model, until=options.until, keep_every=options.keep_every,
                      spill_dir=options.spill_dir, max_new_tokens=options.max_new_tokens)


def summary(answer: Answer, options: AskOptions) -> str:
    """One line: what the answer cost (frames, tokens, the frames DFS selected, memory and buffer bytes)."""
    when = f"up to {options.until:g} s" if options.until is not None else "whole video"
    times = ", ".join(f"{t:g}" for t in answer.selected_times)
    return (f"[rewind: {answer.frames_seen} frames ({when}), {answer.memory_tokens} memory tokens, "
            f"{answer.llm_input_tokens} LLM input tokens, selected frames at [{times}] s, "
            f"memory {answer.memory_bytes} B, feature buffer {answer.buffer_ram_bytes} B RAM + {answer.buffer_disk_bytes} B disk]")
