"""ReWind on the generated benchmark: a grounding table and a QA table with tiny models.

Videos come from :mod:`longvid.bench.synth` at 1 fps (``spec.synth``: 4-frame clips of
4 s, 32x32 frames). Everything is built here with random weights, nothing downloaded:
a tiny frozen CLIP tower (:func:`longvid.models.tiny.save_tiny_vision`) whose per-frame
features are computed once per video and cached, and a tiny LLaMA
(:func:`longvid.models.tiny.save_tiny_llm`) whose word list covers the benchmark's text.

* :func:`grounding_table`: ReWind (memory + DFS, grounding head on the LLM) against the
  same LLM reading ``K`` uniformly sampled frames, and two trivial intervals (the whole
  video; a centred interval of the mean training length); R@0.3/0.5/0.7 and mIoU on
  held-out seeds.
* :func:`qa_table`: ReWind with and without dynamic frame selection (``use_dfs``) on the
  ``qa`` task (recall / count / order), accuracy by closed-set scoring, with two reference
  rows that bound what selection is worth: the same system reading ``K_c`` random frames,
  and reading frames that show a cue (:class:`ReferenceSelection`); optionally averaged
  over several seeds (``qa_seeds``).

Rows also report the LLM input length (tokens) and the memory bytes per video.
ReWind is trained with :func:`longvid.train.rewind.train_stage`: stage 1 (SigLIP loss,
Perceiver) then stage 2 (answer cross-entropy for QA, pointer cross-entropy for grounding).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn

from longvid.bench.synth import Sample, SynthSpec, class_name, clip_times, make_sample, scene_clips
from longvid.errors import LongvidError
from longvid.eval.metrics import grounding_metrics
from longvid.memory.rewind import RewindMemoryConfig
from longvid.models.llm import CausalLM
from longvid.models.rewind import (
    GroundingHead, ReWind, add_lora, best_span, frames_in, get_config, pad_left, pointer_loss, pool_frame_features,
    span_seconds,
)
from longvid.train.rewind import StageConfig, train_stage

QA_CANDIDATES = {"recall": "classes", "order": "classes", "count": ("0", "1", "2", "3")}


@dataclass(frozen=True)
class RewindBenchSpec:
    """Sizes of the ReWind benchmark (defaults: a few minutes of CPU for both tables)."""

    synth: SynthSpec = field(default_factory=lambda: SynthSpec(clip_frames=4, sample_fps=1.0, size=32))
    num_clips: int = 6  # videos of num_clips * 4 frames (24 s at 1 fps)
    train_videos: int = 96  # grounding
    qa_train_videos: int = 256
    test_videos: int = 48  # grounding
    qa_test_videos: int = 192  # QA accuracy moves in steps of 0.5 point, not 2
    test_seed: int = 1_000_000  # held-out seeds start here
    batch_size: int = 8
    uniform_frames: int = 8  # K frames the uniform baseline reads
    stage1: StageConfig = StageConfig(steps=30, lr=2e-3, warmup_steps=5)
    stage2: StageConfig = StageConfig(steps=150, lr=3e-3, warmup_steps=10)
    qa_stage2: StageConfig = StageConfig(steps=600, lr=3e-3, warmup_steps=10)
    qa_explore_steps: int = 200  # QA stage 2 with DFS: first steps read frames drawn at random, DFS projections still
    qa_policy_weight: float = 3.0  # then the REINFORCE term trains the DFS projections (ReWind.answer_loss)
    vision_width: int = 32
    llm_hidden: int = 64
    llm_layers: int = 2
    llm_init_std: float = 0.02  # grounding: the pointer head reads hidden states, small random weights keep them smooth
    qa_llm_init_std: float = 0.5  # QA scores answer text: a frozen random LM needs large weights for confident logits
    seed: int = 0
    qa_seeds: tuple[int, ...] = (0,)  # QA: whole runs (backbones, data, training) averaged over these seeds


@dataclass
class Item:
    """One video: frozen features ``(N, P, D_v)``, timestamps ``(N,)`` seconds, its sample,
    and its cues as ``(class, start, end)`` seconds."""

    features: torch.Tensor
    times: torch.Tensor
    sample: Sample
    cues: list[tuple[int, float, float]]

    def cue_shown(self) -> torch.Tensor:
        """``(N,)`` bool: the frames on which some cue is visible."""
        return torch.tensor([bool(self.cues_on(self.times[f : f + 1])) for f in range(len(self.times))])

    def cues_on(self, times: torch.Tensor) -> list[int]:
        """Classes of the cues visible at any of ``times``."""
        return [cls for cls, start, end in self.cues if bool(((times >= start) & (times < end)).any())]


# -- building ------------------------------------------------------------------------------


def benchmark_words(spec: RewindBenchSpec) -> list[str]:
    """Every word of the benchmark's questions and answers (the tiny LLM's vocabulary)."""
    texts = [class_name(c) for c in range(spec.synth.num_classes)] + ["flashes", "and", "flash"]
    for task in ("recall", "count", "order", "grounding"):
        for seed in range(20):
            sample = make_sample(task, seed, spec.synth, spec.num_clips)
            texts += [sample.question, sample.answer, sample.query]
    texts += [str(n) for n in range(10)]
    return list(dict.fromkeys(w.lower() for t in texts for w in re.findall(r"\w+|[^\w\s]+", t)))


def build_backbones(spec: RewindBenchSpec, folder: str, init_std: float):
    """A tiny frozen CLIP encoder and the path of a tiny LLM (random weights of std ``init_std``)
    written under ``folder``."""
    from longvid.models.encoders import FrozenImageEncoder
    from longvid.models.tiny import save_tiny_llm, save_tiny_vision

    vision = save_tiny_vision(os.path.join(folder, "vision"), image_size=spec.synth.size, patch=8,
                              hidden=spec.vision_width, seed=spec.seed)
    llm = save_tiny_llm(os.path.join(folder, "llm"), hidden=spec.llm_hidden, layers=spec.llm_layers,
                        words=benchmark_words(spec), seed=spec.seed,
                        init_std=init_std)
    return FrozenImageEncoder.from_pretrained(vision), llm


def tiny_rewind(spec: RewindBenchSpec, encoder, llm_path: str, reference: str | None = None, **overrides) -> ReWind:
    """``rewind_tiny`` on the benchmark's backbones (``overrides``: config fields, e.g. ``use_dfs``);
    with ``reference`` (``"random"`` or ``"cue"``) a :class:`ReferenceSelection` instead."""
    torch.manual_seed(spec.seed)
    base = get_config("rewind_tiny")
    memory = RewindMemoryConfig(**{**base.memory.__dict__, "vision_dim": encoder.width, "text_dim": spec.llm_hidden})
    config = get_config("rewind_tiny", memory=memory, llm_dim=spec.llm_hidden, **overrides)
    llm = CausalLM.from_pretrained(llm_path)
    if reference is None:
        return ReWind(config, encoder, llm)
    return ReferenceSelection(config, encoder, llm, reference, seed=spec.seed)


class ReferenceSelection(ReWind):
    """ReWind whose LLM reads reference frames instead of the ones dynamic frame selection
    picks: the QA table's bounds on what selection is worth.

    ``rule="random"``: ``K_c`` frames drawn uniformly (what selection must beat);
    ``rule="cue"``: frames that show a cue (the benchmark's annotation; the best a selector
    could do), topped up with random frames when fewer than ``K_c`` show one.
    :func:`watch` hands it each batch's items (:meth:`choose`) before the LLM reads.
    """

    RULES = ("random", "cue")

    def __init__(self, config, vision, llm, rule: str, seed: int = 0):
        if rule not in self.RULES:
            raise LongvidError(f"unknown reference selection {rule!r}; choose from {', '.join(self.RULES)}")
        super().__init__(config, vision, llm)
        self.rule = rule
        self.generator = torch.Generator().manual_seed(seed)
        self.frames: list[torch.Tensor] = []

    def choose(self, items: Sequence[Item]) -> None:
        """Draw the frames the LLM reads for each of ``items`` (ascending indices, ``K_c`` each)."""
        count = self.config.num_select
        self.frames = []
        for item in items:
            order = torch.randperm(len(item.times), generator=self.generator)  # (N,) random priority
            if self.rule == "cue":
                order = order[torch.argsort(~item.cue_shown()[order], stable=True)]  # frames showing a cue first
            self.frames.append(torch.sort(order[:count]).values)

    def select(self, state, instruction_ids, instruction_mask=None, until=None) -> list[torch.Tensor]:
        """The frames drawn by :meth:`choose` for the first ``B`` streams (``until`` is not supported)."""
        if until is not None:
            raise LongvidError("reference selections are drawn for whole videos, not at a breakpoint")
        return self.frames[: len(instruction_ids)]

    def answer_loss(self, state, questions, answers, until=None, policy_weight=None) -> torch.Tensor:
        """The plain cross-entropy on the drawn frames: there is no selection to train
        (``policy_weight`` is ignored)."""
        return super().answer_loss(state, questions, answers, until)


@torch.no_grad()
def encode_items(task: str, seeds: Sequence[int], spec: RewindBenchSpec, encoder) -> list[Item]:
    """Videos of ``task`` for ``seeds``, encoded once by the frozen ``encoder``."""
    times = torch.tensor(clip_times(spec.synth, spec.num_clips).reshape(-1), dtype=torch.float64)
    items = []
    for seed in seeds:
        sample = make_sample(task, seed, spec.synth, spec.num_clips)
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
    if isinstance(model, ReferenceSelection):
        model.choose(items)
    features, times, questions = stack(items)
    ids, mask = model.tokenize(questions)
    return model.watch_features(features, times, ids, mask), questions


def stage1_loss(model: ReWind, items: Sequence[Item]) -> torch.Tensor:
    """SigLIP loss between sub-clips showing exactly one cue and the caption ``"the <class> flashes"``
    (one sub-clip per class in the batch, so no two pairs share a caption)."""
    features, times, questions = stack(items)
    ids, mask = model.tokenize(questions)
    state = model.init_state(len(items))
    written, valid, captions = [], [], {}
    for frames, num_valid in model._sub_clips(features.shape[1], len(items), features.device):
        tokens, state = model.observe_features(features[:, frames], times[:, frames], state, ids, mask, num_valid)
        for b, item in enumerate(items):
            shown = item.cues_on(times[b, frames])
            if len(shown) == 1 and shown[0] not in captions:
                captions[shown[0]] = f"the {class_name(shown[0])} flashes"
                written.append(tokens[b])
                valid.append(num_valid[b])
    if len(written) < 2:
        raise LongvidError("stage 1 needs sub-clips of at least two cue classes in a batch: use larger batches")
    caption_ids, caption_mask = model.tokenize(list(captions.values()))
    return model.contrastive_loss(torch.stack(written), torch.stack(valid), caption_ids, caption_mask)


def qa_loss(model: ReWind, items: Sequence[Item], policy_weight: float | None = None) -> torch.Tensor:
    """Stage 2 on QA: next-token cross-entropy of the answers (``policy_weight``: see
    :meth:`ReWind.answer_loss`)."""
    state, questions = watch(model, items)
    return model.answer_loss(state, questions, [i.sample.answer for i in items], policy_weight=policy_weight)


def qa_schedule(spec: RewindBenchSpec):
    """The QA stage-2 loss for :func:`train_stage` (called once per step): the first
    ``spec.qa_explore_steps`` steps read frames drawn from the (still uniform) relevance softmax,
    so the LLM learns to read frames of every kind; later steps add the REINFORCE term
    (``spec.qa_policy_weight``) that trains the DFS projections."""
    steps = itertools.count()

    def loss(model: ReWind, items: Sequence[Item]) -> torch.Tensor:
        weight = 0.0 if next(steps) < spec.qa_explore_steps else spec.qa_policy_weight
        return qa_loss(model, items, weight)

    return loss


def grounding_loss(model: ReWind, items: Sequence[Item]) -> torch.Tensor:
    """Stage 2 on grounding: pointer cross-entropy at the target's first and last frames."""
    state, questions = watch(model, items)
    targets = torch.tensor([frames_in(i.times, i.sample.target) for i in items])
    return model.grounding_loss(state, questions, targets)


def train_rewind(model: ReWind, items: Sequence[Item], task_loss, spec: RewindBenchSpec,
                 stage2: StageConfig | None = None) -> dict[str, list[float]]:
    """Stage 1 then stage 2 (``task_loss``, ``stage2`` or ``spec.stage2`` steps) on ``items``;
    returns each stage's losses."""
    model.set_stage(1)
    first = train_stage(model, stage1_loss, batch_at(items, spec.batch_size, spec.seed), spec.stage1)
    model.set_stage(2)
    second = train_stage(model, task_loss, batch_at(items, spec.batch_size, spec.seed + 1), stage2 or spec.stage2)
    return {"stage1": first, "stage2": second}


# -- the uniform-frame baseline ----------------------------------------------------------------


class UniformFrames(nn.Module):
    """The same LLM (with LoRA) reading ``num_frames`` uniformly sampled frames instead of
    memory + DFS: ``[separator][num_frames x frame tokens][instruction]``, each frame's
    features pooled and projected as ReWind's selected frames, and the same grounding head
    pointing at the sampled frames."""

    def __init__(self, config, llm: CausalLM, num_frames: int):
        super().__init__()
        self.config, self.num_frames = config, num_frames
        self.llm = add_lora(llm, config)
        self.frame_proj = nn.Linear(config.memory.vision_dim, config.llm_dim)
        self.separator = nn.Parameter(torch.randn(config.llm_dim) * 0.02)
        self.grounding = GroundingHead(config.llm_dim, config.ground_dim)
        for name, param in self.llm.named_parameters():
            param.requires_grad_("lora_" in name)

    def sampled(self, total: int) -> torch.Tensor:
        """Indices ``(K,)`` of the uniformly sampled frames of a ``total``-frame video."""
        return torch.linspace(0, total - 1, min(self.num_frames, total)).round().long()

    def ground_logits(self, features: torch.Tensor, questions: list[str]) -> torch.Tensor:
        """Pointer logits ``(B, 2, K)`` over the sampled frames of ``features (B, N, P, D_v)``."""
        picked = features[:, self.sampled(features.shape[1])]  # (B, K, P, D_v)
        batch, count = picked.shape[:2]
        frames = self.frame_proj(pool_frame_features(picked.flatten(0, 1), self.config.frame_pool))  # (B*K, t, E)
        frames = frames.reshape(batch, count * self.config.frame_tokens, -1)
        prompts = [torch.cat([self.separator[None], frames[b], self.llm.embed(torch.tensor([row]))[0]])
                   for b, row in enumerate(self.llm.tokenize_prompts(questions))]
        embeds, mask, _ = pad_left(prompts, [torch.zeros(len(p), dtype=torch.long) for p in prompts])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.llm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                output_hidden_states=True).hidden_states[-1]  # (B, L, E)
        states = torch.stack([hidden[b, embeds.shape[1] - len(p) + 1:][: frames.shape[1]] for b, p in enumerate(prompts)])
        states = states.reshape(batch, count, self.config.frame_tokens, -1).mean(2)  # (B, K, E)
        return self.grounding(states, hidden[:, -1], torch.ones(batch, count, dtype=torch.bool))

    def prompt_length(self, question: str) -> int:
        """LLM input tokens for one question."""
        return 1 + self.num_frames * self.config.frame_tokens + len(self.llm.tokenize_prompts([question])[0])


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


def rewind_cost(model: ReWind, state, question: str) -> dict[str, int]:
    """LLM input tokens and memory bytes (memory tokens + feature buffer) of stream 0 of ``state``."""
    ids, mask = model.tokenize([question])
    single = dataclasses.replace(state.memory, tokens=state.memory.tokens[:1], num_frames=state.memory.num_frames[:1],
                                 timestamps=state.memory.timestamps[:1])
    prompt = model.prompt_embeddings(dataclasses.replace(state, memory=single), ids, mask)[0]
    batch = len(state.memory.num_frames)
    return {"llm_tokens": len(prompt),
            "memory_bytes": (state.memory.nbytes() + state.buffer.ram_bytes + state.buffer.disk_bytes) // batch}


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
def qa_accuracy(model: ReWind, items: Sequence[Item], spec: RewindBenchSpec) -> tuple[dict[str, float], dict]:
    """Accuracy (%) by closed-set scoring, overall (``"all"``) and per question type, and
    per-video costs plus ``cue_frames``: the share (%) of DFS-selected frames that show a cue."""
    correct = {task: [] for task in ("all", *QA_CANDIDATES)}
    cost, shown, picked = {}, 0, 0
    for first in range(0, len(items), spec.batch_size):
        batch = items[first : first + spec.batch_size]
        state, questions = watch(model, batch)
        cost = rewind_cost(model, state, questions[0])
        ids, mask = model.tokenize(questions)
        for item, frames in zip(batch, model.select(state, ids, mask)):
            shown += int(item.cue_shown()[frames].sum())
            picked += len(frames)
        for task in QA_CANDIDATES:
            rows = [b for b, item in enumerate(batch) if item.sample.task == task]
            if not rows:
                continue
            options = candidates_for(batch[rows[0]].sample, spec.synth.num_classes)
            scores = model.score(state, questions, options)[rows]  # (rows, K)
            hits = [options[int(s.argmax())] == batch[b].sample.answer for s, b in zip(scores, rows)]
            correct[task] += hits
            correct["all"] += hits
    accuracy = {task: round(100.0 * sum(hits) / max(1, len(hits)), 1) for task, hits in correct.items()}
    return accuracy, {**cost, "cue_frames": round(100.0 * shown / picked, 1) if picked else None}


# -- tables ------------------------------------------------------------------------------------


def _data(task: str, spec: RewindBenchSpec, folder: str):
    encoder, llm_path = build_backbones(spec, folder, spec.qa_llm_init_std if task == "qa" else spec.llm_init_std)
    count, tests = (spec.qa_train_videos, spec.qa_test_videos) if task == "qa" else (spec.train_videos, spec.test_videos)
    train = encode_items(task, range(spec.seed, spec.seed + count), spec, encoder)
    test = encode_items(task, range(spec.test_seed, spec.test_seed + tests), spec, encoder)
    return encoder, llm_path, train, test


def _grounding_row(name: str, predicted: torch.Tensor, test: Sequence[Item], **extra) -> dict:
    target = torch.tensor([i.sample.target for i in test], dtype=torch.float64)
    return {"model": name, **{k: round(v, 1) for k, v in grounding_metrics(predicted, target).items()}, **extra}


def grounding_table(spec: RewindBenchSpec = RewindBenchSpec(), log=print) -> list[dict]:
    """Rows of the grounding table (held-out seeds): ReWind, uniform-frame LLM, trivial intervals."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="longvid-rewind-bench-") as folder:
        encoder, llm_path, train, test = _data("grounding", spec, folder)
        duration = spec.num_clips * spec.synth.clip_seconds
        rows = []
        rewind = tiny_rewind(spec, encoder, llm_path)
        losses = train_rewind(rewind, train, grounding_loss, spec)
        predicted, cost = ground_rewind(rewind, test, spec.batch_size)
        rows.append(_grounding_row("rewind (memory + DFS)", predicted, test, **cost, final_loss=round(losses["stage2"][-1], 3)))
        if log:
            log(f"rewind: stage-2 loss {losses['stage2'][0]:.3f} -> {losses['stage2'][-1]:.3f}")
        torch.manual_seed(spec.seed)
        uniform = UniformFrames(rewind.config, CausalLM.from_pretrained(llm_path), spec.uniform_frames)
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


QA_ROWS = (  # (name, reference selection, use_dfs)
    ("rewind with DFS", None, True),
    ("rewind, random frames", "random", True),
    ("rewind, cue frames (oracle)", "cue", True),
    ("rewind without DFS", None, False),
)


def qa_rows(spec: RewindBenchSpec, log=print) -> list[dict]:
    """The QA rows of one run (``spec.seed``): ReWind with dynamic frame selection (and the same
    trained model keeping its ``K_c`` most relevant frames without DPC-KNN), the same system
    reading ``K_c`` random frames or frames that show a cue instead, and ReWind without selected
    frames; accuracy overall and per question type, and ``cue_frames``: the share (%) of the
    frames the LLM read that show a cue."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="longvid-rewind-bench-") as folder:
        encoder, llm_path, train, test = _data("qa", spec, folder)
        for name, reference, use_dfs in QA_ROWS:
            model = tiny_rewind(spec, encoder, llm_path, reference=reference, use_dfs=use_dfs)
            losses = train_rewind(model, train, qa_schedule(spec), spec, spec.qa_stage2)
            if log:
                log(f"seed {spec.seed}, {name}: stage-2 loss {losses['stage2'][0]:.3f} -> {losses['stage2'][-1]:.3f}")
            rows.append(_qa_row(name, model, test, spec, losses))
            if use_dfs and reference is None:  # the ablation needs no training of its own
                model.config = dataclasses.replace(model.config, dpc=False)
                rows.append(_qa_row(f"{name}, top-{model.config.num_select} relevance (no DPC-KNN)", model, test, spec, losses))
    return rows


def _qa_row(name: str, model: ReWind, test: Sequence[Item], spec: RewindBenchSpec, losses: dict) -> dict:
    accuracy, cost = qa_accuracy(model, test, spec)
    return {"model": name, "accuracy": accuracy.pop("all"), **{f"acc {task}": value for task, value in accuracy.items()},
            "llm_tokens": cost["llm_tokens"], "memory_bytes": cost["memory_bytes"],
            "cue_frames": cost["cue_frames"] if model.config.use_dfs else "", "final_loss": round(losses["stage2"][-1], 3)}


def qa_table(spec: RewindBenchSpec = RewindBenchSpec(), log=print) -> list[dict]:
    """Rows of the QA table (held-out seeds, see :func:`qa_rows`), averaged over the runs of
    ``spec.qa_seeds``; with several seeds ``accuracy by seed`` lists each run's accuracy."""
    torch.set_num_threads(1)
    runs = [qa_rows(dataclasses.replace(spec, seed=seed), log=log) for seed in spec.qa_seeds]
    if len(runs) == 1:
        return runs[0]
    table = []
    for rows in zip(*runs):
        row = {key: _mean([r[key] for r in rows], digits=3 if key == "final_loss" else 1) for key in rows[0]}
        row["accuracy by seed"] = " / ".join(str(r["accuracy"]) for r in rows)
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
    tables = {"grounding": grounding_table(spec, log=log), "qa": qa_table(spec, log=log)}
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
    if len(sys.argv) != 2 or sys.argv[1] not in tables:
        raise SystemExit("usage: python -m longvid.bench.rewind grounding|qa  (both, written to files: longvid bench rewind)")
    print(format_table(tables[sys.argv[1]]()))
