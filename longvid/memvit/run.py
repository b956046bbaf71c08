"""Whole runs from a config: what ``longvid train`` and ``longvid eval`` call."""

from __future__ import annotations

import json
import os
import sys

import torch
from torch import nn

from longvid.errors import LongvidError
from longvid.fileio import write_text_atomically
from longvid.precision import for_inference
from longvid.progress import progress as progress_bar
from longvid.core.stream_input import prepare_model
from longvid.engine import checkpoint as ckpt
from longvid.memvit import finetune, tasks
from longvid.memvit.run_config import MeMViTRunConfig
from longvid.data.labels import save_class_list
from longvid.memvit.data import build_sources, class_frequencies
from longvid.engine.distributed import cleanup, setup
from longvid.core.seeding import seed_everything
from longvid.memvit.loop import Trainer
from longvid.engine.toy import ToyMemoryModel


def build_model(config: MeMViTRunConfig, actions=None) -> nn.Module:
    """``toy`` (:class:`ToyMemoryModel`) or a MeMViT preset sized for the config's clips, with
    the task's head (``actions``: the anticipation action classes)."""
    if config.model == "toy":
        return ToyMemoryModel(num_classes=config.num_classes)
    from longvid.memvit.model import build_model as build_memvit

    return build_memvit(config.model, **tasks.model_overrides(config, actions))


def train(config: MeMViTRunConfig, resume: bool = False, progress: bool = True) -> list[dict]:
    """Train ``config`` (single process, or one rank under ``torchrun``); returns step records."""
    dist = setup()
    try:
        data = build_sources(config, saved_in=[config.out_dir] if resume else [])
        if data.classes is not None and dist.is_main:
            save_class_list(config.out_dir, data.classes)
        if data.actions is not None and dist.is_main:
            tasks.save_actions(config.out_dir, data.actions)
        seed_everything(config.seed)
        model = build_model(config, data.actions)
        notes = data.summary + finetune.prepare(model, config)
        train_source, val_source = data.train, data.val
        num_classes = len(data.actions) if data.actions else config.num_classes
        freq = class_frequencies(train_source, num_classes) if config.loss == "eql" else None
        evaluator = lambda model, source: tasks.evaluate_task(config, model, source, dist, data.actions)[0]  # noqa: E731
        bar = progress_bar(desc="train", unit="step", enabled=dist.is_main and progress)
        on_step = None if bar is None else (lambda r: (bar.set_postfix(loss=f"{r['loss']:.4f}", lr=f"{r['lr']:.2e}"), bar.update(1)))
        log = print if bar is None else bar.write
        for line in notes if dist.is_main else ():
            log(line)
        trainer = Trainer(model, config, train_source, val_source, freq, dist, on_step=on_step, log=log, evaluator=evaluator)
        if bar is not None:
            bar.total = min(config.max_steps, trainer.total_steps) if config.max_steps is not None else trainer.total_steps
        try:
            return trainer.fit(resume=resume)
        finally:
            if bar is not None:
                bar.close()
    finally:
        cleanup()


def evaluate_checkpoint(config: MeMViTRunConfig, checkpoint: str, pooling: str = "mean", progress: bool = True,
                        predictions: str | None = None, dtype: str | torch.dtype = "float32", compile: bool = False,
                        channels_last: bool = False) -> dict:  # fmt: skip
    """Load a checkpoint's weights into the config's model and evaluate on ``val_data``
    (or ``data`` when there is none; generated data uses its held-out videos). The metrics
    are also written to ``out_dir/metrics.json``; ``predictions``: the EPIC challenge JSON
    of every evaluated segment is written there. ``val_data`` may be the unlabelled
    ``EPIC_100_test_timestamps.csv``: then ``predictions`` is required, no metrics are
    computed, and ``{}`` is returned. ``dtype``: the weights and memory run in
    it (:func:`longvid.precision.for_inference`); ``compile``/``channels_last``: see
    :func:`longvid.core.stream_input.prepare_model`."""
    dist = setup()
    try:
        if predictions is not None and not (tasks.is_epic(config) or config.task == "ava"):
            raise LongvidError(f"--predictions writes the EPIC challenge JSON or the AVA detection CSV: task {config.task!r} has no submission format")
        folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(os.path.abspath(checkpoint))
        data = build_sources(config, saved_in=[config.out_dir, folder], need_train=False)
        source = data.val or data.train
        unlabelled = not getattr(source, "labelled", True)
        if unlabelled and predictions is None:
            raise LongvidError(f"{config.val_data}: the test split has no labels to score: add --predictions FILE to write its challenge JSON")
        if dist.is_main:
            for line in data.summary:
                print(line)
        model = build_model(config, data.actions).to(dist.device)
        tensors, _, path = ckpt.load_latest(checkpoint)
        ckpt.load_model_weights(model, tensors, path)
        log = (lambda message: print(f"longvid: {message}", file=sys.stderr)) if dist.is_main else None
        model = for_inference(model, dtype, dist.device, log=log or (lambda _: None))
        model = prepare_model(model, compile=compile, channels_last=channels_last, log=log)
        bar = progress_bar(desc="eval", unit="step", enabled=dist.is_main and progress)
        try:
            metrics, results = tasks.evaluate_task(config, model, source, dist, data.actions, pooling, bar)
        finally:
            if bar is not None:
                bar.close()
        if dist.is_main:
            if not unlabelled:
                os.makedirs(config.out_dir, exist_ok=True)
                write_text_atomically(os.path.join(config.out_dir, "metrics.json"), json.dumps(metrics, indent=1) + "\n")
            if predictions is not None:
                write_text_atomically(predictions, tasks.predictions_text(config, results, source, data.actions))
            if unlabelled:
                print(f"{os.path.basename(config.val_data)} has no labels (the test split): no metrics computed; "
                      f"submission of {len(results)} segments written to {predictions}")
        return metrics
    finally:
        cleanup()
