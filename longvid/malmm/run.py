"""MA-LMM runs from the command line: ``longvid train malmm_* ...`` and ``longvid eval malmm_* ...``.

A run preset (:class:`MALMMRun`) names a model preset, one of MA-LMM's data sets
(:mod:`longvid.malmm.datasets`) and the optimisation of the released training scripts. A run:

1. reads the annotation files (unchanged) and finds every video under ``video_root``,
   saying how many were found and missing, before any compute;
2. builds the model (frozen encoder and LLM; Q-Former, query tokens, ``ln_vision``,
   ``image_pe`` and ``llm_proj`` train), from an InstructBLIP checkpoint (``pretrained=``)
   and/or MA-LMM weights (``weights=``) when given;
3. samples ``num_frames`` frames uniformly over each video / window / segment and encodes
   them once into a feature cache (``cache_dir``, default ``out_dir/features``; or at every
   use with ``feature_cache=false``);
4. trains on the training core (:class:`~longvid.malmm.qa.QATask`: answer cross-entropy through
   the frozen LLM, AdamW, warm-up + cosine, AMP, checkpoints, resume, ``log.jsonl``), then
   evaluates on ``val_data``: generated answers (beam search), scored as MA-LMM scores them
   (:mod:`longvid.malmm.metrics`), ``out_dir/metrics.json`` written atomically and printed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Sequence

import torch

from longvid.malmm.datasets import CAPTIONS, VIDEO_CAPTIONS, LMMItem, find_videos, one_per_video, read_dataset
from longvid.malmm.datasets import LVU_TASKS
from longvid.errors import LongvidError
from longvid.fileio import write_atomically, write_lines_atomically, write_text_atomically
from longvid.progress import progress as progress_bar
from longvid.engine.overrides import apply_overrides
from longvid.engine import validation as engine_validation

CLASSIFICATION = ("lvu", "breakfast", "coin")
FIRST_WORD_QA = ("msrvtt_qa", "msvd_qa")  # MA-LMM keeps only the first generated word


@dataclass(frozen=True)
class MALMMRun:
    """One MA-LMM run: model, data, sampling, optimisation (defaults: the released LVU script)."""

    model: str = "malmm_cls"  # model preset (longvid models)
    dataset: str = "lvu"  # lvu, breakfast, coin, msrvtt_qa, msvd_qa, activitynet_qa, youcook2, msrvtt_caption, msvd_caption
    data: str | None = None  # training annotation file
    val_data: str | None = None  # evaluation annotation file
    video_root: str | None = None  # folder of the videos (named as the data set names them)
    val_video_root: str | None = None  # folder of val_data's videos (default: video_root)
    references: str | None = None  # captions: COCO-format reference file of val_data (MA-LMM's coco_gt/cap_<split>.json)
    meteor: bool = True  # captions: also METEOR (a Java program, slow to start)
    top5: bool = True  # classification (lvu, breakfast, coin): also top-5, ranking the class names by their LLM log-likelihood
    split: str = "train"  # COIN: the subset of the training file
    val_split: str = "val"  # COIN: the subset of the evaluation file
    lvu_tasks: str = "all"  # LVU: comma-separated tasks (the paper trains one model per task)
    train_sampling: str = "random"  # "random": a random frame per segment (MA-LMM's training draw); "uniform": as in evaluation
    augment: bool = True  # training: MA-LMM's random resized crop (area 0.5-1) + horizontal flip
    history: float = 100.0  # LVU window (s)
    stride: float = 20.0  # LVU window step (s)
    num_frames: int | None = None  # frames per sample (None: the model preset's)
    memory_bank_length: int | None = None  # None: the model preset's
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    num_beams: int | None = None
    length_penalty: float | None = None
    pretrained: str | None = None  # transformers InstructBLIP checkpoint (folder or hub id)
    weights: str | None = None  # MA-LMM / LAVIS .pth or longvid weights loaded on top
    frozen_dtype: str = "auto"  # pretrained's frozen ViT and LLM: auto (float16 on CUDA, float32 on CPU), float16, bfloat16, float32
    encoder: str | None = None  # override the preset's image encoder
    llm: str | None = None  # override the preset's LLM
    qformer_tokenizer: str | None = None
    feature_cache: bool = True  # encode each sample's frames once into cache_dir (false: decode and encode at every use)
    cache_dir: str | None = None  # encoder features (default out_dir/features)
    cache_dtype: str = "float16"  # the released ViT runs in float16 anyway; float32 doubles the cache
    skip_missing: bool = False  # leave out samples whose video is missing (default: an error)
    batch_size: int = 16
    eval_batch_size: int = 16
    epochs: int = 20
    max_steps: int | None = None  # run exactly this many steps (epochs repeat as needed); None: ``epochs``
    lr: float = 1e-4
    min_lr: float = 0.0
    weight_decay: float = 0.05
    warmup_steps: int = 1000
    clip_grad: float | None = None
    amp: str = "auto"
    seed: int = 42
    log_every: int = 10
    checkpoint_every: int = 1000
    eval_every_epoch: bool = True  # with val_data: evaluate after every epoch and keep the best weights (best.safetensors)
    out_dir: str = "runs/malmm"

    def tasks(self) -> tuple[str, ...]:
        if self.lvu_tasks == "all":
            return LVU_TASKS
        return tuple(t.strip() for t in self.lvu_tasks.split(",") if t.strip())

    def model_overrides(self) -> dict:
        names = ("num_frames", "memory_bank_length", "max_new_tokens", "min_new_tokens", "num_beams", "length_penalty",
                 "encoder", "llm", "qformer_tokenizer")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def train_config(self):
        from longvid.engine.config import TrainConfig

        return TrainConfig(
            batch_size=self.batch_size, epochs=self.epochs, max_steps=self.max_steps, lr=self.lr,
            min_lr=self.min_lr, weight_decay=self.weight_decay, warmup_steps=self.warmup_steps, clip_grad=self.clip_grad,
            amp=self.amp, seed=self.seed, log_every=self.log_every, checkpoint_every=self.checkpoint_every, out_dir=self.out_dir,
        ).validate()


def _presets() -> dict[str, MALMMRun]:
    """The run presets: the released run scripts and their tiny CPU versions."""
    full = {
        # the released run scripts (run_scripts/*/train.sh): per-GPU batch, 4 GPUs there
        "malmm_lvu": MALMMRun(model="malmm_cls", dataset="lvu", max_new_tokens=5, epochs=20, batch_size=16, train_sampling="uniform"),
        "malmm_breakfast": MALMMRun(model="malmm_cls", dataset="breakfast", epochs=20, batch_size=16),
        "malmm_coin": MALMMRun(model="malmm_cls", dataset="coin", epochs=20, batch_size=16),
        "malmm_msrvtt_qa": MALMMRun(model="malmm_qa", dataset="msrvtt_qa", epochs=5, batch_size=32, eval_batch_size=32),
        "malmm_msvd_qa": MALMMRun(model="malmm_qa", dataset="msvd_qa", epochs=5, batch_size=32, eval_batch_size=32),
        "malmm_activitynet_qa": MALMMRun(model="malmm_qa", dataset="activitynet_qa", epochs=5, batch_size=32, eval_batch_size=32),
        "malmm_youcook2": MALMMRun(model="malmm_caption", dataset="youcook2", epochs=10, batch_size=16, max_new_tokens=30,
                                   min_new_tokens=2),
        # cap_msrvtt.yaml / cap_msvd.yaml as run by run_scripts/{msrvtt,msvd}/train_cap.sh: T 80, L 40, lr 1e-5,
        # 10 epochs, batch 16 per GPU (x4 GPUs x accum_grad_iters 2 = 128), beams 5, max_len 50, min_len 1
        "malmm_msrvtt_caption": MALMMRun(model="malmm_caption", dataset="msrvtt_caption", epochs=10, batch_size=16, eval_batch_size=16,
                                         lr=1e-5, max_new_tokens=50, min_new_tokens=1),
        "malmm_msvd_caption": MALMMRun(model="malmm_caption", dataset="msvd_caption", epochs=10, batch_size=16, eval_batch_size=16,
                                       lr=1e-5, max_new_tokens=50, min_new_tokens=1),
        "malmm_nsa": MALMMRun(model="malmm_nsa", dataset="lvu", max_new_tokens=5, epochs=20, batch_size=16, train_sampling="uniform"),
    }
    tiny = dict(num_frames=4, memory_bank_length=2, batch_size=2, eval_batch_size=2, epochs=1, lr=1e-3, warmup_steps=0,
                log_every=1, checkpoint_every=2, seed=0, cache_dtype="float32", train_sampling="uniform", augment=False,
                eval_every_epoch=False)
    for name, run in list(full.items()):
        model = "malmm_tiny_nsa" if name == "malmm_nsa" else "malmm_tiny"
        tiny_name = "malmm_tiny_nsa" if name == "malmm_nsa" else name.replace("malmm_", "malmm_tiny_")
        full[tiny_name] = dataclasses.replace(run, model=model, history=4.0, stride=2.0, max_new_tokens=4, min_new_tokens=None, **tiny)
    full["malmm_tiny_nsa"] = dataclasses.replace(full["malmm_tiny_nsa"], num_frames=6, memory_bank_length=4)  # blocks get dropped
    return full


PRESETS: dict[str, MALMMRun] = _presets()  # run preset name -> run (``longvid train NAME``; ``longvid models`` lists them)


def describe(name: str) -> str:
    """One line: the data set run preset ``name`` trains on."""
    return f"dataset {PRESETS[name].dataset}"


def load_run(name: str, overrides: Sequence[str] = ()) -> MALMMRun:
    """Run preset ``name`` with ``key=value`` overrides."""
    if name not in PRESETS:
        raise LongvidError(f"unknown MA-LMM run preset {name!r}: choose from {', '.join(sorted(PRESETS))}")
    run = apply_overrides(PRESETS[name], overrides, name)
    _check(run)
    return run


def _check(run: MALMMRun) -> None:
    checks = [
        (run.batch_size >= 1 and run.eval_batch_size >= 1, "batch sizes must be >= 1"),
        (run.num_frames is None or run.num_frames >= 1, f"num_frames must be >= 1, got {run.num_frames}"),
        (run.history > 0 and run.stride > 0, "history and stride must be > 0"),
        (run.train_sampling in ("random", "uniform"), f"train_sampling must be 'random' or 'uniform', got {run.train_sampling!r}"),
        (run.cache_dtype in ("float16", "bfloat16", "float32"), f"cache_dtype must be float16, bfloat16 or float32, got {run.cache_dtype!r}"),
        (not set(run.tasks()) - set(LVU_TASKS) and run.tasks(), f"lvu_tasks must be 'all' or among {', '.join(LVU_TASKS)}, got {run.lvu_tasks!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise LongvidError(f"config: {message}")


# -- data ------------------------------------------------------------------------------------


def read_items(run: MALMMRun, path: str | None, split: str, what: str, say=print) -> list[tuple[LMMItem, str]]:
    """The samples of annotation file ``path`` with their video files; says found/missing."""
    if not path:
        raise LongvidError(f"give the {what} annotation file ({'data' if what == 'training' else 'val_data'}=FILE)")
    video_root = (run.val_video_root or run.video_root) if what == "evaluation" else run.video_root
    if not video_root:
        raise LongvidError("give the video folder: video_root=DIR")
    items = read_dataset(run.dataset, path, split, run.tasks(), run.history, run.stride)
    summary = find_videos(items, video_root, run.dataset)
    say(summary.line(path))
    if summary.missing and (not run.skip_missing or not summary.found):
        hint = "; set skip_missing=true to leave their samples out" if summary.found else ""
        raise LongvidError(f"{summary.line(path)} under {video_root}{hint}")
    return [(item, summary.found[item.video]) for item in items if item.video in summary.found]


def read_eval_items(run: MALMMRun, say=print) -> list[tuple[LMMItem, str]]:
    """The evaluation samples of ``val_data``: MSRVTT / MSVD captions one per video (:func:`one_per_video`)."""
    samples = read_items(run, run.val_data, run.val_split, "evaluation", say)
    if run.dataset not in VIDEO_CAPTIONS:
        return samples
    videos = dict((item.video, video) for item, video in samples)
    return [(item, videos[item.video]) for item in one_per_video([item for item, _ in samples])]


def caption_references(run: MALMMRun, items: Sequence[LMMItem]) -> dict[str, list[str]] | None:
    """Caption runs: the reference captions of every evaluated segment / video (``references=`` file, or
    the annotation's own captions); an error naming what lacks one. None for other data sets."""
    from longvid.malmm.datasets import read_coco_references

    if run.dataset not in CAPTIONS:
        return None
    from longvid.malmm.metrics import check_caption_metrics

    check_caption_metrics()  # before any compute
    what = "segment" if run.dataset == "youcook2" else "video"
    if run.references:
        references = read_coco_references(run.references)
        lacking = [item.key for item in items if item.key not in references]
        if lacking:
            raise LongvidError(f"{run.references}: no reference caption for {len(lacking)} {what}(s) of {run.val_data}, e.g. {lacking[0]}")
        return references
    empty = [item for item in items if not item.references or not item.answer]
    if empty:
        raise LongvidError(f"{run.val_data}:{empty[0].line}: {what} {empty[0].key!r} has an empty caption (MA-LMM's test files "
                           f"keep captions in coco_gt/cap_<split>.json: give references=FILE)")
    return {item.key: list(item.references) for item in items}


def class_names(run: MALMMRun, items: Sequence[LMMItem]) -> dict[str, list[str]] | None:
    """Classification with ``top5``: the class names of each group (an LVU task, or the data set), ranked
    for top-5: every label the evaluation file gives that group (so ``train`` and ``eval`` rank the same
    names). None otherwise."""
    if run.dataset not in CLASSIFICATION or not run.top5:
        return None
    classes: dict[str, set[str]] = {}
    for item in items:
        classes.setdefault(item.group, set()).add(item.answer)
    return {group: sorted(names) for group, names in classes.items()}


def encoder_fingerprint(encoder) -> str:
    """Identifies an encoder's weights for cache keys: its name and a hash of its first weights."""
    first = next(encoder.parameters()).detach().float().cpu().contiguous()
    return f"{encoder.name}|{hashlib.sha1(first.numpy().tobytes()).hexdigest()[:16]}"


def _load_features(path: str) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(path)["features"].float()


def _encode(encoder, video: str, item: LMMItem, num_frames: int) -> torch.Tensor:
    """Encoder tokens ``(T, Nv, Cv)`` of ``num_frames`` uniform frames of the item's video / segment."""
    from longvid.malmm.frames import read_uniform_frames

    frames = read_uniform_frames(video, num_frames, encoder.image_size, item.start, item.end)  # (T, 3, S, S) uint8
    return encoder.encode_frames(frames)


def _encode_training_draw(encoder, video: str, item: LMMItem, num_frames: int, sampling: str, augment: bool) -> torch.Tensor:
    """Encoder tokens ``(T, Nv, Cv)`` of a fresh training draw (random frames / crop from the global RNG,
    which training checkpoints save, so a resumed run draws the same)."""
    from longvid.malmm.frames import read_training_frames

    return encoder.encode_frames(read_training_frames(video, num_frames, encoder.image_size, item.start, item.end, sampling, augment))


def feature_loaders(model, samples: list[tuple[LMMItem, str]], num_frames: int, run: MALMMRun, progress: bool,
                    training: bool = False) -> list:
    """One function per sample returning its encoder tokens ``(T, Nv, Cv)``: with ``feature_cache``,
    computed once into ``cache_dir`` (stored as ``cache_dtype``) and read back; without, decoded
    and encoded at each use (what a data set too large to cache needs). Training draws that change
    at every use (``train_sampling=random`` or ``augment``) are never cached."""
    from longvid.core.encoders import FeatureCache

    encoder = model.encoder
    if encoder is None:
        raise LongvidError(f"{run.model} has no image encoder: give encoder=PATH or pretrained=INSTRUCTBLIP")
    if training and (run.train_sampling == "random" or run.augment):
        return [functools.partial(_encode_training_draw, encoder, video, item, num_frames, run.train_sampling, run.augment)
                for item, video in samples]
    if not run.feature_cache:
        return [functools.partial(_encode, encoder, video, item, num_frames) for item, video in samples]
    store = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[run.cache_dtype]
    cache = FeatureCache(run.cache_dir or os.path.join(run.out_dir, "features"))
    fingerprint = encoder_fingerprint(encoder)
    loaders, done = [], {}
    bar = progress_bar(total=len(samples), desc="encode", unit="sample", enabled=progress)
    for item, video in samples:
        key = cache.key(video, fingerprint, f"uniform:{num_frames}:{item.start}:{item.end}:{encoder.image_size}:{run.cache_dtype}")
        if key not in done:
            cache.get_or_compute(key, lambda video=video, item=item: _encode(encoder, video, item, num_frames).to(store))
            done[key] = functools.partial(_load_features, cache.path(key))
        loaders.append(done[key])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return loaders


# -- model -----------------------------------------------------------------------------------


def build_run_model(run: MALMMRun, device: torch.device, say=print):
    """The run's model on ``device``, saying what each weights file gave (loaded / missing / unexpected)."""
    from longvid.malmm import build_model

    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if run.frozen_dtype not in (*dtypes, "auto"):
        raise LongvidError(f"frozen_dtype must be auto, {', '.join(dtypes)}; got {run.frozen_dtype!r}")
    dtype = dtypes.get(run.frozen_dtype, torch.float16 if device.type == "cuda" else None)
    model = build_model(run.model, pretrained=run.pretrained, checkpoint=run.weights, seed=run.seed, dtype=dtype,
                        device=device if run.pretrained else None, **run.model_overrides())
    for line in model.weight_reports:
        say(line)
    return model.to(device)


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


# -- evaluation ------------------------------------------------------------------------------


@torch.no_grad()
def rank_classes(model, state, prompts: Sequence[str], groups: Sequence[str], classes: dict[str, list[str]]) -> list[list[str]]:
    """Each stream's class names of its group, most likely first: summed log-likelihood of the name's
    tokens (+ EOS) under the LLM after the visual tokens and the prompt (MA-LMM's ``predict_class``,
    which ranks candidates by their LLM loss); ties keep the names' sorted order."""
    ranked: list[list[str]] = [[] for _ in prompts]
    for group in dict.fromkeys(groups):
        rows = [i for i, g in enumerate(groups) if g == group]
        sub = state.index_select(torch.tensor(rows))
        scores = model.score(sub, [prompts[i] for i in rows], classes[group])  # (b, K)
        for row, order in zip(rows, torch.argsort(-scores, dim=1, stable=True).tolist()):
            ranked[row] = [classes[group][k] for k in order]
    return ranked


@torch.no_grad()
def generate_answers(model, samples: list[tuple[LMMItem, str]], features: list, batch_size: int, progress: bool) -> list[str]:
    """Each sample's generated answer: its frames through the memory, then beam search."""
    return answer_and_rank(model, samples, features, batch_size, progress)[0]


@torch.no_grad()
def answer_and_rank(model, samples: list[tuple[LMMItem, str]], features: list, batch_size: int, progress: bool,
                    classes: dict[str, list[str]] | None = None) -> tuple[list[str], list[list[str]] | None]:
    """Each sample's generated answer (its frames through the memory, then beam search) and, with
    ``classes`` (group -> class names), its group's class names ranked by :func:`rank_classes`."""
    model.eval()
    device = model.llm_proj.weight.device
    answers, rankings = [], []
    bar = progress_bar(total=len(samples), desc="eval", unit="sample", enabled=progress)
    for first in range(0, len(samples), batch_size):
        chunk = samples[first : first + batch_size]
        tokens = torch.stack([load() for load in features[first : first + batch_size]]).to(device)  # (B, T, Nv, Cv)
        prompts = [item.prompt for item, _ in chunk]
        state = model.init_state(len(chunk), device, instructions=prompts)
        _, state = model.step_tokens(tokens, state)
        answers += model.answer(state, prompts)
        if classes is not None:
            rankings += rank_classes(model, state, prompts, [item.group for item, _ in chunk], classes)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return answers, (rankings if classes is not None else None)


def score(dataset: str, items: Sequence[LMMItem], predictions: Sequence[str],
          references: dict[str, list[str]] | None = None, meteor: bool = True,
          rankings: Sequence[Sequence[str]] | None = None) -> dict[str, float]:
    """MA-LMM's metric for ``dataset`` (see :mod:`longvid.malmm.metrics`); captions are scored
    against ``references`` (id -> captions; None: each item's own caption), the first prediction per id.
    Classification with ``rankings`` (each item's class names, most likely first): also top-5, the
    label among the first five (LVU: ``<task>_top5`` and ``mean_top5``; else ``top5``)."""
    from longvid.malmm.metrics import answer_correct, caption_metrics, grouped_accuracy

    top5 = {}
    if rankings is not None and dataset in CLASSIFICATION:
        if len(rankings) != len(items):
            raise LongvidError(f"top-5 needs one ranking per sample: {len(rankings)} for {len(items)} samples")
        hits = [item.answer in list(ranked)[:5] for item, ranked in zip(items, rankings)]
        if dataset == "lvu":
            per_task = {k: v for k, v in grouped_accuracy([item.group for item in items], hits).items() if k != "mean"}
            top5 = {**{f"{k}_top5": v for k, v in per_task.items()}, "mean_top5": sum(per_task.values()) / len(per_task)}
        else:
            top5 = {"top5": 100.0 * sum(hits) / len(hits)}
    if dataset in CAPTIONS:
        preds: dict[str, str] = {}
        for item, prediction in zip(items, predictions):
            preds.setdefault(item.key, prediction)
        refs = references if references is not None else {item.key: list(item.references) for item in items}
        return caption_metrics(preds, {key: refs[key] for key in preds}, meteor)
    correct = [answer_correct(p, item.answer, dataset in FIRST_WORD_QA) for item, p in zip(items, predictions)]
    per_group = grouped_accuracy([item.group for item in items], correct)
    if dataset == "lvu":
        groups = {k: v for k, v in per_group.items() if k != "mean"}
        return {**groups, "mean": sum(groups.values()) / len(groups), **top5}
    return {"top1" if dataset in CLASSIFICATION else "accuracy": 100.0 * sum(correct) / len(correct), **top5}


def write_metrics(out_dir: str, dataset: str, metrics: dict[str, float], samples: int) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "metrics.json")
    write_text_atomically(path, json.dumps({"dataset": dataset, "samples": samples, **metrics}, indent=2) + "\n")
    return path


def metrics_table(metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    return "\n".join(f"{name:<{width}}  {value:6.2f}" for name, value in metrics.items())


class Validation:
    """The evaluation samples of a run, read once; :meth:`answers` runs a model on them, each rank of
    a ``torchrun`` job answering every ``world``-th sample; :meth:`score` and :meth:`write` on rank 0."""

    def __init__(self, run: MALMMRun, say=print):
        self.run = run
        self.samples = read_eval_items(run, say)
        self.references = caption_references(run, [item for item, _ in self.samples])
        self.classes = class_names(run, [item for item, _ in self.samples])
        self.rankings: list[list[str]] | None = None  # of the last :meth:`answers` call

    def answers(self, model, progress: bool, rank: int = 0, world: int = 1) -> list[str]:
        """Every sample's generated answer (on every rank); with class names (top-5), also every sample's
        ranked class names in :attr:`rankings`."""
        from longvid.engine.distributed import all_gather_objects

        mine = self.samples[rank::world]
        features = feature_loaders(model, mine, model.config.num_frames, self.run, progress and rank == 0)
        classes = self.classes
        answered, ranked = answer_and_rank(model, mine, features, self.run.eval_batch_size, progress and rank == 0, classes)
        shards = all_gather_objects(list(zip(answered, ranked or [None] * len(answered))))  # rank r's: samples r, r + world, ...
        pairs = [shards[i % world][i // world] for i in range(len(self.samples))]
        self.rankings = [p[1] for p in pairs] if classes is not None else None
        return [p[0] for p in pairs]

    def score(self, answers: list[str]) -> dict[str, float]:
        return score(self.run.dataset, [item for item, _ in self.samples], answers, self.references, self.run.meteor, self.rankings)

    def write(self, answers: list[str], metrics: dict[str, float], predictions: str | None, say=print) -> None:
        """``out_dir/metrics.json`` and the predictions file (default ``out_dir/predictions.jsonl``), printed as a table."""
        items = [item for item, _ in self.samples]
        ranked = self.rankings or [None] * len(items)
        rows = [json.dumps({"id": item.key, "group": item.group, "prompt": item.prompt, "prediction": answer, "answer": item.answer,
                            **({"top5": top[:5]} if top is not None else {})}) + "\n"
                for item, answer, top in zip(items, answers, ranked)]
        write_lines_atomically(predictions or os.path.join(self.run.out_dir, "predictions.jsonl"), rows)
        path = write_metrics(self.run.out_dir, self.run.dataset, metrics, len(items))
        say(metrics_table(metrics))
        say(f"metrics of {len(items)} samples written to {path}")


def aggregate(dataset: str, metrics: dict[str, float]) -> float:
    """The one number that picks the best epoch (MA-LMM's ``agg_metrics``): LVU's mean, top-1,
    accuracy, or for captions CIDEr + BLEU-4 + METEOR + ROUGE-L."""
    if dataset == "lvu":
        return metrics["mean"]
    if dataset in CAPTIONS:
        return sum(metrics.get(k, 0.0) for k in ("CIDEr", "BLEU-4", "METEOR", "ROUGE-L"))
    return metrics["top1" if dataset in CLASSIFICATION else "accuracy"]


def _evaluate_model(run: MALMMRun, model, progress: bool, predictions: str | None, say=print) -> dict[str, float]:
    validation = Validation(run, say)
    answers = validation.answers(model, progress)
    metrics = validation.score(answers)
    validation.write(answers, metrics, predictions, say)
    return metrics


class BestEpoch(engine_validation.BestEpoch):
    """After every epoch, evaluates on the validation samples and keeps the best weights (by
    :func:`aggregate`) in ``out_dir/best.safetensors`` with ``best.json`` (step, epoch, metrics),
    as MA-LMM keeps its best validation epoch. Records go to the run log
    (:class:`longvid.engine.validation.BestEpoch`)."""

    def __init__(self, run: MALMMRun, validation: Validation, model, steps_per_epoch: int, is_main: bool, rank: int,
                 world: int, resume: bool, say=print):
        def evaluate():
            answers = validation.answers(model, progress=False, rank=rank, world=world)
            return validation.score(answers) if is_main else None

        super().__init__(evaluate, lambda metrics: aggregate(run.dataset, metrics),
                         lambda: save_weights(model, run.out_dir, "best.safetensors"), steps_per_epoch, run.out_dir,
                         is_main, resume, say, criterion="MA-LMM's agg_metrics")


def _load_trained(model, checkpoint: str, say=print) -> None:
    from longvid.engine import checkpoint as ckpt
    from longvid.engine.core import trainable_weights

    tensors, _, base = ckpt.load_latest(checkpoint)
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = set(trainable_weights(model))
    if set(weights) != expected:
        missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise LongvidError(f"{base} does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.load_state_dict(weights, strict=False)
    say(f"loaded {base}")


def save_weights(model, out_dir: str, name: str = "weights.safetensors") -> str:
    """The trained part (longvid names, no optimizer state) as ``out_dir/weights.safetensors``: what
    ``longvid ask --weights``, ``longvid stream --checkpoint`` and ``build_model(checkpoint=)`` load."""
    from safetensors.torch import save_file

    from longvid.engine.core import trainable_weights

    path = os.path.join(out_dir, name)
    tensors = {k: v.detach().cpu().contiguous() for k, v in trainable_weights(model).items()}
    write_atomically(path, lambda tmp: save_file(tensors, tmp))
    return path


# -- entry points ----------------------------------------------------------------------------


def train(config_name: str, overrides: Sequence[str] = (), resume: bool = False, progress: bool = True) -> list[dict]:
    """``longvid train <malmm preset> key=value ...``: train, then evaluate on ``val_data`` if given."""
    from longvid.engine.core import TaskTrainer
    from longvid.engine.distributed import DistInfo, barrier, cleanup, setup
    from longvid.core.seeding import seed_everything
    from longvid.malmm.qa import QAExample, QATask

    run = load_run(config_name, overrides)
    config = run.train_config()
    dist = setup()
    say = print if dist.is_main else (lambda text: None)
    try:
        samples = read_items(run, run.data, run.split, "training", say)
        empty = next((item for item, _ in samples if not item.answer), None)
        if empty is not None:
            raise LongvidError(f"{run.data}:{empty.line}: sample {empty.key!r} has an empty target text: nothing to train on")
        validation = Validation(run, say) if run.val_data else None  # read now: a bad file fails before compute
        seed_everything(run.seed)
        model = build_run_model(run, dist.device, say)
        if not dist.is_main:
            barrier()
        features = feature_loaders(model, samples, model.config.num_frames, run, progress and dist.is_main, training=True)
        if dist.is_main:
            barrier()
        examples = [QAExample(load, item.prompt, item.answer) for (item, _), load in zip(samples, features)]
        task = QATask(examples, config.batch_size, config.seed, config.shuffle, dist.device, dist.rank, dist.world_size)
        total = config.epochs * task.steps_per_epoch if config.max_steps is None else config.max_steps  # max_steps wins over epochs
        if dist.is_main:
            os.makedirs(run.out_dir, exist_ok=True)
            if not resume:  # an earlier run's best is not this run's
                engine_validation.forget_best(run.out_dir, ["best.json", "best.safetensors"])
            write_text_atomically(os.path.join(run.out_dir, "run.json"), json.dumps({"preset": config_name, **dataclasses.asdict(run)}, indent=2) + "\n")
        best = None
        if validation is not None and run.eval_every_epoch:
            best = BestEpoch(run, validation, model, task.steps_per_epoch, dist.is_main, dist.rank, dist.world_size, resume, say)
        trainer = TaskTrainer(model, task, config, total, run.out_dir, DistInfo(dist.rank, dist.world_size, dist.local_rank, dist.device),
                              on_step=best, log=say)
        if best is not None:
            best.run_log = trainer.run_log
        history = trainer.fit(resume=resume)
        if dist.is_main:
            weights = save_weights(model, run.out_dir)
            say(f"trained {trainer.step} steps on {len(examples)} samples; checkpoints in {run.out_dir}; "
                f"weights for ask / stream / weights=: {weights}")
        if validation is not None:  # the final weights, every rank answering its share
            answers = validation.answers(model, progress, dist.rank, dist.world_size)
            if dist.is_main:
                validation.write(answers, validation.score(answers), None, say)
        return history
    finally:
        cleanup()


def evaluate(config_name: str, overrides: Sequence[str] = (), checkpoint: str | None = None, progress: bool = True,
             predictions: str | None = None) -> dict[str, float]:
    """``longvid eval <malmm preset> val_data=FILE video_root=DIR ...``: the trained weights of
    ``checkpoint`` (default: ``out_dir/best.safetensors``, the best validation epoch, when the run
    kept one; else the latest checkpoint in ``out_dir``; none there: the model as built, said so)."""
    from longvid.engine import checkpoint as ckpt

    run = load_run(config_name, overrides)
    samples = read_eval_items(run, lambda text: None)
    caption_references(run, [item for item, _ in samples])
    class_names(run, [item for item, _ in samples])
    model = build_run_model(run, _device())
    best = os.path.join(run.out_dir, "best.safetensors")
    if checkpoint is None and os.path.exists(best):
        from longvid.malmm.model import load_checkpoint

        load_checkpoint(model, best)
        with open(os.path.join(run.out_dir, "best.json"), encoding="utf-8") as f:
            print(f"loaded {best} (the best validation epoch: {json.load(f)['epoch']})")
    elif checkpoint is None and ckpt.list_checkpoints(run.out_dir):
        checkpoint = run.out_dir
    if checkpoint is not None:
        _load_trained(model, checkpoint)
    elif not os.path.exists(best):
        print(f"no training checkpoint in {run.out_dir}: evaluating the model as built (pretrained=/weights= or its initial weights)")
    return _evaluate_model(run, model, progress, predictions)
