"""CPU seconds per clip at steady state: MViT-16 vs MeMViT-16.

Batch 1, 16x224x224, eval, ``torch.inference_mode()``, 2 threads (default). Each model
first runs ``cache_len + 1`` clips so its memory is full (steady state); then the models
are timed in alternating rounds (one clip each per round) so that load changes on a
shared machine hit both alike. Prints per clip the wall time (min and median: other
processes only ever add time, so the min is the least disturbed figure) and the
process CPU time (median), and the memory's overhead from each.

    python benchmarks/memvit_speed.py [--rounds 5] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from longvid.models.memvit import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["mvit16_16x4", "memvit16_16x4"])
    parser.add_argument("--rounds", type=int, default=5, help="timed clips per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    runs = {}
    for name in args.presets:
        model = build_model(name, num_frames=args.frames, crop_size=args.size).eval()
        state = model.init_state(1)
        clip = torch.randn(1, 3, args.frames, args.size, args.size)
        warmup = (model.memory_spec.cache_len if model.memory_spec else 0) + 1
        with torch.inference_mode():
            for _ in range(warmup):
                _, state = model(clip, state)
        runs[name] = {"model": model, "state": state, "clip": clip, "wall": [], "cpu": []}

    with torch.inference_mode():
        for _ in range(args.rounds):
            for name, run in runs.items():
                wall, cpu = time.perf_counter(), time.process_time()
                _, run["state"] = run["model"](run["clip"], run["state"])
                run["wall"].append(time.perf_counter() - wall)
                run["cpu"].append(time.process_time() - cpu)

    results = {
        name: {
            "wall_min_s": min(r["wall"]),
            "wall_median_s": statistics.median(r["wall"]),
            "cpu_median_s": statistics.median(r["cpu"]),
            "wall_s": r["wall"],
            "cpu_s": r["cpu"],
        }
        for name, r in runs.items()
    }
    base, mem = args.presets[0], args.presets[-1]
    overhead = {}
    if len(args.presets) > 1:
        overhead = {key: results[mem][key] / results[base][key] - 1 for key in ("wall_min_s", "wall_median_s", "cpu_median_s")}
    if args.json:
        print(json.dumps({"threads": args.threads, "clip": [args.frames, args.size, args.size], "results": results, "memory_overhead": overhead}))
        return
    print(f"CPU, {args.threads} threads, batch 1, {args.frames}x{args.size}x{args.size}, eval, steady state, {args.rounds} rounds")
    for name, r in results.items():
        print(f"{name:<16} wall min {r['wall_min_s']:.3f}  median {r['wall_median_s']:.3f} s/clip   CPU median {r['cpu_median_s']:.3f} s/clip")
    if overhead:
        shown = ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {100 * v:+.1f}%" for k, v in overhead.items())
        print(f"memory overhead ({mem} vs {base}): {shown}")


if __name__ == "__main__":
    main()
