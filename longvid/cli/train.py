"""``longvid train CONFIG`` and ``longvid eval CONFIG``: a recipe (or a MeMViT config file) with ``key=value`` overrides."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable

from longvid.cli.common import DTYPE_HELP
from longvid.errors import LongvidError


def cmd_train(args: argparse.Namespace) -> int:
    from longvid import registry
    from longvid.memvit.recipes import load_config
    from longvid.memvit.run import train

    if registry.run_family(args.config) is not None:  # MA-LMM / ReWind runs: their own configs, logs and metrics
        registry.train(args.config, args.overrides, resume=args.resume, progress=not args.quiet)
        return 0
    config = load_config(args.config, args.overrides)
    history = train(config, resume=args.resume, progress=not args.quiet)
    if history:
        losses = [r["loss"] for r in history if r["loss"] == r["loss"]]  # NaN: a step whose clips only built memory
        last = f"last loss {losses[-1]:.4f}" if losses else "no loss yet (every clip so far only built memory)"
        print(f"trained {history[-1]['step']} steps; {last}; checkpoints in {config.out_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from longvid import registry
    from longvid.memvit.recipes import load_config
    from longvid.memvit.run import evaluate_checkpoint

    if registry.run_family(args.config) is not None:  # writes out_dir/metrics.json and prints its table
        if args.dtype != "float32":
            raise LongvidError(f"--dtype {args.dtype} is for MeMViT eval configs, not {args.config}")
        metrics = registry.evaluate(args.config, args.overrides, args.checkpoint, progress=not args.quiet, predictions=args.predictions)
        if args.json:
            print(json.dumps(metrics))
        return 0
    config = load_config(args.config, args.overrides)
    if args.compile:
        from longvid.core.stream_input import quiet_compile_logs

        quiet_compile_logs()
    if args.predictions and not os.path.isdir(os.path.dirname(os.path.abspath(args.predictions))):
        raise LongvidError(f"--predictions {args.predictions}: its folder does not exist")
    import torch

    from longvid.precision import resolve_dtype

    if args.dtype != "float32" and config.model == "toy":
        raise LongvidError(f"--dtype {args.dtype} is for MeMViT models, not model=toy")
    dtype, dtype_note = resolve_dtype(args.dtype, "cuda" if torch.cuda.is_available() else "cpu")  # the device eval runs on
    if dtype_note and not args.quiet:
        print(f"longvid: {dtype_note}", file=sys.stderr)
    metrics = evaluate_checkpoint(config, args.checkpoint or config.out_dir, args.pooling, progress=not args.quiet,
                                  predictions=args.predictions, dtype=dtype, compile=args.compile,
                                  channels_last=args.channels_last)  # fmt: skip
    if args.json:
        print(json.dumps(metrics))
        return 0
    if not metrics:  # the EPIC test split: only the submission (evaluate_checkpoint said so)
        return 0
    width = max(len(k) for k in metrics)
    print(f"{'metric':<{width}}  value")
    print("\n".join(f"{k:<{width}}  {v:6.2f}" for k, v in metrics.items()))
    print(f"metrics written to {os.path.join(config.out_dir, 'metrics.json')}" + (f"; predictions to {args.predictions}" if args.predictions else ""))
    return 0


def add_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    sub = command("train", cmd_train, "Train a memory model on sequential clip streams, or MA-LMM on its data sets (use torchrun for several processes).")
    sub.add_argument("config", help="a training preset (see longvid models), a JSON file of config fields, or an MA-LMM run preset (malmm_lvu, malmm_tiny_lvu, ...)")
    sub.add_argument("overrides", nargs="*", help="config fields as key=value, e.g. lr=0.01 progressive=1,2,3")
    sub.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out_dir")
    sub.add_argument("--quiet", action="store_true", help="no progress bar")

    sub = command("eval", cmd_eval, "Evaluate a checkpoint on the config's validation videos.")
    sub.add_argument("config", help="a training preset or a JSON file of config fields")
    sub.add_argument("overrides", nargs="*", help="config fields as key=value")
    sub.add_argument("--checkpoint", help="checkpoint path or folder (default: the latest in out_dir)")
    sub.add_argument("--pooling", choices=("mean", "last"), default="mean", help="video score: mean of clip logits or the last clip's")
    sub.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help=DTYPE_HELP + " (MeMViT configs)")
    sub.add_argument("--json", action="store_true", help="print one JSON object")
    sub.add_argument("--predictions", metavar="FILE", help="write the official submission file to FILE: EPIC challenge JSON, AVA detection CSV; "
                     "MA-LMM/ReWind presets: every sample's prediction as JSONL")
    sub.add_argument("--compile", action="store_true", help="torch.compile the model (falls back to eager, with a line, when compiling fails)")
    sub.add_argument("--channels-last", action="store_true", help="3-D convolutions in the channels-last-3d layout")
    sub.add_argument("--quiet", action="store_true", help="no progress bar")
