"""Does channels-last-3d or torch.compile speed up streaming a MeMViT model on this device?

    python benchmarks/model_options_speed.py [--presets memvit_tiny memvit16_16x4] [--clips 4] [--rounds 3] [--threads N]

For each preset, four copies of one model (eager, ``--channels-last``, ``--compile``, both;
:func:`longvid.core.stream_input.prepare_model`) stream the same random clips with their own
memory, batch 1, in interleaved rounds of ``--clips`` clips after a warm-up that fills
the memory (and compiles). Prints each variant's first-call seconds (compile time),
best and median seconds per clip, its speed against eager, and its largest |logit
difference| from eager over every clip.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import longvid
from longvid.core.stream_input import prepare_model, quiet_compile_logs

VARIANTS = {"eager": {}, "channels-last": {"channels_last": True}, "compile": {"compile": True},
            "compile+channels-last": {"compile": True, "channels_last": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["memvit_tiny", "memvit16_16x4"])
    parser.add_argument("--clips", type=int, default=4, help="clips per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_compile_logs()
    device = torch.device(args.device)
    print(f"{device}, {torch.get_num_threads()} torch thread(s), batch 1, {args.rounds} interleaved rounds of {args.clips} clips")
    for preset in args.presets:
        torch.manual_seed(0)
        base = longvid.build_model(preset).eval().to(device)
        config = base.config
        warmup = base.memory_spec.cache_len + 1
        clips = torch.randn(warmup + args.rounds * args.clips, 1, 3, config.num_frames, config.crop_size, config.crop_size, device=device)
        runs = {}
        for name, options in VARIANTS.items():
            model = prepare_model(copy.deepcopy(base), log=lambda message, name=name: print(f"  {name}: {message}"), **options)
            memory = "channels_last_3d" if options.get("channels_last") else "contiguous_format"
            runs[name] = {"model": model, "state": model.init_state(1, device=device), "format": getattr(torch, memory),
                          "seconds": [], "logits": []}
        with torch.inference_mode():
            for name, run in runs.items():  # warm-up: memory full, compiled
                start = time.perf_counter()
                for index in range(warmup):
                    step(run, clips[index], device)
                run["first"] = time.perf_counter() - start
            for round_ in range(args.rounds):
                for name, run in runs.items():
                    part = clips[warmup + round_ * args.clips: warmup + (round_ + 1) * args.clips]
                    start = time.perf_counter()
                    for clip in part:
                        step(run, clip, device)
                    run["seconds"].append((time.perf_counter() - start) / args.clips)
        eager = runs["eager"]
        print(f"{preset}: {config.num_frames}x{config.crop_size}x{config.crop_size}")
        print(f"  {'variant':<22} {'warm-up s':>9} {'best s/clip':>11} {'median':>8} {'vs eager':>8} {'max |logit diff|':>16}")
        for name, run in runs.items():
            diff = max((a - b).abs().max().item() for a, b in zip(run["logits"], eager["logits"]))
            speed = min(eager["seconds"]) / min(run["seconds"])
            print(f"  {name:<22} {run['first']:>9.2f} {min(run['seconds']):>11.4f} {statistics.median(run['seconds']):>8.4f} "
                  f"{speed:>7.2f}x {diff:>16.2e}", flush=True)


def step(run: dict, clip: torch.Tensor, device: torch.device) -> None:
    logits, run["state"] = run["model"](clip.contiguous(memory_format=run["format"]), run["state"])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    run["logits"].append(logits.float().cpu())


if __name__ == "__main__":
    main()
