"""``longvid stream --dtype bfloat16`` against float32 on a real video, through the CLI.

    python benchmarks/stream_dtype_agreement.py [VIDEO] [--preset memvit16_16x4] [--seeds 0 1 2] [--head-scale 1 30] [--threads 2]

For each seed, a random-weight checkpoint of the preset is written the way the CLI loads
one (``longvid.core.checkpoints.save_checkpoint``: weights + config) after
``torch.manual_seed(seed)``; ``--head-scale S`` (S != 1) also writes a copy whose
classifier weights and bias are multiplied by S, so that predictions are confident
(random weights give near-uniform probabilities over the 400 classes, where top-1
agreement compares near-ties). Then the installed ``longvid`` script streams VIDEO once
per dtype (``--model PRESET --checkpoint CKPT --dtype D --save-scores DIR``), fp32 and
bf16 alternating, and the full per-clip probability vectors are compared over every clip:
top-1 agreement, max |prob diff|, the mean top-1 probability (how confident), and the
wall time of each run (decode + model; best of the runs per dtype).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from longvid.core.checkpoints import save_checkpoint
from longvid.memvit import build_model

DEFAULT_VIDEO = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "malmm_example.mp4")


def write_checkpoint(preset: str, seed: int, head_scale: float, path: str) -> None:
    torch.manual_seed(seed)
    model = build_model(preset)
    if head_scale != 1:
        with torch.no_grad():
            model.head.projection.weight.mul_(head_scale)
            model.head.projection.bias.mul_(head_scale)
    save_checkpoint(model, path)


def stream_scores(video: str, preset: str, checkpoint: str, dtype: str, threads: int, folder: str) -> tuple[np.ndarray, float]:
    """(clips, classes) probabilities written by ``longvid stream --save-scores``, and the run's wall seconds."""
    scores_dir = os.path.join(folder, f"scores-{dtype}")
    script = os.path.join(os.path.dirname(sys.executable), "longvid")
    command = [script, "stream", video, "--model", preset, "--checkpoint", checkpoint, "--dtype", dtype, "--threads", str(threads),
               "--save-scores", scores_dir, "--out", os.path.join(folder, f"{dtype}.jsonl"), "--quiet"]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    (name,) = os.listdir(scores_dir)
    return np.load(os.path.join(scores_dir, name)), seconds


def compare(fp32: np.ndarray, bf16: np.ndarray) -> dict:
    return {
        "clips": int(fp32.shape[0]),
        "top1_agreement": float((fp32.argmax(1) == bf16.argmax(1)).mean()),
        "max_abs_prob_diff": float(np.abs(fp32 - bf16).max()),
        "mean_top1_prob_fp32": float(fp32.max(1).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", nargs="?", default=DEFAULT_VIDEO)
    parser.add_argument("--preset", default="memvit16_16x4")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--head-scale", type=float, nargs="+", default=[1.0, 30.0], help="classifier multipliers (1: as initialized)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not os.path.isfile(args.video):
        raise SystemExit(f"{args.video}: no such video")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:
            for scale in args.head_scale:
                folder = os.path.join(work, f"seed{seed}-x{scale:g}")
                os.makedirs(folder)
                checkpoint = os.path.join(folder, "model.safetensors")
                write_checkpoint(args.preset, seed, scale, checkpoint)
                fp32, fp32_s = stream_scores(args.video, args.preset, checkpoint, "float32", args.threads, folder)
                bf16, bf16_s = stream_scores(args.video, args.preset, checkpoint, "bfloat16", args.threads, folder)
                row = {"seed": seed, "head_scale": scale, **compare(fp32, bf16), "fp32_s": fp32_s, "bf16_s": bf16_s}
                rows.append(row)
                if not args.json:
                    print(f"seed {seed} head x{scale:g}: {row['clips']} clips, top-1 agreement {100 * row['top1_agreement']:.1f}%, "
                          f"max |prob diff| {row['max_abs_prob_diff']:.2e}, mean top-1 prob {row['mean_top1_prob_fp32']:.3f}; "
                          f"stream wall fp32 {fp32_s:.1f} s, bf16 {bf16_s:.1f} s ({fp32_s / bf16_s:.2f}x)", flush=True)
    if args.json:
        print(json.dumps(rows))
        return
    for scale in args.head_scale:
        mine = [r for r in rows if r["head_scale"] == scale]
        print(f"head x{scale:g} over {len(mine)} seeds: top-1 agreement mean {100 * np.mean([r['top1_agreement'] for r in mine]):.1f}% "
              f"worst {100 * min(r['top1_agreement'] for r in mine):.1f}%, max |prob diff| worst {max(r['max_abs_prob_diff'] for r in mine):.2e}")


if __name__ == "__main__":
    main()
