"""Training speed of a small MeMViT preset on CPU, with and without memory.

Prints clips/s (steady state, after warm-up steps) and the process's peak
resident memory for ``memvit_tiny`` (memory_len 2) and ``mvit_tiny`` (no memory),
trained by the engine on generated clips. Each configuration runs in its own
subprocess so peak memory is not shared. The same run measures the machine's GEMM
throughput (fp32 and bf16 2048^3 matmuls, same thread count) and prints each model's
achieved GFLOP/s as a fraction of it; a training step is counted as 3x the forward
multiply-adds of ``longvid.memvit.flops`` (backward ~ 2x forward), 2 FLOPs each.

``--dtype float32 bfloat16`` trains each model once per dtype (bfloat16: the engine's
``amp=bf16``, bf16 autocast on CPU, float32 weights and optimizer), same seed and clips,
and prints the loss of every step of each (the loss curves) and their largest difference.

    python benchmarks/train_speed.py [--steps 12] [--batch 4] [--frames 8] [--size 64] [--threads 1] [--dtype float32 bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

TRAIN_STEP_FACTOR = 3  # forward + backward (grads of inputs and weights) ~ 3x forward


def measure(model: str, dtype: str, args: argparse.Namespace) -> dict:
    """Run ``args.warmup + args.steps`` training steps of ``model`` in ``dtype``; clips/s over the last ``steps``."""
    import torch

    import longvid
    from longvid.memvit.flops import model_cost
    from longvid.core.seeding import seed_everything
    from longvid.memvit.loop import Trainer
    from longvid.memvit.run_config import MeMViTRunConfig
    from longvid.memvit.data import synthetic_source

    torch.set_num_threads(args.threads)
    total = args.warmup + args.steps
    cfg = MeMViTRunConfig(
        model=model, num_classes=10, clip_frames=args.frames, size=args.size, synthetic_videos=args.batch,
        synthetic_clips=total, batch_size=args.batch, epochs=1, max_steps=total, eval_every=0, log_every=10**9,
        checkpoint_every=10**9, out_dir=tempfile.mkdtemp(prefix="longvid-speed-"), amp="bf16" if dtype == "bfloat16" else "off",
    )  # fmt: skip
    seed_everything(0)
    net = longvid.build_model(model, num_classes=10, num_frames=args.frames, crop_size=args.size)
    history = Trainer(net, cfg, synthetic_source(cfg, 0), log=None).fit()
    steady = history[args.warmup :]
    seconds = sum(args.batch / r["clips_per_s"] for r in steady)
    gmacs = model_cost(model, clip_frames=args.frames, size=args.size, num_classes=10).gflops
    return {
        "model": model,
        "dtype": dtype,
        "losses": [r["loss"] for r in history],
        "train_gmacs_per_clip": TRAIN_STEP_FACTOR * gmacs,
        "memory_len": net.config.memory_len,
        "clips_per_s": len(steady) * args.batch / seconds,
        "peak_rss_mb": max(r["peak_mem_mb"] for r in history),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps (default 12)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (default 3)")
    parser.add_argument("--batch", type=int, default=4, help="streams per step (default 4)")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    parser.add_argument("--size", type=int, default=64, help="crop size (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--gemm-n", type=int, default=2048, help="matmul size of the roofline (default 2048)")
    parser.add_argument("--dtype", nargs="+", choices=["float32", "bfloat16"], default=["float32"], help="train in these (bfloat16: amp=bf16)")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: measure one model in one dtype, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args)))
        return
    print(f"training on CPU, batch {args.batch} x clip (3, {args.frames}, {args.size}, {args.size}), "
          f"{args.threads} thread(s), {args.steps} timed steps after {args.warmup}")  # fmt: skip
    import torch

    from longvid.bench import roofline

    torch.set_num_threads(args.threads)
    rates = roofline.gemm_roofline(args.gemm_n)
    print(roofline.describe(rates))
    print(f"{'model':<14}{'dtype':>10}{'memory':>8}{'clips/s':>10}{'peak RSS MB':>14}{'GFLOP/s':>10}{'% fp32 GEMM':>13}{'% bf16 GEMM':>13}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    curves = []
    for model in ("memvit_tiny", "mvit_tiny"):
        for dtype in args.dtype:
            cmd = [sys.executable, os.path.abspath(__file__), "--one", model, dtype] + sys.argv[1:]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=root))
            r = json.loads(out.stdout.strip().splitlines()[-1])
            achieved = roofline.achieved_gflops_per_s(r["train_gmacs_per_clip"] * r["clips_per_s"], 1.0)
            fractions = [100 * roofline.roofline_fraction(achieved, rates[d]) for d in ("float32", "bfloat16")]
            print(f"{r['model']:<14}{dtype:>10}{('M=' + str(r['memory_len'])):>8}{r['clips_per_s']:>10.1f}{r['peak_rss_mb']:>14.0f}{achieved:>10.1f}{fractions[0]:>12.1f}%{fractions[1]:>12.1f}%")
            curves.append(r)
    if len(args.dtype) > 1:
        for r in curves:
            print(f"loss {r['model']} {r['dtype']}: " + " ".join(f"{x:.3f}" for x in r["losses"]))
        for model in ("memvit_tiny", "mvit_tiny"):
            pair = [r["losses"] for r in curves if r["model"] == model]
            gaps = [abs(a - b) for a, b in zip(*pair[:2]) if a == a and b == b]
            print(f"{model}: largest |loss difference| {args.dtype[0]} vs {args.dtype[1]} over {len(gaps)} steps {max(gaps):.4f}")


if __name__ == "__main__":
    main()
