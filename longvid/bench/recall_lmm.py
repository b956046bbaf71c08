"""MA-LMM and ReWind rows of ``longvid bench``: the same recall videos, distances and paired
held-out scenes as the MeMViT rows, answered through an LLM.

Each system is its family's tiny self-contained preset (``malmm_tiny``, ``rewind_tiny``: a
tiny random frozen CLIP tower and a tiny random frozen LLaMA, nothing downloaded), built with
:func:`longvid.registry.build_model` and driven through the stream contract only: ``init_state`` with
the question as instruction, one ``model(Frames, state)`` step per clip, then
``score(state, questions, class names)`` (closed-set answer: the class name the LLM finds most
likely). The LLM is given the benchmark's words (its vocabulary) and large random weights, so
that a visual prefix can steer a frozen random LLM (see :func:`longvid.core.tiny.tiny_llm`).

* MA-LMM trains its Q-Former side (Q-Former with its memory banks, ``ln_vision``,
  ``image_pe``, ``llm_proj``) with the answer cross-entropy of the LLM adapter on
  ``visual_prefixes`` through :func:`longvid.rewind.stages.train_stage`.
* ReWind trains in two stages through :func:`longvid.rewind.stages.train_stage`: stage 1, the
  frame-level caption loss (:meth:`ReWind.frame_contrastive_loss`: each frame's memory tokens
  against "the <class> flashes" and "an object flashes", positives where the frame shows the
  cue), which trains the memory to keep each frame and DFS's relevance; stage 2, its stage-2
  parts (memory, projections, LoRA) with the answer cross-entropy (``model.answer_loss``) plus
  the same caption loss (without it the answer loss erases what the memory keeps of each frame).

Both watch every ``frame_stride``-th frame (an LMM's sparse sampling; the cue shows on two
consecutive frames, so a stride of 2 always catches it). Their memory covers the whole video
(MA-LMM: a bank of ``L`` slots merged by similarity; ReWind: 2 tokens per frame), so every
distance is within their reach. Compute per clip counts the image encoder and the memory
(what runs on every step); the LLM runs once per answer and is counted apart.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from longvid.core import measure
from longvid.data.synth import COLOURS, SHAPES, SynthSpec, caption_positives, class_name, frame_captions
from longvid.core.stream import Frames
from longvid.registry import build_model

QUESTION = "Which object flashed in the video?"
WORDS = ("which", "object", "flashed", "in", "the", "video", "?", *COLOURS, *SHAPES)
CAPTION_WORDS = ("flashes", "an")  # ReWind's captions' words beyond WORDS


@dataclass(frozen=True)
class LMMRow:
    """One LLM-based system of the table and its training recipe."""

    name: str
    family: str  # "MA-LMM" or "ReWind"
    preset: str
    frame_stride: int = 2
    train_videos: int = 256
    epochs: int = 4
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 8
    llm_init_std: float = 0.5
    # ReWind only: stage 1 (frame-level caption loss, ReWind.frame_contrastive_loss) steps before
    # stage 2, the caption loss's weight in stage 2, and DFS's L (None: the preset's).
    stage1_steps: int = 0
    stage1_lr: float = 2e-3
    caption_weight: float = 0.0
    top_l: int | None = None

    def with_(self, **changes) -> "LMMRow":
        return dataclasses.replace(self, **changes)


def malmm() -> LMMRow:
    """``malmm_tiny``: memory banks of L = 5 slots, so a 10-frame video is compressed 5 times."""
    from longvid.malmm import get_config

    length = get_config("malmm_tiny").qformer.memory_bank_length
    return LMMRow(f"MA-LMM L={length}", "MA-LMM", "malmm_tiny", train_videos=512, epochs=6)


def rewind() -> LMMRow:
    """``rewind_tiny`` trained as the paper does: stage 1 (frame-level captions, SigLIP) then
    stage 2 (answers), which keeps the caption loss (as ``longvid bench rewind``); DFS keeps L = 4
    frames by relevance (as ``longvid bench rewind``), then K_c = 2 by DPC-KNN."""
    return LMMRow("ReWind", "ReWind", "rewind_tiny", train_videos=1024, epochs=8, stage1_steps=100, caption_weight=1.0,
                  top_l=4)


# -- inputs ------------------------------------------------------------------------------------


def as_frames(clips: torch.Tensor, spec: SynthSpec, stride: int) -> Frames:
    """uint8 videos ``(V, N, C, T, H, W)`` -> :class:`Frames` of every ``stride``-th frame:
    pixels ``(V, N*T/stride, 3, H, W)`` in [0, 1] and their timestamps (seconds)."""
    pixels = clips.permute(0, 1, 3, 2, 4, 5).flatten(1, 2)[:, ::stride]  # (V, F, C, H, W)
    times = torch.arange(0, clips.shape[1] * clips.shape[3], stride, dtype=torch.float64) / spec.sample_fps
    return Frames(pixels.float() / 255.0, times.expand(clips.shape[0], -1).contiguous())


def clip_steps(frames: Frames, per_clip: int):
    """The stream's steps: ``per_clip`` frames (one clip) at a time."""
    for first in range(0, frames.num_frames, per_clip):
        part = slice(first, first + per_clip)
        yield Frames(frames.pixels[:, part], frames.timestamps[:, part])


def llm_width(preset: str) -> int:
    """The LLM width the tiny preset's projections are built for."""
    from longvid.malmm import get_config as malmm_config
    from longvid.rewind.config import get_config as rewind_config

    return malmm_config(preset).llm_hidden if preset.startswith("malmm") else rewind_config(preset).llm_dim


def vocabulary(row: LMMRow) -> tuple[str, ...]:
    """The tiny LLM's words: :data:`WORDS`, and ReWind's captions' words when it trains with them."""
    return WORDS + CAPTION_WORDS if row.stage1_steps or row.caption_weight else WORDS


def build(row: LMMRow, seed: int) -> torch.nn.Module:
    """The row's tiny preset (its own tiny random image encoder from ``seed``) with a tiny random
    LLM that knows the benchmark's words; ReWind with its stage-2 parts trainable."""
    from longvid.core.tiny import tiny_llm

    llm = tiny_llm(hidden=llm_width(row.preset), words=vocabulary(row), seed=seed, init_std=row.llm_init_std)
    overrides = {} if row.top_l is None else {"top_l": row.top_l}
    model = build_model(row.preset, llm=llm, seed=seed, **overrides)
    if row.family == "ReWind":
        model.set_stage(2)
    return model


def cue_frames(cue_clips: torch.Tensor, num_clips: int, spec: SynthSpec, stride: int) -> torch.Tensor:
    """``(V, F)`` bool: which of the frames :func:`as_frames` keeps show the cue, for videos whose
    cue flashes in clip ``cue_clips (V,)``."""
    first, last = spec.cue_samples()
    shown = torch.zeros(len(cue_clips), num_clips, spec.clip_frames, dtype=torch.bool)
    shown[torch.arange(len(cue_clips)), cue_clips, first : last + 1] = True
    return shown.flatten(1)[:, ::stride]


# -- training and evaluation ----------------------------------------------------------------------


class Watcher:
    """How a row's model watches a batch of videos: ``state = watcher(model, frames)``, one
    ``model(Frames, state)`` step per clip, the question as the memory's instruction."""

    def __init__(self, row: LMMRow, spec: SynthSpec):
        self.row = row
        self.per_clip = max(1, spec.clip_frames // row.frame_stride)

    def __call__(self, model, frames: Frames):
        state = model.init_state(frames.batch_size, instructions=[QUESTION] * frames.batch_size)
        for step in clip_steps(frames, self.per_clip):
            _, state = model(step, state)
        return state


def answer_loss(model, state, questions: list[str], answers: list[str]) -> torch.Tensor:
    """The answers' cross-entropy from the streams' states."""
    if hasattr(model, "answer_loss"):
        return model.answer_loss(state, questions, answers)
    return model.llm.loss(model.visual_prefixes(state), questions, answers)


def caption_loss(model, state, labels: torch.Tensor, shown: torch.Tensor, num_classes: int) -> torch.Tensor:
    """ReWind's frame-level stage-1 loss (:meth:`ReWind.frame_contrastive_loss`) on the frames
    watched into ``state``: a frame that shows the cue (``shown (B, F)``) matches "the <class>
    flashes" of its video's ``labels (B,)`` and :data:`~longvid.data.synth.GENERIC_CAPTION`; any other frame no caption."""
    tokens = torch.cat([state.memory.frame_tokens(b)[0] for b in range(state.batch_size)])  # (B*F, N_W, D)
    classes = torch.where(shown, labels[:, None], -1).flatten()  # (B*F,) -1: no cue
    positives = caption_positives(classes, num_classes)  # (B*F, K + 1)
    return model.frame_contrastive_loss(tokens, positives, *model.tokenize(frame_captions(num_classes)))


def train(row: LMMRow, model, frames: Frames, labels: torch.Tensor, spec: SynthSpec, seed: int,
          shown: torch.Tensor | None = None, on_step=None) -> int:
    """Train ``model`` on the videos ``frames`` (answers: class names of ``labels``; ``shown (V, F)``:
    the frames that show the cue, for ReWind's caption loss) for ``row.epochs``, after
    ``row.stage1_steps`` steps of stage 1; returns the number of clips watched."""
    from longvid.rewind.stages import StageConfig, train_stage

    watcher = Watcher(row, spec)
    answers = [class_name(int(y)) for y in labels]
    videos = frames.batch_size
    per_epoch = max(1, videos // row.batch_size)
    steps = row.epochs * per_epoch
    if (row.stage1_steps or row.caption_weight) and shown is None:
        raise ValueError("ReWind's caption loss needs the frames that show the cue (shown)")

    def batch(step: int) -> torch.Tensor:
        epoch, offset = divmod(step, per_epoch)
        order = torch.randperm(videos, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        return order[offset * row.batch_size : (offset + 1) * row.batch_size]

    def captions(model, state, index: torch.Tensor) -> torch.Tensor:
        return caption_loss(model, state, labels[index], shown[index], spec.num_classes)

    def stage1(model, index: torch.Tensor) -> torch.Tensor:
        return captions(model, watcher(model, frames.index_select(index)), index)

    def loss(model, index: torch.Tensor) -> torch.Tensor:
        state = watcher(model, frames.index_select(index))
        value = answer_loss(model, state, [QUESTION] * len(index), [answers[int(i)] for i in index])
        return value + row.caption_weight * captions(model, state, index) if row.caption_weight else value

    if row.stage1_steps:
        model.set_stage(1)
        config = StageConfig(steps=row.stage1_steps, lr=row.stage1_lr, warmup_steps=row.warmup_steps, seed=seed,
                             checkpoint_every=10**9)
        train_stage(model, stage1, batch, config, on_step=on_step)
        model.set_stage(2)
    config = StageConfig(steps=steps, lr=row.lr, warmup_steps=row.warmup_steps, seed=seed, checkpoint_every=10**9)
    train_stage(model, loss, batch, config, on_step=on_step)
    clips_per_video = -(-frames.num_frames // watcher.per_clip)
    return (row.stage1_steps + steps) * row.batch_size * clips_per_video


@torch.no_grad()
def accuracy(row: LMMRow, model, frames: Frames, labels: torch.Tensor, spec: SynthSpec, batch_size: int = 32) -> float:
    """Closed-set accuracy (%): the class name the LLM scores highest after watching each video."""
    model.eval()
    watcher = Watcher(row, spec)
    names = [class_name(k) for k in range(spec.num_classes)]
    correct = 0
    for first in range(0, frames.batch_size, batch_size):
        index = torch.arange(first, min(first + batch_size, frames.batch_size))
        state = watcher(model, frames.index_select(index))
        scores = model.score(state, [QUESTION] * len(index), names)  # (B, K)
        correct += int((scores.argmax(1) == labels[index]).sum())
    return 100.0 * correct / frames.batch_size


# -- costs ------------------------------------------------------------------------------------------


def costs(row: LMMRow, model, frames: Frames, spec: SynthSpec, batch_size: int) -> dict:
    """GFLOPs of one clip step (encoder + memory, at the end of a video) and of one answer
    (the LLM scoring the K class names), parameters (encoder + memory side; the LLM apart),
    state bytes per stream, peak memory of a training step and of streaming, and inference clips/s."""
    model.eval()
    watcher = Watcher(row, spec)
    names = [class_name(k) for k in range(spec.num_classes)]
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.requires_grad_(False)  # counting modes hook module inputs: no autograd leaves wanted here
    try:
        with torch.no_grad():
            one = frames.index_select(torch.arange(1))
            steps = list(clip_steps(one, watcher.per_clip))
            state = model.init_state(1, instructions=[QUESTION])
            for step in steps[:-1]:
                _, state = model(step, state)
            clip_flops = _flops(lambda: model(steps[-1], state))
            _, last = model(steps[-1], state)
            answer_flops = _flops(lambda: model.score(last, [QUESTION], names))
            infer_mb = measure.peak_mb(lambda: watcher(model, one), model)
            batch = frames.index_select(torch.arange(min(batch_size, frames.batch_size)))
            started = time.perf_counter()
            watcher(model, batch)
            seconds = time.perf_counter() - started
    finally:
        for p in trainable:
            p.requires_grad_(True)
    train_mb = measure.peak_mb(lambda: _train_step(row, model, batch, spec), model)
    model.eval()
    llm_params = sum(p.numel() for n, p in model.named_parameters() if n.startswith("llm.") and "lora_" not in n)
    return {
        "gflops": clip_flops / 1e9,
        "llm_gflops_per_answer": answer_flops / 1e9,
        "params": sum(p.numel() for p in model.parameters()) - llm_params,
        "llm_params": llm_params,
        "state_bytes": last.nbytes,
        "train_mem_mb": train_mb,
        "infer_mem_mb": infer_mb,
        "infer_clips_per_s": batch.batch_size * len(steps) / seconds,
    }


def _flops(run) -> float:
    """Multiply-adds of ``run()`` (fvcore's convention: one multiply-add = one FLOP)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return counter.get_total_flops() / 2


def _train_step(row: LMMRow, model, frames: Frames, spec: SynthSpec) -> None:
    """One AdamW step on ``frames`` (what a training step holds at its peak; it changes the
    weights, so it runs after the evaluation)."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    state = Watcher(row, spec)(model, frames)
    answer_loss(model, state, [QUESTION] * frames.batch_size, [class_name(0)] * frames.batch_size).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
