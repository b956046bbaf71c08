"""CPU seconds per clip at steady state: MViT-16 vs MeMViT-16, against the GEMM roofline.

Batch 1, 16x224x224, eval, ``torch.inference_mode()``, 2 threads (default). The same run
measures the machine's GEMM throughput (fp32 and bf16 2048^3 matmuls, same thread count;
once before the models and once per round, keeping the best) and prints each model's
achieved GFLOP/s (2 x its multiply-adds per clip from ``longvid.memvit.flops``, over the min wall
time) as a fraction of it. Each model first runs
``cache_len + 1`` clips so its memory is full (steady state); then the models are timed in
alternating rounds (one clip each per round, a fresh random clip per round) so that load
changes on a shared machine hit all alike. Prints per clip the wall time (min and median:
other processes only ever add time, so the min is the least disturbed figure) and the
process CPU time (median), and the memory's overhead from each.

``--dtype bfloat16`` runs each model twice, as an fp32 stream and a bf16 stream (its own
memory state) on the same clips, and prints the speedup and the agreement with fp32 over
every clip run (top-1 agreement, max |prob diff|). The bf16 stream is what
``longvid stream --dtype bfloat16`` runs (``--bf16 weights``: ``longvid.precision.for_inference``,
weights and memory in bf16, final norm and head float32) or, with ``--bf16 autocast``, the
fp32 model under ``torch.autocast("cpu", dtype=torch.bfloat16)``.

    python benchmarks/memvit_speed.py [--rounds 5] [--threads 2] [--dtype float32|bfloat16] [--bf16 weights|autocast] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import time

import torch

from longvid.precision import cpu_bf16_support
from longvid.bench import roofline
from longvid.memvit.flops import model_cost
from longvid.memvit import build_model
from longvid.precision import for_inference


def precision(dtype: str, mode: str):
    """Context for one stream's forward: bf16 autocast on CPU (``--bf16 autocast``), or nothing."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16" and mode == "autocast" else contextlib.nullcontext()


def agreement(probs: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """Top-1 agreement and max |prob diff| of (fp32, other) probability pairs, each (B, classes)."""
    same = [bool((a.argmax(-1) == b.argmax(-1)).all()) for a, b in probs]
    return {"clips": len(probs), "top1_agreement": sum(same) / len(same), "max_abs_prob_diff": max(float((a - b).abs().max()) for a, b in probs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["mvit16_16x4", "memvit16_16x4"])
    parser.add_argument("--rounds", type=int, default=5, help="timed clips per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="bfloat16: also time a bf16-autocast stream per model and compare it with fp32")
    parser.add_argument("--bf16", choices=["weights", "autocast"], default="weights", help="how the bf16 stream runs (default weights: as --dtype bfloat16 of longvid stream)")
    parser.add_argument("--gemm-n", type=int, default=2048, help="matmul size of the roofline (default 2048)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and clips (default 0)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    native_bf16, bf16_reason = cpu_bf16_support()
    if args.dtype == "bfloat16" and not args.json:
        print(f"bf16 ({args.bf16}): {'native' if native_bf16 else 'NOT native on this CPU: bf16 runs emulated and slow'} ({bf16_reason})")
    rates = roofline.gemm_roofline(args.gemm_n)
    dtypes = ["float32"] + (["bfloat16"] if args.dtype == "bfloat16" else [])

    runs = {}
    for name in args.presets:
        model = build_model(name, num_frames=args.frames, crop_size=args.size).eval()
        gflops = model_cost(name, clip_frames=args.frames, size=args.size).gflops  # G multiply-adds per clip
        for dtype in dtypes:
            bf16_weights = dtype == "bfloat16" and args.bf16 == "weights"
            stream_model = for_inference(copy.deepcopy(model), torch.bfloat16) if bf16_weights else model
            runs[(name, dtype)] = {"model": stream_model, "gflops": gflops, "state": stream_model.init_state(1), "wall": [], "cpu": [], "probs": []}
    warmup = max((r["model"].memory_spec.cache_len if r["model"].memory_spec else 0) for r in runs.values()) + 1
    with torch.inference_mode():
        for step in range(warmup + args.rounds):
            clip = torch.randn(1, 3, args.frames, args.size, args.size)
            for (name, dtype), run in runs.items():
                wall, cpu = time.perf_counter(), time.process_time()
                with precision(dtype, args.bf16):
                    logits, run["state"] = run["model"](clip, run["state"])
                if step >= warmup:
                    run["wall"].append(time.perf_counter() - wall)
                    run["cpu"].append(time.process_time() - cpu)
                run["probs"].append(logits.float().softmax(-1))
            if step >= warmup:  # GEMM timings interleaved with the rounds: a load burst hits both
                rates = roofline.faster(rates, roofline.gemm_roofline(args.gemm_n, repeats=1))

    results = {}
    for (name, dtype), r in runs.items():
        achieved = roofline.achieved_gflops_per_s(r["gflops"], min(r["wall"]))
        results[f"{name}/{dtype}"] = {
            "preset": name,
            "dtype": dtype,
            "wall_min_s": min(r["wall"]),
            "wall_median_s": statistics.median(r["wall"]),
            "cpu_median_s": statistics.median(r["cpu"]),
            "gmacs_per_clip": r["gflops"],
            "achieved_gflops_per_s": achieved,
            "roofline_fraction": {d: roofline.roofline_fraction(achieved, rate) for d, rate in rates.items()},
            "wall_s": r["wall"],
            "cpu_s": r["cpu"],
        }
    base, mem = args.presets[0], args.presets[-1]
    overhead = {}
    if len(args.presets) > 1:
        b, m = results[f"{base}/float32"], results[f"{mem}/float32"]
        overhead = {key: m[key] / b[key] - 1 for key in ("wall_min_s", "wall_median_s", "cpu_median_s")}
    compare = {}
    if args.dtype == "bfloat16":
        for name in args.presets:
            pairs = list(zip(runs[(name, "float32")]["probs"], runs[(name, "bfloat16")]["probs"]))
            speedup = results[f"{name}/float32"]["wall_min_s"] / results[f"{name}/bfloat16"]["wall_min_s"]
            compare[name] = {"speedup_wall_min": speedup, **agreement(pairs)}
    if args.json:
        print(json.dumps({
            "threads": args.threads, "clip": [args.frames, args.size, args.size], "native_bf16": native_bf16, "bf16_mode": args.bf16,
            "gemm_gflops_per_s": {d: r.gflops_per_s for d, r in rates.items()}, "gemm_n": args.gemm_n,
            "results": results, "memory_overhead": overhead, "bf16_vs_fp32": compare,
        }))  # fmt: skip
        return
    print(f"CPU, {args.threads} threads, batch 1, {args.frames}x{args.size}x{args.size}, eval, steady state, {args.rounds} rounds")
    print(roofline.describe(rates))
    for key, r in results.items():
        fractions = ", ".join(f"{100 * f:.0f}% of {d}" for d, f in r["roofline_fraction"].items())
        print(
            f"{key:<26} wall min {r['wall_min_s']:.3f}  median {r['wall_median_s']:.3f} s/clip   CPU median {r['cpu_median_s']:.3f} s/clip   "
            f"{r['achieved_gflops_per_s']:.0f} GFLOP/s ({2 * r['gmacs_per_clip']:.1f} GFLOP/clip) = {fractions} GEMM"
        )
    if overhead:
        shown = ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {100 * v:+.1f}%" for k, v in overhead.items())
        print(f"memory overhead ({mem} vs {base}, fp32): {shown}")
    for name, c in compare.items():
        print(f"{name} bf16 vs fp32: {c['speedup_wall_min']:.2f}x faster (wall min), top-1 agreement {100 * c['top1_agreement']:.1f}% over {c['clips']} clips, max |prob diff| {c['max_abs_prob_diff']:.2e}")


if __name__ == "__main__":
    main()
