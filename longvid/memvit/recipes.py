"""MeMViT's training recipes: named :class:`~longvid.memvit.run_config.MeMViTRunConfig` presets in a plain dict
(``longvid train NAME`` / ``longvid eval NAME``; ``longvid models`` lists them)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from longvid.engine import config as engine_config
from longvid.memvit.run_config import MeMViTRunConfig

PRESETS: dict[str, MeMViTRunConfig] = {
    # a few seconds on CPU: tiny MeMViT on generated clips
    "memvit_tiny_synthetic": MeMViTRunConfig(
        model="memvit_tiny", num_classes=4, data="synthetic", clip_frames=4, size=32, synthetic_videos=16,
        synthetic_clips=4, batch_size=4, epochs=4, progressive=(1, 2, 4), lr=2e-3, warmup_steps=4, log_every=5,
    ),
    # MeMViT paper recipe (sections 4.3, A.2) for Kinetics/EPIC-style data: SGD, 5 progressive stages
    "memvit16_16x4_sgd": MeMViTRunConfig(
        model="memvit16_16x4", num_classes=400, data="annotations.csv", clip_frames=16, stride=4, size=224,
        batch_size=8, epochs=50, progressive=(1, 2, 3, 4, 5), stage_epochs=10, optimizer="sgd", lr=0.1,
        weight_decay=1e-4, warmup_steps=1000, clip_grad=1.0, amp="auto",
    ),
    "memvit16_16x4_adamw": MeMViTRunConfig(
        model="memvit16_16x4", num_classes=400, data="annotations.csv", clip_frames=16, stride=4, size=224,
        batch_size=8, epochs=30, progressive=(1, 2, 3, 4, 5), stage_epochs=6, optimizer="adamw", lr=1e-4,
        weight_decay=0.05, warmup_steps=1000, label_smoothing=0.1,
    ),
    # -- the MeMViT paper's tasks on their official files (docs/training.md; sources in the comments) --
    # Kinetics-400 (paper 4.3, A.2): from scratch, SGD with cosine schedule, progressive 1..5-clip
    # stages, memory drop; the official train.csv / validate.csv (longvid.memvit.kinetics_files).
    "memvit16_16x4_k400": MeMViTRunConfig(
        model="memvit16_16x4", task="classify", num_classes=400, data="train.csv", clip_frames=16, stride=4, size=224, augment=True,
        batch_size=8, epochs=50, progressive=(1, 2, 3, 4, 5), stage_epochs=10, optimizer="sgd", lr=0.1,
        weight_decay=1e-4, warmup_steps=1000, clip_grad=1.0,
    ),
    # EPIC-KITCHENS-100 verb/noun classification (paper A.3): fine-tuned from Kinetics (init_from=),
    # AdamW lr 2e-4, weight decay 0.05, 30 epochs, M = 4 (consecutive: the paper's sampler).
    "memvit16_16x4_epic": MeMViTRunConfig(
        model="memvit16_16x4", task="epic_verb_noun", data="EPIC_100_train.csv", clip_frames=16, stride=4, size=224, augment=True,
        batch_size=8, epochs=30, optimizer="adamw", lr=2e-4, weight_decay=0.05, warmup_steps=1000,
        memory_len=4, sampler="consecutive",
    ),
    # EPIC-100 anticipation (paper A.4): the causal variant, one action head, equalization loss
    # lambda = 0.003, tau_a = 1 s; fine-tuned from the classification model (init_from=).
    "memvit16_16x4_epic_anticipation": MeMViTRunConfig(
        model="memvit16_16x4_anticipation", task="epic_anticipation", data="EPIC_100_train.csv", clip_frames=16,
        stride=4, size=224, augment=True, batch_size=8, epochs=30, optimizer="adamw", lr=2e-4, weight_decay=0.05,
        warmup_steps=1000, loss="eql", eql_lambda=0.003, tau_a=1.0, memory_len=4, sampler="consecutive",
    ),
    # AVA v2.2 (paper A.2): fine-tuned from Kinetics (init_from=), SGD lr 0.6, weight decay 1e-8,
    # 30 epochs, flip + short side 256-340 + crop 224, M = 2 (the released gap2 layout).
    "memvit16_16x4_ava": MeMViTRunConfig(
        model="memvit16_16x4_ava", task="ava", data="ava_train_v2.2.csv", clip_frames=16, stride=4, size=224, augment=True,
        batch_size=8, epochs=30, optimizer="sgd", lr=0.6, weight_decay=1e-8, warmup_steps=1000, loss="bce",
    ),
}  # fmt: skip


def _tiny_recipe(recipe: str, model: str, **changes) -> MeMViTRunConfig:
    """A paper recipe at a size that trains in seconds on a CPU (tests and smoke runs): the same
    task, optimizer, learning rate, loss, sampler and memory, on 4x32x32 clips of a tiny model."""
    small = dict(model=model, clip_frames=4, stride=2, size=32, batch_size=2, epochs=1, warmup_steps=2, log_every=5)
    return dataclasses.replace(PRESETS[recipe], **{**small, **changes})


PRESETS.update(
    memvit_tiny_k400=_tiny_recipe("memvit16_16x4_k400", "memvit_tiny", epochs=5, stage_epochs=1),
    memvit_tiny_epic=_tiny_recipe("memvit16_16x4_epic", "memvit_tiny"),
    memvit_tiny_epic_anticipation=_tiny_recipe("memvit16_16x4_epic_anticipation", "memvit_tiny_causal"),
    memvit_tiny_ava=_tiny_recipe("memvit16_16x4_ava", "memvit_tiny_ava", stride=1),
)


def load_config(name_or_path: str, overrides: Sequence[str] = ()) -> MeMViTRunConfig:
    """A recipe name (:data:`PRESETS`) or a JSON file of fields, then ``key=value`` overrides."""
    return engine_config.load_config(name_or_path, overrides, presets=PRESETS, config_class=MeMViTRunConfig)


def describe(name: str) -> str:
    """One line: the task and the data of recipe ``name``."""
    config = PRESETS[name]
    return f"task {config.task}, data {config.data}"
