"""Training data from a config: generated clips, annotation files or class folders."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import torch

from longvid.memvit.kinetics_files import is_kinetics_csv, load_kinetics_csv
from longvid.errors import LongvidError
from longvid.memvit.augment import training_augment
from longvid.memvit.run_config import MeMViTRunConfig
from longvid.data.annotations import load_annotations, load_kinetics_folder
from longvid.data.labels import CLASSES_FILE, load_labels
from longvid.data.sources import ClipSource, FileVideos, TensorVideos


def synthetic_source(config: MeMViTRunConfig, seed: int) -> TensorVideos:
    """``synthetic_videos`` videos of ``synthetic_clips`` clips ``(3, T, size, size)``:
    a fixed per-class colour pattern plus noise, so the class is learnable from any clip."""
    gen = torch.Generator().manual_seed(seed)
    patterns = torch.randn(config.num_classes, 3, 1, 1, 1, generator=torch.Generator().manual_seed(1234))
    shape = (config.synthetic_clips, 3, config.clip_frames, config.size, config.size)
    videos, targets = [], []
    for index in range(config.synthetic_videos):
        label = index % config.num_classes
        videos.append(patterns[label] + 0.5 * torch.randn(shape, generator=gen))  # (N, 3, T, S, S)
        targets.append({"label": label})
    return TensorVideos(videos, targets)


@dataclass
class Sources:
    """A run's data: training and validation clips and, for files that name their
    classes, the class list that maps names to indices (index order)."""

    train: ClipSource | None
    val: ClipSource | None
    classes: list[str] | None = None
    actions: list[tuple[int, int]] | None = None  # epic_anticipation: the (verb, noun) of each action class
    summary: list[str] = field(default_factory=list)  # one line per annotation file: what was found / missing


def file_source(path: str, config: MeMViTRunConfig, classes: list[str] | None = None, summary: list[str] | None = None,
                train: bool = False) -> tuple[FileVideos, list[str] | None]:  # fmt: skip
    """Clips of an annotation file (generic, or the official Kinetics CSV) or a
    ``root/<class>/<video>`` folder, every label checked against ``config.num_classes``; and
    the class list used (None: integer labels). ``summary`` collects one line per file;
    ``train`` clips are augmented when ``config.augment``."""
    if is_kinetics_csv(path):
        annotations, line = load_kinetics_csv(path, config.video_folder(path, val=not train), classes, config.strict)
        if summary is not None:
            summary.append(line)
    elif os.path.isdir(path):
        annotations = load_kinetics_folder(path, classes=classes)
    else:
        annotations = load_annotations(path, classes=classes, num_classes=config.num_classes, require_labels=True)
    names = annotations.classes.get("label") or None
    if names is not None and len(names) > config.num_classes:
        raise LongvidError(f"{path}: {len(names)} classes but num_classes={config.num_classes}")
    videos = FileVideos(
        annotations.samples, augment=training_augment(config) if train else None, clip_frames=config.clip_frames,
        stride=config.stride, short_side=config.size, crop=config.size,
    )  # fmt: skip
    return videos, names


def build_sources(config: MeMViTRunConfig, saved_in: Sequence[str] = (), need_train: bool = True) -> Sources:
    """Training and validation data for ``config.data`` / ``config.val_data``.

    Class names map to indices through one list, used for both files: ``config.classes``
    (a file) if given, else the first ``classes.json`` found in the ``saved_in`` folders
    (what an earlier run saved), else the sorted names of the training file. EPIC tasks read
    the official CSVs (:mod:`longvid.memvit.tasks`); without ``need_train`` (evaluation of a
    saved run) only ``val_data`` is read when given.
    """
    if config.task in ("epic_verb_noun", "epic_anticipation"):
        return _epic_sources(config, saved_in, need_train)
    if config.task == "ava":
        return _ava_sources(config, need_train)
    if config.data == "synthetic":
        return Sources(synthetic_source(config, config.seed), synthetic_source(config, config.seed + 1))
    classes = load_labels(config.classes) if config.classes else _saved_classes(saved_in)
    lines: list[str] = []
    if not need_train and config.val_data and (classes is not None or not os.path.exists(config.data)):
        return Sources(None, file_source(config.val_data, config, classes, lines)[0], classes, summary=lines)
    train, classes = file_source(config.data, config, classes, lines, train=True)
    val = file_source(config.val_data, config, classes, lines)[0] if config.val_data else None
    return Sources(train, val, classes, summary=lines)


def _epic_sources(config: MeMViTRunConfig, saved_in: Sequence[str], need_train: bool) -> Sources:
    from longvid.memvit import tasks

    read_train = need_train or not config.val_data
    actions = tasks.saved_actions(saved_in) if config.task == "epic_anticipation" else None
    train, lines = None, []
    if read_train:
        if config.task == "epic_anticipation" and actions is None:
            actions = tasks.action_list(tasks.read_epic(config.data, config))
        train, _, line = tasks.epic_source(config.data, config, actions, train=True)
        lines.append(line)
    elif config.task == "epic_anticipation" and actions is None:
        raise LongvidError(f"no {tasks.ACTIONS_FILE} in {', '.join(saved_in)}: the action classes come from the training run")
    val = None
    if config.val_data:
        # evaluation of a saved run also takes EPIC_100_test_timestamps.csv (no labels: submission only)
        val, _, line = tasks.epic_source(config.val_data, config, actions, train=False, require_labels=need_train)
        lines.append(line)
    return Sources(train, val, None, actions, lines)


def _ava_sources(config: MeMViTRunConfig, need_train: bool) -> Sources:
    from longvid.memvit.ava import ava_source, evaluated_classes

    classes = evaluated_classes(config)
    sources, lines = {}, []
    for name, path in (("train", config.data if need_train or not config.val_data else None), ("val", config.val_data)):
        if path:
            source, truth, line = ava_source(path, config, name == "train", classes)
            source.truth, source.classes = truth, classes
            sources[name] = source
            lines.append(line)
    return Sources(sources.get("train"), sources.get("val"), summary=lines)


def _saved_classes(folders: Sequence[str]) -> list[str] | None:
    for folder in folders:
        path = os.path.join(folder, CLASSES_FILE)
        if os.path.isfile(path):
            return load_labels(path)
    return None


def class_frequencies(source, num_classes: int) -> dict[str, torch.Tensor]:
    """Per single-label head, each class's share of the source's videos ``(num_classes,)``
    (the equalization loss's class frequencies)."""
    labels: dict[str, list[int]] = {}
    for video in range(len(source)):
        for head, target in source.targets(video).items():
            if target.dim() == 0:
                labels.setdefault(head, []).append(int(target))
    return {h: torch.bincount(torch.tensor(v), minlength=num_classes).float() / len(v) for h, v in labels.items()}
