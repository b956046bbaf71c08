"""The MeMViT paper's tasks on their official files: what each ``task`` of a
:class:`~longvid.memvit.run_config.MeMViTRunConfig` builds (data, head), and how it is scored.

| task | data | head | loss | metrics |
|---|---|---|---|---|
| ``classify`` | generic CSV/JSON, Kinetics CSV or class folders | linear | ``loss`` (CE/BCE/EQL) | top1, top5 |
| ``epic_verb_noun`` | EPIC-100 action CSV | verb + noun | CE + CE | verb/noun/action top1/top5 (+ tail_, unseen_) |
| ``epic_anticipation`` | EPIC-100 action CSV | one action head (causal model) | EQL | verb/noun/action class-mean recall@5 (+ tail_, unseen_) |
| ``ava`` | AVA v2.2 CSV, action list, excluded timestamps, person boxes | box head | sigmoid BCE | frame-mAP@0.5, AP per class |

EPIC items are clip windows (:mod:`longvid.memvit.windows`): the clips of each segment (or
the clip ending ``tau_a`` before it) after ``context_clips`` clips of the same video that
only build memory.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import torch

from longvid.memvit.epic_files import EpicAnnotations, load_epic_actions, load_id_column, load_video_info
from longvid.errors import LongvidError
from longvid.eval.metrics import class_mean_recall, epic_accuracy
from longvid.fileio import write_text_atomically
from longvid.memvit.run_config import MeMViTRunConfig
from longvid.memvit.augment import training_augment
from longvid.memvit.windows import Window, WindowClips, anticipation_window, classification_window, clip_seconds

ACTIONS_FILE = "actions.json"  # anticipation: the (verb, noun) pair of each action class, saved in out_dir


def is_epic(config: MeMViTRunConfig) -> bool:
    return config.task in ("epic_verb_noun", "epic_anticipation")


def memvit_config(config: MeMViTRunConfig):
    """The MeMViT config the run builds (memory overrides applied), or None for other models."""
    from longvid.memvit.config import PRESETS, get_config

    if config.model not in PRESETS:
        return None
    return get_config(config.model, **memory_overrides(config))


def memory_overrides(config: MeMViTRunConfig) -> dict:
    """The run's memory fields that replace the model preset's (``memory_len``, ``sampler``,
    and the ablation knobs ``compress_stride``, ``memory_blocks``)."""
    out = {}
    if config.memory_len is not None:
        out["memory_len"] = config.memory_len
    if config.sampler is not None:
        out["sampler"] = config.sampler
    if config.compress_stride is not None:
        out["compress_stride"] = tuple(config.compress_stride)
    if config.memory_blocks is not None:
        out["memory_blocks"] = tuple(config.memory_blocks)
    return out


def model_overrides(config: MeMViTRunConfig, actions: Sequence[tuple[int, int]] | None = None) -> dict:
    """``build_model`` keyword arguments for the task's head (and the config's clip size and memory)."""
    out = {"num_frames": config.clip_frames, "crop_size": config.size, **memory_overrides(config)}
    if config.task == "classify":
        return {**out, "num_classes": config.num_classes, "head": "linear"}
    if config.task == "epic_verb_noun":
        return {**out, "num_classes": (config.num_verbs, config.num_nouns), "head": "verb_noun"}
    if config.task == "ava":
        from longvid.memvit.ava import evaluated_classes

        return {**out, "num_classes": len(evaluated_classes(config)), "head": "ava"}
    if not actions:
        raise LongvidError("epic_anticipation needs the action list (actions.json of the training run)")
    return {**out, "num_classes": len(actions), "head": "anticipation"}


def context_clips(config: MeMViTRunConfig) -> int:
    """Clips read before each EPIC item to build memory: ``context_clips``, else the model's
    reach (``M * gap`` past clips), 0 without memory."""
    if config.context_clips is not None:
        return config.context_clips
    model = memvit_config(config)
    return model.memory_spec.cache_len if model is not None and model.memory_spec is not None else 0


# -- EPIC-KITCHENS-100 data ------------------------------------------------------------------


def read_epic(path: str, config: MeMViTRunConfig, val: bool = False, require_labels: bool = True) -> EpicAnnotations:
    """``require_labels=False`` also takes ``EPIC_100_test_timestamps.csv`` (class ids -1)."""
    return load_epic_actions(path, config.video_folder(path, val), config.num_verbs, config.num_nouns, config.strict,
                             require_labels=require_labels)  # fmt: skip


def action_list(annotations: EpicAnnotations) -> list[tuple[int, int]]:
    """The anticipation action classes: the sorted (verb, noun) pairs of the training file."""
    return sorted({(s.verb, s.noun) for s in annotations.segments})


def save_actions(directory: str, actions: Sequence[tuple[int, int]]) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, ACTIONS_FILE)
    write_text_atomically(path, json.dumps([list(a) for a in actions]) + "\n")
    return path


def saved_actions(folders: Sequence[str]) -> list[tuple[int, int]] | None:
    for folder in folders:
        path = os.path.join(folder, ACTIONS_FILE)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return [tuple(pair) for pair in json.load(f)]
    return None


def epic_windows(annotations: EpicAnnotations, config: MeMViTRunConfig, actions: Sequence[tuple[int, int]] | None) -> list[Window]:
    """One window per segment (anticipation: segments starting within ``tau_a`` of their
    video's start have nothing to observe and are left out)."""
    info = load_video_info(config.video_info) if config.video_info else {}
    context = context_clips(config)
    action_index = {pair: i for i, pair in enumerate(actions or [])}
    timing: dict[str, tuple[float, float | None]] = {}
    windows = []
    for seg in annotations.segments:
        if seg.video_id not in timing:
            timing[seg.video_id] = _fps_and_duration(seg.video, info.get(seg.video_id))
        fps, duration = timing[seg.video_id]
        span = clip_seconds(config.clip_frames, config.stride, fps)
        meta = {"participant_id": seg.participant_id, "verb": seg.verb, "noun": seg.noun, "line": seg.line}
        if config.task == "epic_verb_noun":
            targets = {"verb": seg.verb, "noun": seg.noun}
            windows.append(classification_window(seg.video, seg.start, seg.end, span, context, duration, targets, seg.narration_id, meta))
        else:
            targets = {"action": action_index.get((seg.verb, seg.noun), -1)}
            window = anticipation_window(seg.video, seg.start, config.tau_a, span, context, targets, seg.narration_id, meta)
            if window is not None:
                windows.append(window)
    return windows


def _fps_and_duration(video: str, fps: float | None) -> tuple[float, float | None]:
    from longvid.video.reader import probe

    info = probe(video)
    return (fps or info.fps), (info.duration or None)


def epic_source(path: str, config: MeMViTRunConfig, actions, train: bool, require_labels: bool = True) -> tuple[WindowClips, EpicAnnotations, str]:
    """The file's windows as clips, its annotations and its summary line. ``require_labels=False``
    (evaluation only) takes the unlabelled test file: ``source.labelled`` is then False."""
    annotations = read_epic(path, config, val=not train, require_labels=require_labels or train)
    windows = epic_windows(annotations, config, actions)
    summary = annotations.summary()
    if config.task == "epic_anticipation" and len(windows) < len(annotations.segments):
        early = len(annotations.segments) - len(windows)
        summary += f"; {early} segments start within tau_a={config.tau_a} s of their video's start (nothing to observe: left out)"
    if train and config.task == "epic_anticipation":
        windows = [w for w in windows if w.targets["action"] >= 0]
    if not windows:
        raise LongvidError(f"{path}: no segment leaves a clip to read (anticipation: every segment starts within tau_a={config.tau_a} s of its video's start)")

    augment = training_augment(config) if train else None
    source = WindowClips(windows, augment, clip_frames=config.clip_frames, stride=config.stride, short_side=config.size, crop=config.size)
    source.labelled = annotations.labelled
    return source, annotations, summary


# -- scores -> metrics -----------------------------------------------------------------------


def evaluate_task(config: MeMViTRunConfig, model, source, dist=None, actions=None, pooling: str = "mean", progress=None):
    """Run ``model`` over ``source`` and score it as the task does: ``(metrics, results)`` where
    results are the AVA detections or the per-item scores (for :func:`predictions_text`);
    metrics are ``{}`` for an unlabelled source (the EPIC test file)."""
    if config.task == "ava":
        from longvid.memvit.ava import ava_metrics, collect_detections

        device = next(model.parameters()).device
        detections = collect_detections(model, source, config.batch_size, device, source.classes, dist, progress)
        return ava_metrics(detections, source.truth, source.classes, config.excluded_timestamps), detections
    from longvid.memvit.loop import collect_scores

    device = next(model.parameters()).device
    items = collect_scores(model, source, config.batch_size, device, pooling, dist, progress)
    if not getattr(source, "labelled", True):  # the EPIC test file: scores for the submission, no metrics
        return {}, items
    return task_metrics(config, items, source, actions), items


def predictions_text(config: MeMViTRunConfig, results, source, actions=None) -> str:
    """The official submission file: the EPIC challenge JSON or the AVA detection CSV."""
    if config.task == "ava":
        from longvid.memvit.ava import detection_csv

        return detection_csv(results)
    if not is_epic(config):
        raise LongvidError(f"--predictions writes the EPIC challenge JSON or the AVA detection CSV: task {config.task!r} has neither")
    return json.dumps(epic_submission(config, results, source, actions)) + "\n"



def task_metrics(config: MeMViTRunConfig, items: list[tuple[int, dict, dict]], source, actions=None) -> dict[str, float]:
    """The task's metrics from ``[(item index, scores per head, targets per head)]``."""
    if not items:
        raise LongvidError("no videos were evaluated")
    if config.task == "epic_verb_noun":
        return epic_classification_metrics(items, source, config)
    if config.task == "epic_anticipation":
        return anticipation_metrics(items, source, actions, config)
    from longvid.memvit.loop import classification_metrics

    return classification_metrics([(s, t) for _, s, t in items])


def epic_classification_metrics(items, source: WindowClips, config: MeMViTRunConfig) -> dict[str, float]:
    """verb/noun/action top1/top5; with the official split files, the same on the tail
    classes (``tail_``: verbs in the tail-verb list, nouns in the tail-noun list, actions
    with either) and the unseen participants (``unseen_``).
    A split without segments is left out."""
    verb = torch.stack([s["verb"] for _, s, _ in items])  # (N, Kv)
    noun = torch.stack([s["noun"] for _, s, _ in items])  # (N, Kn)
    verb_labels = torch.stack([t["verb"] for _, _, t in items]).long()
    noun_labels = torch.stack([t["noun"] for _, _, t in items]).long()
    result = epic_accuracy(verb, noun, verb_labels, noun_labels)
    if config.tail_verbs or config.tail_nouns:
        tail_v = _in_ids(verb_labels, config.tail_verbs)
        tail_n = _in_ids(noun_labels, config.tail_nouns)
        for part, mask in (("verb", tail_v), ("noun", tail_n), ("action", tail_v | tail_n)):
            if mask.any():
                sub = epic_accuracy(verb[mask], noun[mask], verb_labels[mask], noun_labels[mask])
                result.update({f"tail_{k}": v for k, v in sub.items() if k.startswith(part)})
    if config.unseen_participants:
        unseen = load_id_column(config.unseen_participants, None)
        mask = torch.tensor([source.windows[i].meta["participant_id"] in unseen for i, _, _ in items])
        if mask.any():
            sub = epic_accuracy(verb[mask], noun[mask], verb_labels[mask], noun_labels[mask])
            result.update({f"unseen_{k}": v for k, v in sub.items()})
    return result


def _in_ids(labels: torch.Tensor, path: str | None) -> torch.Tensor:
    """Bool ``(N,)``: labels listed in the split file ``path`` (first column: class id)."""
    if not path:
        return torch.zeros_like(labels, dtype=torch.bool)
    ids = load_id_column(path, None)
    bad = sorted(i for i in ids if not i.isdigit())
    if bad:
        raise LongvidError(f"{path}: the first column must hold class ids, got {bad[0]!r}")
    return torch.isin(labels, torch.tensor(sorted(int(i) for i in ids), dtype=torch.long))


def marginals(action_scores: torch.Tensor, actions: Sequence[tuple[int, int]], num_verbs: int, num_nouns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Verb and noun probabilities ``(N, Kv)``, ``(N, Kn)``: the action softmax ``(N, A)``
    summed over the actions of each verb (noun)."""
    probs = action_scores.float().softmax(dim=1)
    pairs = torch.tensor(list(actions), dtype=torch.long)  # (A, 2)
    verb = probs.new_zeros(probs.shape[0], num_verbs).index_add_(1, pairs[:, 0], probs)
    noun = probs.new_zeros(probs.shape[0], num_nouns).index_add_(1, pairs[:, 1], probs)
    return verb, noun


def anticipation_metrics(items, source: WindowClips, actions: Sequence[tuple[int, int]], config: MeMViTRunConfig | None = None) -> dict[str, float]:
    """Class-mean recall@5 (EPIC-100 anticipation) of verbs, nouns (by marginalization) and
    actions; segments whose action is not an action class count for verbs and nouns only.
    With the official split files (``config.tail_verbs``/``tail_nouns``/``unseen_participants``)
    the same on the tail classes (``tail_``: the class mean over the tail verbs, the tail nouns,
    and the actions with a tail verb or a tail noun) and on the unseen participants' segments
    (``unseen_``), as the challenge's evaluation does. A split without segments is left out."""
    scores = torch.stack([s["action"] for _, s, _ in items])  # (N, A)
    meta = [source.windows[i].meta for i, _, _ in items]
    verb_labels = torch.tensor([m["verb"] for m in meta])
    noun_labels = torch.tensor([m["noun"] for m in meta])
    action_labels = torch.stack([t["action"] for _, _, t in items]).long()
    num_verbs = max(max(v for v, _ in actions), int(verb_labels.max())) + 1
    num_nouns = max(max(n for _, n in actions), int(noun_labels.max())) + 1
    verb, noun = marginals(scores, actions, num_verbs, num_nouns)
    scored = {"verb": (verb, verb_labels), "noun": (noun, noun_labels), "action": (scores, action_labels)}

    def recalls(mask: torch.Tensor, parts=("verb", "noun", "action")) -> dict[str, float]:
        out = {}
        for part in parts:
            part_scores, labels = scored[part]
            keep = mask & (labels >= 0)  # actions: a pair that is no action class counts for verbs and nouns only
            if keep.any():
                out[f"{part}_recall5"] = class_mean_recall(part_scores[keep], labels[keep], 5)
        return out

    everything = torch.ones(len(items), dtype=torch.bool)
    result = recalls(everything)
    if config is not None and (config.tail_verbs or config.tail_nouns):
        tail_v = _in_ids(verb_labels, config.tail_verbs)
        tail_n = _in_ids(noun_labels, config.tail_nouns)
        for part, mask in (("verb", tail_v), ("noun", tail_n), ("action", tail_v | tail_n)):
            result.update({f"tail_{k}": v for k, v in recalls(mask, (part,)).items()})
    if config is not None and config.unseen_participants:
        unseen = load_id_column(config.unseen_participants, None)
        mask = torch.tensor([m["participant_id"] in unseen for m in meta])
        result.update({f"unseen_{k}": v for k, v in recalls(mask).items()})
    return result


# -- submission files ------------------------------------------------------------------------


def epic_submission(config: MeMViTRunConfig, items, source: WindowClips, actions=None, top_actions: int = 100) -> dict:
    """The EPIC-KITCHENS-100 challenge JSON: per ``narration_id``, verb and noun scores
    (softmax) for recognition; plus the ``top_actions`` best ``"verb,noun"`` action scores for
    anticipation."""
    results = {}
    for index, scores, _ in items:
        key = source.windows[index].key
        if config.task == "epic_verb_noun":
            verb, noun = scores["verb"].float().softmax(0), scores["noun"].float().softmax(0)
            results[key] = {"verb": _score_dict(verb), "noun": _score_dict(noun)}
        else:
            verb, noun = marginals(scores["action"][None], actions, config.num_verbs, config.num_nouns)
            probs = scores["action"].float().softmax(0)
            best = probs.topk(min(top_actions, probs.numel())).indices.tolist()
            action = {f"{actions[a][0]},{actions[a][1]}": round(float(probs[a]), 6) for a in best}
            results[key] = {"verb": _score_dict(verb[0]), "noun": _score_dict(noun[0]), "action": action}
    challenge = "action_recognition" if config.task == "epic_verb_noun" else "action_anticipation"
    # sls_*: the supervision levels the challenge asks submitters to declare (pre-training,
    # temporal labels, training data); set them for your run before submitting
    return {"version": "0.2", "challenge": challenge, "sls_pt": 2, "sls_tl": 3, "sls_td": 3, "results": results}


def _score_dict(scores: torch.Tensor) -> dict[str, float]:
    return {str(i): round(float(v), 6) for i, v in enumerate(scores.tolist())}
