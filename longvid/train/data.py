"""Training data from a config: generated clips, annotation files or class folders."""

from __future__ import annotations

import os

import torch

from longvid.train.config import TrainConfig
from longvid.video.datasets import FileVideos, TensorVideos, load_annotations, load_kinetics_folder


def synthetic_source(config: TrainConfig, seed: int) -> TensorVideos:
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


def file_source(path: str, config: TrainConfig) -> FileVideos:
    """Clips of an annotation file or a ``root/<class>/<video>`` folder."""
    annotations = load_kinetics_folder(path) if os.path.isdir(path) else load_annotations(path)
    return FileVideos(
        annotations.samples, clip_frames=config.clip_frames, stride=config.stride, short_side=config.size, crop=config.size
    )


def build_sources(config: TrainConfig):
    """(train source, validation source or None) for ``config.data`` / ``config.val_data``."""
    if config.data == "synthetic":
        return synthetic_source(config, config.seed), synthetic_source(config, config.seed + 1)
    val = file_source(config.val_data, config) if config.val_data else None
    return file_source(config.data, config), val


def class_frequencies(source, num_classes: int) -> dict[str, torch.Tensor]:
    """Per single-label head, each class's share of the source's videos ``(num_classes,)``
    (the equalization loss's class frequencies)."""
    labels: dict[str, list[int]] = {}
    for video in range(len(source)):
        for head, target in source.targets(video).items():
            if target.dim() == 0:
                labels.setdefault(head, []).append(int(target))
    return {h: torch.bincount(torch.tensor(v), minlength=num_classes).float() / len(v) for h, v in labels.items()}
