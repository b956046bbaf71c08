"""ReWind on the generated benchmark: a grounding table and a QA table with tiny models.

Videos come from :mod:`longvid.data.synth` at 1 fps (``spec.synth``: 4-frame clips of
4 s, 32x32 frames). Everything is built in memory with random weights, nothing downloaded
or written: a tiny frozen CLIP tower (:func:`longvid.core.tiny.tiny_vision`) whose
per-frame features are computed once per video and cached, and a tiny LLaMA
(:func:`longvid.core.tiny.tiny_llm`) whose word list covers the benchmark's text. The
models are driven through their public API only: ``init_state`` with the questions as
instructions, ``watch_features`` / ``observe_features`` steps, ``select``, ``score``,
``ground`` and the losses, each row's frame selector passed in.

* :func:`grounding_table`: ReWind (memory + DFS, grounding head on the LLM) against the
  same LLM reading ``K`` uniformly sampled frames, and two trivial intervals (the whole
  video; a centred interval of the mean training length); R@0.3/0.5/0.7 and mIoU on
  held-out seeds.
* :func:`qa_tables`: ReWind with and without dynamic frame selection on the ``qa`` task
  (recall / count / order / where, worded with the stage-1 captions' words:
  :func:`bench_sample`), accuracy by closed-set scoring, with reference rows that bound what
  selection is worth: the DFS model reading ``K_c`` random frames
  (:class:`~longvid.rewind.RandomSelector`) or the frames the question needs
  (:class:`~longvid.rewind.OracleSelector` given :meth:`Item.question_intervals`); and the memory
  table (:func:`memory_rows`: a linear probe from a frame's memory tokens to its cue class);
  optionally averaged over several seeds (``qa_seeds``).

Rows also report the LLM input length (tokens) and the state bytes per video (memory,
instruction and stored frame features). ReWind is trained with
:func:`longvid.rewind.stages.train_stage`: stage 1 (SigLIP loss between frames and their
captions for QA, :func:`stage1_loss`; between sub-clips and theirs for grounding,
:func:`clip_stage1_loss`) then stage 2 (answer cross-entropy plus the caption loss for QA,
the DFS model's LLM reading the frames each question needs, ``spec.teacher_frames``;
pointer cross-entropy for grounding). Nothing here changes
process-wide settings: the CLI (``longvid bench rewind``) runs it on one thread.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from longvid.rewind.bench_memory import cue_labels, probe_accuracy, within_video_cosine
from longvid.data.synth import (
    GENERIC_CAPTION, Sample, Scene, SynthSpec, caption_positives, class_name, clip_times, frame_captions, make_sample,
    recall_sample, render, scene_clips,
)
from longvid.errors import LongvidError
from longvid.eval.metrics import grounding_metrics
from longvid.core.llm import CausalLM
from longvid.rewind import DFS, NoSelector, OracleSelector, RandomSelector, ReWind, build_model
from longvid.rewind.baselines import UniformFrames
from longvid.rewind.grounding import best_span, frames_in, pointer_loss, span_seconds
from longvid.rewind.selection import inside_intervals
from longvid.rewind.stages import StageConfig, train_stage

QA_CANDIDATES = {"recall": "classes", "order": "classes", "count": ("0", "1", "2", "3"), "where": ("left", "right")}


@dataclass(frozen=True)
class RewindBenchSpec:
    """Sizes of the ReWind benchmark (defaults: a few minutes of CPU for both tables)."""

    synth: SynthSpec = field(default_factory=lambda: SynthSpec(clip_frames=4, sample_fps=1.0, size=32))
    num_clips: int = 6  # videos of num_clips * 4 frames (24 s at 1 fps)
    train_videos: int = 96  # grounding
    qa_train_videos: int = 256
    probe_videos: int = 256  # the memory probe is fitted on the frames of the first QA training videos
    test_videos: int = 48  # grounding
    qa_test_videos: int = 192  # QA accuracy moves in steps of 0.5 point, not 2
    test_seed: int = 1_000_000  # held-out seeds start here
    batch_size: int = 8
    uniform_frames: int = 8  # K frames the uniform baseline reads
    top_l: int = 4  # DFS's L: 2 K_c (the preset's 8 is a third of a 24-frame video, where 2-6 frames show a cue)
    # DFS cuts its top L at the largest relevance drop before DPC-KNN (selection.relevance_cut). Without it, a
    # question about one moment reads one of its frames and one unrelated frame (5 seeds: QA 65.1 vs 70.8 with it)
    relevance_cut: bool = True
    stage1: StageConfig = StageConfig(steps=30, lr=2e-3, warmup_steps=5)
    stage2: StageConfig = StageConfig(steps=150, lr=3e-3, warmup_steps=10)
    qa_stage2: StageConfig = StageConfig(steps=1000, lr=3e-3, warmup_steps=10)  # 600: DFS 50.5 vs 56.8 at seed 4
    # QA stage 2 with DFS reads the frames DFS selects (None; its relevance is trained by the captions). A number:
    # the first qa_explore_steps read frames drawn from the relevance softmax, then the REINFORCE term of this
    # weight trains the DFS projections on the answers (ReWind.answer_loss): QA 42.7 vs 62.5 with None at seed 0.
    qa_explore_steps: int = 200
    qa_policy_weight: float | None = None
    # QA stage 2 of the DFS model: the share of steps whose LLM reads the frames the question needs (the oracle's)
    # instead of DFS's (1.0: seed 2, QA 69.3 vs 62.0 reading DFS's frames, where/order near chance; 0.5: 5 runs,
    # DFS 68.0 but random frames 58.9, vs 65.1 / 50.2 with 1.0)
    teacher_frames: float = 1.0
    caption_weight: float = 1.0  # QA stage 2 keeps the stage-1 caption loss on its frames, with this weight
    vision_width: int = 32
    llm_hidden: int = 64
    llm_layers: int = 2
    llm_init_std: float = 0.02  # grounding: the pointer head reads hidden states, small random weights keep them smooth
    qa_llm_init_std: float = 0.5  # QA scores answer text: a frozen random LM needs large weights for confident logits
    seed: int = 0
    qa_seeds: tuple[int, ...] = (0,)  # QA: whole runs (backbones, data, training) averaged over these seeds


def quick_spec(spec: RewindBenchSpec) -> RewindBenchSpec:
    """``longvid bench rewind --quick``: a smoke run (too little training for the margins)."""
    return dataclasses.replace(spec, train_videos=32, qa_train_videos=32, test_videos=16, qa_test_videos=16,
                               stage1=dataclasses.replace(spec.stage1, steps=10), stage2=dataclasses.replace(spec.stage2, steps=20),
                               qa_stage2=dataclasses.replace(spec.qa_stage2, steps=20), qa_explore_steps=10)


@dataclass
class Item:
    """One video: frozen features ``(N, P, D_v)``, timestamps ``(N,)`` seconds, its sample,
    and its cues as ``(class, start, end)`` seconds."""

    features: torch.Tensor
    times: torch.Tensor
    sample: Sample
    cues: list[tuple[int, float, float]]

    def cue_intervals(self) -> list[tuple[float, float]]:
        """``(start, end)`` seconds of each cue."""
        return [(start, end) for _, start, end in self.cues]

    def question_intervals(self) -> list[tuple[float, float]]:
        """``(start, end)`` seconds of the cues the question needs (what the oracle selector reads):
        for ``count``, the flashes of the class it counts (none when the answer is 0); else every
        cue (``recall`` / ``where``: the one cue; ``order``: both cues it names)."""
        if self.sample.task == "count":
            target = self.sample.meta["target_class"]
            return [(start, end) for cls, start, end in self.cues if cls == target]
        return self.cue_intervals()

    def cue_shown(self) -> torch.Tensor:
        """``(N,)`` bool: the frames on which some cue is visible."""
        return inside_intervals(self.times, self.cue_intervals())

    def cues_on(self, times: torch.Tensor) -> list[int]:
        """Classes of the cues visible at any of ``times``."""
        return [cls for cls, start, end in self.cues if bool(((times >= start) & (times < end)).any())]


# -- building ------------------------------------------------------------------------------


def benchmark_words(spec: RewindBenchSpec) -> list[str]:
    """Every word of the benchmark's questions and answers (the tiny LLM's vocabulary)."""
    texts = [class_name(c) for c in range(spec.synth.num_classes)] + ["flashes", "and", "flash", GENERIC_CAPTION]
    for task in ("recall", "count", "order", "grounding", "qa"):
        for seed in range(40):
            sample = bench_sample(task, seed, spec)
            texts += [sample.question, sample.answer, sample.query, *QA_CANDIDATES.get(sample.task, ())]
    texts += [str(n) for n in range(10)]
    return list(dict.fromkeys(w.lower() for t in texts for w in re.findall(r"\w+|[^\w\s]+", t)))


def bench_sample(task: str, seed: int, spec: RewindBenchSpec) -> Sample:
    """A video of ``task`` (:func:`longvid.data.synth.make_sample`); for ``qa``, the questions are
    worded with the words of the stage-1 captions ("the <class> flashes", "an object flashes"),
    and a quarter of the videos ask ``where`` (left or right half) the one cue flashed: the
    memory's captions say what flashed and when, only the frame itself shows where."""
    if task != "qa":
        return make_sample(task, seed, spec.synth, spec.num_clips)
    if np.random.default_rng([seed, 4]).random() < 0.25:
        return where_sample(seed, spec)
    sample = make_sample("qa", seed, spec.synth, spec.num_clips)
    names = [class_name(e.cls) for e in sample.scene.events]
    if sample.task == "recall":
        question = "which object flashes?"
    elif sample.task == "count":
        question = f"the {class_name(sample.meta['target_class'])} flashes how many times?"
    else:  # order: the two names in the order the generator asked them
        first, second = sorted(names, key=sample.question.index)
        question = f"which flashes first, the {first} or the {second}?"
    return dataclasses.replace(sample, question=question)


def where_sample(seed: int, spec: RewindBenchSpec) -> Sample:
    """One cue (as in ``recall``, 2 clips before the last); the answer is the half of the frame
    ("left" or "right") that holds the centre of the cue, found by rendering the cue's frame
    with and without it. The frames after the cue do not depend on the answer."""
    recall = recall_sample(seed, spec.synth, spec.num_clips, distance=2)
    start, end = recall.scene.event_interval(recall.scene.events[0], spec.synth)
    size = spec.synth.size
    shown, empty = (render(scene, spec.synth, [(start + end) / 2], size, size)[0]
                    for scene in (recall.scene, Scene(recall.scene.seed, recall.scene.num_clips)))
    columns = torch.nonzero((shown - empty).abs().sum(0) > 0.1)[:, 1].float()  # (pixels,) x of the cue's pixels
    half = "left" if float(columns.mean()) < size / 2 else "right"
    name = class_name(recall.label)
    return dataclasses.replace(recall, task="where", label=int(half == "right"), question=f"the {name} flashes where?",
                               answer=half)


def build_backbones(spec: RewindBenchSpec, init_std: float) -> tuple[torch.nn.Module, Callable[[], CausalLM]]:
    """A tiny frozen CLIP encoder, and a function building a fresh tiny LLM (random weights of
    std ``init_std``, the same each time) for each model (LoRA wraps the LLM it is given)."""
    from longvid.core.tiny import tiny_llm, tiny_vision

    encoder = tiny_vision(image_size=spec.synth.size, patch=8, hidden=spec.vision_width, seed=spec.seed)
    words = benchmark_words(spec)
    return encoder, lambda: tiny_llm(hidden=spec.llm_hidden, layers=spec.llm_layers, words=words, seed=spec.seed,
                                     init_std=init_std)


def tiny_rewind(spec: RewindBenchSpec, encoder, llm: CausalLM) -> ReWind:
    """``rewind_tiny`` on the benchmark's backbones with ``L = spec.top_l`` and ``spec.relevance_cut``, its own
    weights drawn from ``spec.seed``."""
    return build_model("rewind_tiny", encoder=encoder, llm=llm, seed=spec.seed, top_l=spec.top_l,
                       relevance_cut=spec.relevance_cut)


# A row's frame selection: ``items -> selector`` for a batch (None: the model's own, DFS).
Selection = Callable[[Sequence["Item"]], object] | None


def reading(rule: str, num_select: int, seed: int) -> Selection:
    """The frames a QA row's LLM reads: ``"dfs"`` (the model's DFS), ``"none"`` (no frames),
    ``"random"`` (``num_select`` random frames) or ``"cue"`` (the oracle: frames of the cues the
    question needs, :meth:`Item.question_intervals`, one of each cue first, topped up at random);
    the random draws come from one generator seeded with ``seed``, in batch order."""
    rules = ("dfs", "none", "random", "cue")
    if rule not in rules:
        raise LongvidError(f"unknown frame reading {rule!r}; choose from {', '.join(rules)}")
    if rule == "dfs":
        return None
    if rule == "none":
        return lambda items: NoSelector()
    generator = torch.Generator().manual_seed(seed)
    if rule == "random":
        return lambda items: RandomSelector(num_select, generator)
    return lambda items: OracleSelector(num_select, [item.question_intervals() for item in items], generator)


def _selector(selection: Selection, items: Sequence[Item]):
    return None if selection is None else selection(items)


@torch.no_grad()
def encode_items(task: str, seeds: Sequence[int], spec: RewindBenchSpec, encoder) -> list[Item]:
    """Videos of ``task`` for ``seeds``, encoded once by the frozen ``encoder``."""
    times = torch.tensor(clip_times(spec.synth, spec.num_clips).reshape(-1), dtype=torch.float64)
    items = []
    for seed in seeds:
        sample = bench_sample(task, seed, spec)
        clips = scene_clips(sample.scene, spec.synth, normalize=False)  # (clips, 3, T, H, W) uint8
        frames = clips.permute(0, 2, 1, 3, 4).flatten(0, 1).float() / 255  # (N, 3, H, W)
        cues = [(e.cls, *sample.scene.event_interval(e, spec.synth)) for e in sample.scene.events]
        items.append(Item(encoder.encode_frames(frames), times, sample, cues))
    return items


def stack(items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Features ``(B, N, P, D_v)``, timestamps ``(B, N)`` and questions of a batch."""
    return (torch.stack([i.features for i in items]), torch.stack([i.times for i in items]),
            [i.sample.question for i in items])


def batch_at(items: Sequence[Item], batch_size: int, seed: int):
    """``step -> batch``: a fresh permutation of ``items`` every epoch, seeded."""
    def batches(step: int) -> list[Item]:
        per_epoch = max(1, len(items) // batch_size)
        epoch, offset = divmod(step, per_epoch)
        order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed + epoch))
        return [items[int(i)] for i in order[offset * batch_size : (offset + 1) * batch_size]]
    return batches


# -- ReWind losses -------------------------------------------------------------------------


def watch(model: ReWind, items: Sequence[Item]):
    """The batch's streams watched with their questions as instructions: ``(state, questions)``."""
    features, times, questions = stack(items)
    state = model.init_state(len(items), instructions=questions)
    return model.watch_features(features, times, state), questions


def caption_loss(model: ReWind, items: Sequence[Item], state, num_classes: int) -> torch.Tensor:
    """Frame-level SigLIP loss (:meth:`ReWind.frame_contrastive_loss`) of the frames of ``items``,
    watched into ``state``: a frame that shows a cue matches "the <class> flashes" of its class
    and :data:`GENERIC_CAPTION`; a frame that shows none matches no caption."""
    tokens = torch.cat([state.memory.frame_tokens(b)[0] for b in range(len(items))])  # (frames, N_W, D)
    labels = torch.cat([cue_labels(i.times, i.cues, num_classes) for i in items])  # (frames,)
    positives = caption_positives(labels, num_classes)  # (frames, classes + 1)
    return model.frame_contrastive_loss(tokens, positives, *model.tokenize(frame_captions(num_classes)))


def stage1_loss(model: ReWind, items: Sequence[Item], num_classes: int) -> torch.Tensor:
    """Stage 1: :func:`caption_loss` of the batch's videos, watched with their questions as instructions."""
    state, _ = watch(model, items)
    return caption_loss(model, items, state, num_classes)


def clip_stage1_loss(model: ReWind, items: Sequence[Item], num_classes: int) -> torch.Tensor:
    """Stage 1 at sub-clip level (the paper's video-caption pairs; the grounding table's): SigLIP
    loss between sub-clips showing exactly one cue and the caption ``"the <class> flashes"`` (one
    sub-clip per class in the batch, so no two pairs share a caption)."""
    features, times, questions = stack(items)
    state = model.init_state(len(items), instructions=questions)
    clip, total = model.config.clip_frames, features.shape[1]
    written, valid, captions = [], [], {}
    for start in range(0, total, clip):  # one sub-clip per step; the last one padded
        frames = torch.arange(start, start + clip).clamp(max=total - 1)  # (F,)
        real = (torch.arange(start, start + clip) < total).expand(len(items), -1)  # (B, F)
        out, state = model.observe_features(features[:, frames], times[:, frames], state, real)
        num_valid = real[0].sum()
        for b, item in enumerate(items):
            shown = item.cues_on(times[b, frames[real[b]]])
            if len(shown) == 1 and shown[0] not in captions:
                captions[shown[0]] = f"the {class_name(shown[0])} flashes"
                written.append(out["memory_tokens"][b])
                valid.append(num_valid)
    if len(written) < 2:
        raise LongvidError("stage 1 needs sub-clips of at least two cue classes in a batch: use larger batches")
    caption_ids, caption_mask = model.tokenize(list(captions.values()))
    return model.contrastive_loss(torch.stack(written), torch.stack(valid), caption_ids, caption_mask)


def qa_loss(model: ReWind, items: Sequence[Item], policy_weight: float | None = None,
            selection: Selection = None, caption_weight: float = 0.0, num_classes: int = 0) -> torch.Tensor:
    """Stage 2 on QA: next-token cross-entropy of the answers with the frames of ``selection``
    (``policy_weight``: see :meth:`ReWind.answer_loss`), plus ``caption_weight`` times the
    stage-1 :func:`caption_loss` of the same frames (without it, the answer loss erases what the
    memory tokens say about each frame: see the memory table)."""
    state, questions = watch(model, items)
    loss = model.answer_loss(state, questions, [i.sample.answer for i in items], policy_weight=policy_weight,
                             selector=_selector(selection, items))
    if caption_weight:
        loss = loss + caption_weight * caption_loss(model, items, state, num_classes)
    return loss


def qa_schedule(spec: RewindBenchSpec, selection: Selection = None, teacher: Selection = None):
    """The QA stage-2 loss for :func:`train_stage` (called once per step): every row reads the
    frames of its selection (DFS: the frames DFS selects), plus the caption loss
    (``spec.caption_weight``); with a ``teacher`` (the DFS row's: the frames the question needs),
    a ``spec.teacher_frames`` share of the steps (drawn, seeded) read the teacher's frames instead.
    With a ``spec.qa_policy_weight``, the other steps of DFS rows read frames drawn from the
    relevance softmax for the first ``spec.qa_explore_steps`` steps, then add the REINFORCE term
    of that weight (:meth:`ReWind.answer_loss`)."""
    steps = itertools.count()
    draws = np.random.default_rng([spec.seed, 7])

    def loss(model: ReWind, items: Sequence[Item]) -> torch.Tensor:
        step = next(steps)
        if teacher is not None and draws.random() < spec.teacher_frames:
            return qa_loss(model, items, None, teacher, spec.caption_weight, spec.synth.num_classes)
        weight = None if spec.qa_policy_weight is None else 0.0 if step < spec.qa_explore_steps else spec.qa_policy_weight
        return qa_loss(model, items, weight, selection, spec.caption_weight, spec.synth.num_classes)

    return loss


def grounding_loss(model: ReWind, items: Sequence[Item]) -> torch.Tensor:
    """Stage 2 on grounding: pointer cross-entropy at the target's first and last frames."""
    state, questions = watch(model, items)
    targets = torch.tensor([frames_in(i.times, i.sample.target) for i in items])
    return model.grounding_loss(state, questions, targets)


def train_rewind(model: ReWind, items: Sequence[Item], task_loss, spec: RewindBenchSpec,
                 stage2: StageConfig | None = None, stage1=stage1_loss) -> dict[str, list[float]]:
    """Stage 1 then stage 2 (``task_loss``, ``stage2`` or ``spec.stage2`` steps) on ``items``;
    returns each stage's losses."""
    model.set_stage(1)
    captions = functools.partial(stage1, num_classes=spec.synth.num_classes)
    first = train_stage(model, captions, batch_at(items, spec.batch_size, spec.seed), spec.stage1)
    model.set_stage(2)
    second = train_stage(model, task_loss, batch_at(items, spec.batch_size, spec.seed + 1), stage2 or spec.stage2)
    return {"stage1": first, "stage2": second}


# -- the uniform-frame baseline ----------------------------------------------------------------


def uniform_loss(model: UniformFrames, items: Sequence[Item]) -> torch.Tensor:
    """Pointer cross-entropy at the sampled frames nearest the target's first and last frames."""
    features, times, questions = stack(items)
    sampled = times[0, model.sampled(times.shape[1])]
    targets = torch.tensor([frames_in(sampled, i.sample.target) for i in items])
    return pointer_loss(model.ground_logits(features, questions), targets)


# -- evaluation --------------------------------------------------------------------------------


@torch.no_grad()
def ground_rewind(model: ReWind, items: Sequence[Item], batch_size: int) -> tuple[torch.Tensor, dict]:
    """Predicted intervals ``(n, 2)`` and per-video costs (LLM tokens, memory bytes)."""
    predicted, cost = [], {}
    for first in range(0, len(items), batch_size):
        state, questions = watch(model, items[first : first + batch_size])
        predicted.append(model.ground(state, questions))
        cost = rewind_cost(model, state, questions[0])
    return torch.cat(predicted), cost


def rewind_cost(model: ReWind, state, question: str, frames: list[torch.Tensor] | None = None) -> dict[str, int]:
    """LLM input tokens of stream 0 of ``state`` (reading ``frames[0]``; None: the model's
    selection) and the state's bytes per stream (memory, instruction, stored frame features)."""
    ids, mask = model.tokenize([question])
    first = state.index_select(torch.tensor([0]))
    prompt = model.prompt_embeddings(first, ids, mask, frames=None if frames is None else frames[:1])[0]
    return {"llm_tokens": len(prompt), "memory_bytes": state.nbytes // state.batch_size}


@torch.no_grad()
def ground_uniform(model: UniformFrames, items: Sequence[Item], batch_size: int) -> torch.Tensor:
    """Predicted intervals ``(n, 2)`` of the uniform baseline."""
    predicted = []
    for first in range(0, len(items), batch_size):
        features, times, questions = stack(items[first : first + batch_size])
        logits = model.ground_logits(features, questions)
        sampled = times[0, model.sampled(times.shape[1])]
        predicted += [span_seconds(sampled, *best_span(row)) for row in logits]
    return torch.tensor(predicted, dtype=torch.float64)


def candidates_for(sample: Sample, num_classes: int) -> list[str]:
    """Closed answer set of a QA sample: the class names, or the counts."""
    choice = QA_CANDIDATES[sample.task]
    return [class_name(c) for c in range(num_classes)] if choice == "classes" else list(choice)


@torch.no_grad()
def qa_accuracy(model: ReWind, items: Sequence[Item], spec: RewindBenchSpec,
                selection: Selection = None) -> tuple[dict[str, float], dict]:
    """Accuracy (%) by closed-set scoring with the frames of ``selection`` (chosen once per batch),
    overall (``"all"``) and per question type, and per-video costs plus ``cue_frames``: the
    share (%) of the frames read that show a cue."""
    correct = {task: [] for task in ("all", *QA_CANDIDATES)}
    cost, shown, picked = {}, 0, 0
    for first in range(0, len(items), spec.batch_size):
        batch = items[first : first + spec.batch_size]
        state, questions = watch(model, batch)
        frames = model.select(state, questions, selector=_selector(selection, batch))
        cost = rewind_cost(model, state, questions[0], frames)
        for item, chosen in zip(batch, frames):
            shown += int(item.cue_shown()[chosen].sum())
            picked += len(chosen)
        for task in QA_CANDIDATES:
            rows = [b for b, item in enumerate(batch) if item.sample.task == task]
            if not rows:
                continue
            options = candidates_for(batch[rows[0]].sample, spec.synth.num_classes)
            scores = model.score(state, questions, options, frames=frames)[rows]  # (rows, K)
            hits = [options[int(s.argmax())] == batch[b].sample.answer for s, b in zip(scores, rows)]
            correct[task] += hits
            correct["all"] += hits
    accuracy = {task: round(100.0 * sum(hits) / max(1, len(hits)), 1) for task, hits in correct.items()}
    return accuracy, {**cost, "cue_frames": round(100.0 * shown / picked, 1) if picked else None}


# -- tables ------------------------------------------------------------------------------------


def _data(task: str, spec: RewindBenchSpec):
    """The backbones (encoder, LLM builder) and the encoded train and test items of ``task``."""
    encoder, make_llm = build_backbones(spec, spec.qa_llm_init_std if task == "qa" else spec.llm_init_std)
    count, tests = (spec.qa_train_videos, spec.qa_test_videos) if task == "qa" else (spec.train_videos, spec.test_videos)
    train = encode_items(task, range(spec.seed, spec.seed + count), spec, encoder)
    test = encode_items(task, range(spec.test_seed, spec.test_seed + tests), spec, encoder)
    return encoder, make_llm, train, test


def _grounding_row(name: str, predicted: torch.Tensor, test: Sequence[Item], **extra) -> dict:
    target = torch.tensor([i.sample.target for i in test], dtype=torch.float64)
    return {"model": name, **{k: round(v, 1) for k, v in grounding_metrics(predicted, target).items()}, **extra}


def grounding_table(spec: RewindBenchSpec = RewindBenchSpec(), log=print) -> list[dict]:
    """Rows of the grounding table (held-out seeds): ReWind, uniform-frame LLM, trivial intervals."""
    encoder, make_llm, train, test = _data("grounding", spec)
    duration = spec.num_clips * spec.synth.clip_seconds
    rows = []
    rewind = tiny_rewind(spec, encoder, make_llm())
    losses = train_rewind(rewind, train, grounding_loss, spec, stage1=clip_stage1_loss)
    predicted, cost = ground_rewind(rewind, test, spec.batch_size)
    rows.append(_grounding_row("rewind (memory + DFS)", predicted, test, **cost, final_loss=round(losses["stage2"][-1], 3)))
    if log:
        log(f"rewind: stage-2 loss {losses['stage2'][0]:.3f} -> {losses['stage2'][-1]:.3f}")
    uniform = UniformFrames(rewind.config, make_llm(), spec.uniform_frames, seed=spec.seed)
    uniform_losses = train_stage(uniform, uniform_loss, batch_at(train, spec.batch_size, spec.seed + 1), spec.stage2)
    frame_bytes = train[0].features[0].numel() * train[0].features.element_size()
    rows.append(_grounding_row(f"uniform {spec.uniform_frames} frames", ground_uniform(uniform, test, spec.batch_size), test,
                               llm_tokens=uniform.prompt_length(test[0].sample.question),
                               memory_bytes=spec.uniform_frames * frame_bytes, final_loss=round(uniform_losses[-1], 3)))
    length = sum(i.sample.target[1] - i.sample.target[0] for i in train) / len(train)
    middle = torch.tensor([[(duration - length) / 2, (duration + length) / 2]] * len(test), dtype=torch.float64)
    rows.append(_grounding_row("middle interval", middle, test, llm_tokens=0, memory_bytes=0))
    rows.append(_grounding_row("whole video", torch.tensor([[0.0, duration]] * len(test), dtype=torch.float64), test,
                               llm_tokens=0, memory_bytes=0))
    return rows


QA_ROWS = (  # (name, frames the LLM reads: see reading()), each row a model trained reading them
    ("rewind with DFS", "dfs"),
    ("rewind without DFS", "none"),
)
DFS_MODEL_READINGS = (  # the model trained with DFS, reading other frames (no training of their own)
    ("same model, DFS without the relevance cut (top-L, DPC-KNN)", "uncut"),
    ("same model, top-2 relevance (no DPC-KNN)", "top"),
    ("same model, DFS with the preset's L = 8", "preset"),
    ("same model, 2 random frames", "random"),
    ("same model, the question's cue frames (oracle)", "cue"),
)


def qa_rows(spec: RewindBenchSpec, log=print) -> tuple[list[dict], list[dict]]:
    """The QA rows of one run (``spec.seed``): ReWind with dynamic frame selection and the same
    trained model reading other frames (DFS without the relevance cut, its ``K_c`` most relevant
    without DPC-KNN, DFS with the preset's ``L``, ``K_c`` random frames, the frames the question
    needs), and ReWind trained and asked
    without selected frames; accuracy overall and per question type, and ``cue_frames``: the
    share (%) of the frames the LLM read that show a cue. Second, the rows of
    :func:`memory_rows` for the DFS model before and after training."""
    rows, memory = [], []
    encoder, make_llm, train, test = _data("qa", spec)
    probe_train = train[: spec.probe_videos]
    for name, rule in QA_ROWS:
        model = tiny_rewind(spec, encoder, make_llm())
        if rule == "dfs":
            memory += memory_rows(model, probe_train, test, spec, "memory tokens, untrained", features=True)
        selection = reading(rule, model.config.num_select, spec.seed)
        teacher = reading("cue", model.config.num_select, spec.seed + 2) if rule == "dfs" else None
        losses = train_rewind(model, train, qa_schedule(spec, selection, teacher), spec, spec.qa_stage2)
        if log:
            log(f"seed {spec.seed}, {name}: stage-2 loss {losses['stage2'][0]:.3f} -> {losses['stage2'][-1]:.3f}")
        rows.append(_qa_row(name, model, test, spec, losses, selection, show_cues=rule != "none"))
        if rule != "dfs":
            continue
        memory += memory_rows(model, probe_train, test, spec, "memory tokens, trained (QA with DFS)")
        c = model.config
        other = {"uncut": lambda items: DFS(c.top_l, c.num_select, c.dpc_k),
                 "top": lambda items: DFS(c.top_l, c.num_select, c.dpc_k, dpc=False),
                 "preset": lambda items: DFS(8, c.num_select, c.dpc_k, cut=c.relevance_cut)}
        for row_name, how in DFS_MODEL_READINGS:
            rows.append(_qa_row(row_name, model, test, spec, losses, other.get(how) or reading(how, c.num_select, spec.seed)))
    return rows, memory


@torch.no_grad()
def frame_vectors(model: ReWind, items: Sequence[Item], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each frame's memory tokens, concatenated ``(V, N, N_W * D)``, and the frozen features'
    mean over patches ``(V, N, D_v)``, of the videos ``items`` watched with their questions."""
    memory = []
    for first in range(0, len(items), batch_size):
        state, _ = watch(model, items[first : first + batch_size])
        memory += [state.memory.frame_tokens(b)[0].flatten(1) for b in range(state.batch_size)]
    return torch.stack(memory).float(), torch.stack([item.features.mean(1) for item in items]).float()


def memory_rows(model: ReWind, train: Sequence[Item], test: Sequence[Item], spec: RewindBenchSpec, name: str,
                features: bool = False) -> list[dict]:
    """What each frame's memory tokens say about the frame (:mod:`longvid.rewind.bench_memory`):
    a linear probe to the frame's cue class fitted on ``train`` and scored on ``test`` (``probe
    cue``: which class, on the frames that show a cue; ``probe balanced``: over the classes and
    "no cue"), and the mean cosine between two frames of a video. ``features``: first a row for
    the frozen encoder's features of the same frames (what the memory could carry at best)."""
    classes = spec.synth.num_classes + 1  # the cue classes, then "no cue"

    def labels(items: Sequence[Item]) -> torch.Tensor:
        return torch.cat([cue_labels(i.times, i.cues, classes - 1) for i in items])

    (train_memory, train_features), (test_memory, test_features) = (frame_vectors(model, items, spec.batch_size)
                                                                     for items in (train, test))
    sets = ([("frozen frame features", train_features, test_features)] if features else [])
    rows = []
    for row_name, train_x, test_x in sets + [(name, train_memory, test_memory)]:
        probe = probe_accuracy(train_x.flatten(0, 1), labels(train), test_x.flatten(0, 1), labels(test), classes)
        rows.append({"vectors": row_name, "probe cue": probe["cue"], "probe balanced": probe["balanced"],
                     "within-video cosine": round(within_video_cosine(test_x), 3)})
    return rows


def _qa_row(name: str, model: ReWind, test: Sequence[Item], spec: RewindBenchSpec, losses: dict,
            selection: Selection, show_cues: bool = True) -> dict:
    accuracy, cost = qa_accuracy(model, test, spec, selection)
    return {"model": name, "accuracy": accuracy.pop("all"), **{f"acc {task}": value for task, value in accuracy.items()},
            "llm_tokens": cost["llm_tokens"], "memory_bytes": cost["memory_bytes"],
            "cue_frames": cost["cue_frames"] if show_cues else "", "final_loss": round(losses["stage2"][-1], 3)}


def qa_tables(spec: RewindBenchSpec = RewindBenchSpec(), log=print) -> dict[str, list[dict]]:
    """The QA table (held-out seeds, see :func:`qa_rows`) and the memory table (:func:`memory_rows`),
    each averaged over the runs of ``spec.qa_seeds``; with several seeds, ``... by seed`` columns
    list each run's accuracy, share of cue frames read and balanced probe accuracy."""
    runs = [qa_rows(dataclasses.replace(spec, seed=seed), log=log) for seed in spec.qa_seeds]
    by_seed = ({"accuracy": "accuracy by seed", "cue_frames": "cue frames by seed"},
               {"probe balanced": "probe balanced by seed"})
    return {name: _average([run[part] for run in runs], by_seed[part]) for part, name in enumerate(("qa", "memory"))}


def qa_table(spec: RewindBenchSpec = RewindBenchSpec(), log=print) -> list[dict]:
    """The QA rows of :func:`qa_tables`."""
    return qa_tables(spec, log)["qa"]


def _average(runs: list[list[dict]], by_seed: dict[str, str]) -> list[dict]:
    """Rows averaged over runs (:func:`_mean`), with a column listing each run's value of each
    key of ``by_seed`` (when some run has one)."""
    if len(runs) == 1:
        return runs[0]
    table = []
    for rows in zip(*runs):
        row = {key: _mean([r[key] for r in rows], digits=3 if key in ("final_loss", "within-video cosine") else 1)
               for key in rows[0]}
        for key, column in by_seed.items():
            if any(r.get(key, "") != "" for r in rows):
                row[column] = " / ".join(str(r[key]) for r in rows)
        table.append(row)
    return table


def _mean(values: list, digits: int = 1):
    """The value all runs share (names, blanks, sizes), else the mean rounded to ``digits``."""
    if all(v == values[0] for v in values):
        return values[0]
    return round(sum(values) / len(values), digits)


def run_rewind_bench(spec: RewindBenchSpec = RewindBenchSpec(), out_dir: str = "bench-results", log=print) -> dict:
    """Both tables; writes ``rewind.json`` and ``rewind.md`` under ``out_dir`` (each atomically)."""
    import json

    from longvid.fileio import write_text_atomically

    os.makedirs(out_dir, exist_ok=True)
    tables = {"grounding": grounding_table(spec, log=log), **qa_tables(spec, log=log)}
    markdown = "".join(f"## ReWind: {name}\n\n{format_table(rows)}\n\n" for name, rows in tables.items())
    write_text_atomically(os.path.join(out_dir, "rewind.json"),
                          json.dumps({"spec": dataclasses.asdict(spec), **tables}, indent=1, default=str))
    write_text_atomically(os.path.join(out_dir, "rewind.md"), markdown)
    return tables


def format_table(rows: Sequence[dict]) -> str:
    """Rows as a Markdown table (columns of the first row)."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    tables = {"grounding": grounding_table, "qa": qa_table}
    torch.set_num_threads(1)  # an entry point: the recorded figures are single-threaded
    if len(sys.argv) != 2 or sys.argv[1] not in tables:
        raise SystemExit("usage: python -m longvid.rewind.bench grounding|qa  (both, written to files: longvid bench rewind)")
    print(format_table(tables[sys.argv[1]]()))
