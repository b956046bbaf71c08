"""``longvid bench [recall|scaling|malmm|rewind]``: the benchmarks."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable

from longvid.errors import LongvidError


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    if args.seeds is not None and args.what not in ("recall", "rewind"):
        raise LongvidError("--seeds is an option of bench (recall) and bench rewind only")
    if args.seed is not None and (args.what != "recall" or args.seeds is not None):
        raise LongvidError("--seed is an option of bench (recall), without --seeds")
    if args.workers is not None and args.what != "recall":
        raise LongvidError("--workers is an option of bench (recall) only")
    torch.set_num_threads(1)  # tiny tensors, one model at a time: one thread is much faster than two busy ones (and the recorded figures are single-threaded)
    if args.what == "scaling":
        from longvid.memvit.scaling import run_scaling

        run_scaling(args.preset, size=args.size, out_dir=args.out)
        return 0
    if args.what == "malmm":
        return _bench_malmm(args)
    if args.what == "rewind":
        return _bench_rewind(args)
    from longvid.bench.run import MODES, run_bench, save_demo_weights

    if args.quick and args.full:
        raise LongvidError("choose one of --quick and --full")
    if args.workers is not None and args.workers < 1:
        raise LongvidError(f"--workers must be >= 1, got {args.workers}")
    seeds = _seed_list(args.seeds) if args.seeds is not None else (args.seed or 0,)
    if args.seed is not None and args.seed < 0:
        raise LongvidError(f"--seed must be >= 0, got {args.seed}")
    mode = "quick" if args.quick else "full" if args.full else "default"
    results = run_bench(MODES[mode], seeds=seeds, out_dir=args.out, progress=not args.quiet, workers=args.workers)
    if args.save_weights:
        path = save_demo_weights(results, args.save_weights)
        print(f"saved {path}")
    return 0


def _bench_malmm(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    import torch

    from longvid.malmm.bench import MALMMBenchSpec, format_table, quick_spec, run_malmm_bench

    if args.full or args.save_weights:
        raise LongvidError("bench malmm takes --quick, --out and --quiet only")
    spec = MALMMBenchSpec()
    if args.quick:
        spec = quick_spec(spec)
    log = None if args.quiet else (lambda message: print(f"longvid: {message}", file=sys.stderr))
    torch.manual_seed(spec.train.seed)  # the recorded figures start from this global RNG state
    rows = run_malmm_bench(spec, log=log)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "malmm_recall.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"spec": asdict(spec), "rows": rows}, f, indent=1)
    print(format_table(rows))
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _bench_rewind(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from longvid.rewind.bench import RewindBenchSpec, format_table, quick_spec, run_rewind_bench

    if args.full or args.save_weights:
        raise LongvidError("bench rewind takes --quick, --seeds, --out and --quiet only")
    spec = RewindBenchSpec()
    if args.seeds is not None:
        spec = replace(spec, qa_seeds=_seed_list(args.seeds))
    if args.quick:
        spec = quick_spec(spec)
    log = None if args.quiet else (lambda message: print(f"longvid: {message}", file=sys.stderr))
    tables = run_rewind_bench(spec, out_dir=args.out, log=log)
    for name, rows in tables.items():
        print(f"ReWind {name}\n{format_table(rows)}\n")
    print(f"wrote {os.path.join(args.out, 'rewind.json')}, {os.path.join(args.out, 'rewind.md')}", file=sys.stderr)
    return 0


def _seed_list(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``; a clear error for anything else."""
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise LongvidError(f"--seeds takes comma-separated integers, e.g. 0,1,2, not {text!r}") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise LongvidError(f"--seeds must be distinct integers >= 0, got {text!r}")
    return seeds


def add_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    sub = command("bench", cmd_bench, "The long-range memory benchmark: train and compare memory vs more frames on recall "
                  "('scaling': the cost study of a full-size preset, no training).")  # fmt: skip
    sub.add_argument("what", nargs="?", choices=("recall", "scaling", "malmm", "rewind"), default="recall",
                     help="recall (default), scaling, malmm (MA-LMM vs no memory on QA recall), or rewind "
                          "(ReWind: grounding vs uniform frames, QA with vs without frame selection)")
    sub.add_argument("--quick", action="store_true", help="recall: a smaller run (d = 1, 2; fewer models); malmm, rewind: a ~2-minute smoke run")
    sub.add_argument("--full", action="store_true", help="recall: the thorough run (longer distances, more data)")
    sub.add_argument("--out", default="bench-results", help="results folder (default bench-results/)")
    sub.add_argument("--save-weights", default=None, metavar="PATH", help="recall: save the MeMViT with the longest reach (first seed) as PATH (.safetensors)")
    sub.add_argument("--preset", default="memvit16_16x4", help="scaling: model preset (default memvit16_16x4)")
    sub.add_argument("--size", type=int, default=None, help="scaling: spatial size (default: the preset's crop size)")
    sub.add_argument("--seed", type=int, default=None, metavar="S", help="recall: the run's seed (default 0)")
    sub.add_argument("--seeds", default=None, metavar="LIST",
                     help="recall: run every seed, e.g. 0,1,2, and report mean and min per cell; "
                          "rewind: QA table averaged over these runs (default 0)")
    sub.add_argument("--workers", type=int, default=None, metavar="N",
                     help="recall: rows trained at once in separate processes (default: 2 if 2 cores are free to use, else 1)")
    sub.add_argument("--quiet", action="store_true", help="no progress bars")
