"""MA-LMM on the benchmark's QA ``recall`` task: memory vs no memory, tiny models trained here.

Setup (all random, nothing downloaded): a tiny CLIP vision tower and a tiny LLaMA-style
LLM are written with :mod:`longvid.core.tiny` and stay frozen; only the Q-Former side
(``ln_vision``, ``image_pe``, the Q-Former, ``llm_proj``) is trained, with the answer
cross-entropy (:meth:`MALMM.loss`) through :class:`longvid.malmm.qa.QATrainer`.

Videos are :func:`longvid.data.synth.recall_sample` scenes of ``num_clips`` clips x
``clip_frames`` frames; the cue flashes on one frame, ``distances`` clips before the last
clip, and the question is "Which object flashed in the video?". The frozen encoder's
tokens are computed once per video and shared by every system. Systems:

* ``malmm``: MA-LMM (``malmm_tiny`` with memory bank length ``memory_length`` < the number
  of frames, so memory bank compression runs) watches every frame online; the LLM gets
  the last frame's ``Q`` query outputs.
* ``last``: the InstructBLIP baseline (``instructblip_tiny``: no memory, frames
  independent) at the same online budget: it sees the last ``last_frames`` frames only
  and the LLM gets their ``last_frames x Q`` query outputs.
* ``concat`` (optional): InstructBLIP over every frame, all ``T x Q`` query outputs
  concatenated for the LLM: it sees the cue, but its LLM input and state grow with T.

Scoring is closed-set: the answer is the class name with the highest LLM log-likelihood
(:meth:`MALMM.score`) among the ``num_classes`` names; accuracy is on held-out seeds.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch

from longvid.data.synth import COLOURS, SHAPES, Sample, SynthSpec, class_name, make_sample, scene_clips
from longvid.errors import LongvidError
from longvid.core.encoders import FrozenImageEncoder
from longvid.core.llm import CausalLM
from longvid.malmm import MALMM, get_config
from longvid.core.tiny import DEFAULT_WORDS, save_tiny_llm, save_tiny_vision
from longvid.engine.config import TrainConfig
from longvid.core.seeding import seed_everything
from longvid.malmm.qa import QAExample, QATrainer

SYSTEMS = ("malmm", "last", "concat")
QA_WORDS = (*DEFAULT_WORDS, *COLOURS, *SHAPES, "object", "flashed", "flash", "many", "times", "did", "or", "?", ",")


@dataclass(frozen=True)
class MALMMBenchSpec:
    """The task, the tiny models and the training run.

    num_clips x clip_frames = T frames per video (``size`` pixels square); the cue is
    ``distances`` clips before the last one; ``memory_length`` = L bank slots for MA-LMM;
    ``last_frames`` = frames the ``last`` baseline sees; ``qformer_instruction``: give the
    question to the Q-Former too (off by default: the recall question never changes, so it
    only costs time); ``llm_init_std``: std of the frozen random LLM's weights (see
    :func:`~longvid.core.tiny.save_tiny_llm`); ``train`` = the optimisation
    settings (its ``out_dir`` is replaced by the benchmark's work folder).
    """

    num_clips: int = 6
    clip_frames: int = 2
    size: int = 32
    num_classes: int = 4
    distances: tuple[int, ...] = (2, 3, 4)
    memory_length: int = 4
    last_frames: int = 1
    train_videos: int = 512
    test_videos: int = 256
    test_seed: int = 1_000_000
    qformer_instruction: bool = False
    llm_hidden: int = 32
    llm_init_std: float = 0.5
    systems: tuple[str, ...] = ("malmm", "last")
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(batch_size=16, epochs=8, lr=5e-3, warmup_steps=5, weight_decay=0.0, clip_grad=1.0, log_every=32)
    )

    @property
    def num_frames(self) -> int:
        return self.num_clips * self.clip_frames

    def synth(self) -> SynthSpec:
        return SynthSpec(clip_frames=self.clip_frames, size=self.size, num_classes=self.num_classes)

    def validate(self) -> "MALMMBenchSpec":
        unknown = sorted(set(self.systems) - set(SYSTEMS))
        if unknown:
            raise LongvidError(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
        if not 1 <= self.memory_length < self.num_frames:
            raise LongvidError(f"memory_length must be in 1..{self.num_frames - 1} so that compression runs, got {self.memory_length}")
        if not 1 <= self.last_frames <= self.num_frames:
            raise LongvidError(f"last_frames must be in 1..{self.num_frames}, got {self.last_frames}")
        if min(self.distances) < 1:
            raise LongvidError(f"recall distances must be >= 1 (the cue before the last clip), got {self.distances}")
        return self


def quick_spec(spec: MALMMBenchSpec) -> MALMMBenchSpec:
    """``longvid bench malmm --quick``: a smoke run (too little training for the memory margin)."""
    return replace(spec, train_videos=128, test_videos=64, train=replace(spec.train, epochs=3))


@dataclass
class RecallSet:
    """Encoder tokens ``(N, T, Nv, Cv)`` of N recall videos, their question, answers and labels ``(N,)``."""

    tokens: torch.Tensor
    question: str
    answers: list[str]
    labels: torch.Tensor


def video_frames(seed: int, spec: MALMMBenchSpec) -> tuple[torch.Tensor, Sample]:
    """A recall video's frames ``(T, 3, H, W)`` in [0, 1] and its sample (answer, label, distance)."""
    synth = spec.synth()
    sample = make_sample("recall", seed, synth, spec.num_clips, spec.distances)
    clips = scene_clips(sample.scene, synth, normalize=False)  # (num_clips, 3, t, H, W) uint8
    frames = clips.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (T, 3, H, W)
    return frames.float() / 255.0, sample


@torch.no_grad()
def encode_recall_set(encoder: FrozenImageEncoder, seeds: Sequence[int], spec: MALMMBenchSpec) -> RecallSet:
    """Frozen-encoder tokens of the recall videos of ``seeds`` (computed once, shared by all systems)."""
    tokens, answers, labels, question = [], [], [], ""
    for seed in seeds:
        frames, sample = video_frames(seed, spec)
        tokens.append(encoder.encode_frames(frames))  # (T, Nv, Cv)
        answers.append(sample.answer)
        labels.append(sample.label)
        question = sample.question
    return RecallSet(torch.stack(tokens), question, answers, torch.tensor(labels))


def system_view(system: str, tokens: torch.Tensor, spec: MALMMBenchSpec) -> torch.Tensor:
    """The frames a system watches: all of them, or the last ``last_frames`` (``last``). ``(N, T', Nv, Cv)``."""
    return tokens[:, -spec.last_frames :] if system == "last" else tokens


def build_system(system: str, spec: MALMMBenchSpec, encoder_width: int, llm: CausalLM) -> MALMM:
    """A fresh tiny MA-LMM (``malmm``) or InstructBLIP (``last``, ``concat``) around the frozen LLM
    (with ``qformer_instruction``, the LLM's tokenizer feeds the question to the Q-Former)."""
    preset = "malmm_tiny" if system == "malmm" else "instructblip_tiny"
    config = get_config(preset, llm_hidden=llm.hidden_size, max_num_frames=max(16, spec.num_frames))
    length = spec.memory_length if system == "malmm" else 0
    config = replace(config, qformer=replace(config.qformer, encoder_width=encoder_width, memory_bank_length=length))
    return MALMM(config, llm=llm, text_tokenizer=llm.tokenizer if spec.qformer_instruction else None)


@torch.no_grad()
def evaluate_system(model: MALMM, tokens: torch.Tensor, question: str, labels: torch.Tensor, classes: Sequence[str], batch_size: int = 32) -> dict:
    """Closed-set accuracy over ``classes`` on videos ``tokens`` ``(N, T, Nv, Cv)``, with the
    per-stream state size (bytes, stored memory tokens) and the LLM's visual tokens."""
    model.eval()
    correct = 0
    for first in range(0, tokens.shape[0], batch_size):
        batch = tokens[first : first + batch_size]
        prompts = [question] * batch.shape[0]
        _, state = model.step_tokens(batch, model.init_state(batch.shape[0], instructions=prompts))
        scores = model.score(state, prompts, classes)  # (B, K)
        correct += int((scores.argmax(1) == labels[first : first + batch_size]).sum())
    return {
        "accuracy": 100.0 * correct / tokens.shape[0],
        "llm_visual_tokens": int(state.visual_tokens()[0]),
        "memory_bytes": state.nbytes // state.batch_size,
        "memory_tokens": state.memory_tokens(),
    }


def run_malmm_bench(spec: MALMMBenchSpec = MALMMBenchSpec(), work_dir: str | None = None, log: Callable[[str], None] | None = print) -> list[dict]:
    """Train each system of ``spec.systems`` on recall seeds ``0..train_videos-1`` and test it on
    ``test_seed..``; returns one row per system (see :func:`format_table`).

    The figures depend on the process's RNG and thread count, which entry points set
    (``longvid bench malmm``: one thread, ``torch.manual_seed(spec.train.seed)``)."""
    spec.validate()
    with tempfile.TemporaryDirectory() as scratch:
        work_dir = work_dir or scratch
        vision = FrozenImageEncoder.from_pretrained(save_tiny_vision(os.path.join(work_dir, "vision"), image_size=spec.size, patch=8))
        llm = CausalLM.from_pretrained(save_tiny_llm(os.path.join(work_dir, "llm"), hidden=spec.llm_hidden, words=QA_WORDS, init_std=spec.llm_init_std))
        started = time.perf_counter()
        train = encode_recall_set(vision, range(spec.train_videos), spec)
        test = encode_recall_set(vision, range(spec.test_seed, spec.test_seed + spec.test_videos), spec)
        if log:
            log(f"encoded {spec.train_videos} + {spec.test_videos} videos of {spec.num_frames} frames in {time.perf_counter() - started:.1f} s")
        classes = [class_name(k) for k in range(spec.num_classes)]
        return [_run_system(system, spec, vision.width, llm, train, test, classes, work_dir, log) for system in spec.systems]


def _run_system(system, spec, width, llm, train: RecallSet, test: RecallSet, classes, work_dir, log) -> dict:
    """Train one system from scratch, test it; its row."""
    model = build_system(system, spec, width, llm)
    examples = [QAExample(t, train.question, a) for t, a in zip(system_view(system, train.tokens, spec), train.answers)]
    config = replace(spec.train, out_dir=os.path.join(work_dir, f"run_{system}"))
    started = time.perf_counter()
    seed_everything(config.seed)  # the recorded figures: dropout, and the next system's weights, draw from here
    history = QATrainer(model, config, examples, log=(lambda text: log(f"[{system}] {text}")) if log else None).fit()
    seconds = time.perf_counter() - started
    result = evaluate_system(model, system_view(system, test.tokens, spec), test.question, test.labels, classes)
    tail = history[-max(1, len(history) // 10) :]
    return {
        "system": system,
        "memory": f"L={spec.memory_length}" if system == "malmm" else "none",
        "frames_seen": spec.last_frames if system == "last" else spec.num_frames,
        **result,
        "chance": 100.0 / spec.num_classes,
        "final_loss": sum(r["loss"] for r in tail) / len(tail),
        "train_seconds": seconds,
        "test_videos": spec.test_videos,
    }


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table of benchmark rows."""
    header = ("system", "memory", "frames seen", "LLM visual tokens", "state bytes/stream", "accuracy %", "chance %", "final loss", "train s")
    lines = [
        (r["system"], r["memory"], str(r["frames_seen"]), str(r["llm_visual_tokens"]), str(r["memory_bytes"]),
         f"{r['accuracy']:.1f}", f"{r['chance']:.1f}", f"{r['final_loss']:.3f}", f"{r['train_seconds']:.0f}")
        for r in rows
    ]  # fmt: skip
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    render = lambda cells: "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([render(header), render(["-" * w for w in widths]), *map(render, lines)])
