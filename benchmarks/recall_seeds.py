"""The MViT / MeMViT rows of the default ``longvid bench`` over seeds, one row at a time.

    python benchmarks/recall_seeds.py --rows m2,m4 --seeds 0,1,2,3,4 [--linear-init vit] [--out DIR]

Rows: ``short`` (MViT short-term), ``bK`` (MViT K x frames), ``mM`` (MeMViT M=M). Each row
is trained exactly as in ``longvid bench`` (:func:`longvid.bench.run.run_variant`, one
thread, seeded), so its figures are those of the default run's row for that seed. Per
row and seed it prints the accuracy at every distance and at d = 0 (the cue in the
asked clip), the confused class pairs at d = 0 and within reach (true -> predicted:
count), the training loss (mean over each eighth of the updates) and the row's CPU
seconds of training. ``--linear-init vit`` trains with ViT's 0.02 Linear init instead
of the bench's ``1 / sqrt(fan_in)``, for comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile

import torch

from longvid.bench import run as bench
from longvid.data.synth import class_name
from longvid.memvit.loop import collect_scores


def parse_row(name: str) -> bench.Variant:
    if name == "short":
        return bench.short_term()
    if name[:1] in "bm" and name[1:].isdigit():
        return bench.baseline(int(name[1:])) if name[0] == "b" else bench.memvit(int(name[1:]))
    raise SystemExit(f"recall_seeds: unknown row {name!r}: use short, bK or mM")


def confusion(model, variant: bench.Variant, clips: torch.Tensor, labels: torch.Tensor, cfg: bench.BenchConfig) -> torch.Tensor:
    """(K, K) counts: true class x predicted class of the last clip."""
    items = collect_scores(model, bench.source_for(variant, clips, labels), cfg.batch_size, pooling="last")
    counts = torch.zeros(cfg.spec.num_classes, cfg.spec.num_classes, dtype=torch.long)
    for _, scores, target in items:
        counts[int(target["label"]), int(scores["label"].argmax())] += 1
    return counts


def confused_pairs(counts: torch.Tensor) -> str:
    pairs = [(int(counts[t, p]), t, p) for t in range(len(counts)) for p in range(len(counts)) if t != p and counts[t, p]]
    return ", ".join(f"{class_name(t).split()[0]}->{class_name(p).split()[0]}: {n}" for n, t, p in sorted(pairs, reverse=True)) or "none"


def loss_curve(log_path: str, parts: int = 8) -> list[float]:
    """Mean training loss over each of ``parts`` equal spans of the updates (memory-only steps left out)."""
    with open(log_path, encoding="utf-8") as f:
        losses = [r["loss"] for r in map(json.loads, f) if "loss" in r and r["loss"] == r["loss"]]
    span = max(1, len(losses) // parts)
    return [sum(losses[i : i + span]) / len(losses[i : i + span]) for i in range(0, len(losses), span)][:parts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="m2,m4")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--linear-init", default="fan_in", choices=("fan_in", "vit"))
    parser.add_argument("--out", default=None, help="folder of the training logs (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = [dataclasses.replace(parse_row(r), linear_init=args.linear_init) for r in args.rows.split(",")]
    out = args.out or tempfile.mkdtemp(prefix="recall_seeds_")
    base = bench.BenchConfig(variants=tuple(variants), lmm_rows=())
    within_d = ", ".join(map(str, base.distances))
    print(f"rows trained as in `longvid bench` (linear init {args.linear_init}); accuracy (%) at d = {within_d} | d = 0")
    for seed in map(int, args.seeds.split(",")):
        cfg = dataclasses.replace(base, seed=seed)
        data = bench.RunData.generate(cfg)
        at_zero = bench.eval_data(cfg, 0)
        for variant in variants:
            row, model = bench.run_variant(cfg, variant, data, out)
            accuracy = " / ".join(f"{a:5.1f}" for a in row["accuracy"].values())
            zero = confusion(model, variant, *at_zero, cfg)
            within = sum((confusion(model, variant, *data.evals[d], cfg) for d in cfg.distances if d <= variant.reach), torch.zeros_like(zero))
            curve = loss_curve(os.path.join(out, "runs", f"seed{seed}", bench._slug(variant.name), "log.jsonl"))
            check = bench.reach_check(row, 100.0 / cfg.spec.num_classes)
            print(f"seed {seed} {variant.name:<16} {accuracy} | {100.0 * zero.diag().sum() / zero.sum():5.1f}  "
                  f"rule: {'holds' if not check else '; '.join(check)}; CPU s train {row['cpu_seconds']['train']:.1f}\n"
                  f"    confused at d=0: {confused_pairs(zero)}; within reach: {confused_pairs(within)}\n"
                  f"    loss by eighths: {' '.join(f'{x:.2f}' for x in curve)}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
