"""`longvid stream` at scale: bounded memory over long videos, and decode/compute overlap.

    python benchmarks/stream_speed.py [--minutes 2 60] [--overlap-minutes 10] [--preset memvit_tiny] [--threads 1] [--keep DIR]

For each generated 160x120 30 fps video, a fresh process streams it with
``run_stream`` (background decoding, 16x4 clips at the preset's crop size) and reports
its peak RSS and clips/s. On an ``--overlap-minutes`` video it also times, over the
same clips (best of ``--repeats`` fresh processes each): decode-only (iterate the
reader), model-only (the model over pre-decoded clips, memory carried), and the
pipelined ``run_stream``; target: pipelined <= 1.15 x max(decode, model). On a 2-core
machine give the model one thread (``--threads 1``) so decoding has the other core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from longvid.bench.synth import write_demo_video

PROBE = r"""
import json, os, resource, sys, time, tempfile
import torch
torch.set_num_threads(int(sys.argv[3]))
import longvid
from longvid.predict import run_stream, settings_for
from longvid.video import ClipReader

mode, video = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = longvid.build_model(sys.argv[4]).eval()
settings = settings_for(model, background=True)
start = time.perf_counter()
clips = 0
if mode == "pipelined":
    with tempfile.TemporaryDirectory() as folder:
        clips = run_stream(model, [video], out=os.path.join(folder, "out.jsonl"), settings=settings, progress=False).clips
elif mode == "decode":
    for clip in ClipReader(video, clip_frames=settings.clip_frames, stride=settings.stride, short_side=settings.size, crop=settings.size):
        clips += 1
elif mode == "model":
    frames = [c.frames for c in ClipReader(video, clip_frames=settings.clip_frames, stride=settings.stride, short_side=settings.size, crop=settings.size)]
    start = time.perf_counter()
    state = model.init_state(1)
    with torch.inference_mode():
        for clip in frames:
            _, state = model(clip[None], state)
            clips += 1
seconds = time.perf_counter() - start
print(json.dumps({"clips": clips, "seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def probe(mode: str, video: str, threads: int, preset: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode, video, str(threads), preset], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[2, 60])
    parser.add_argument("--preset", default="memvit_tiny")
    parser.add_argument("--overlap-minutes", type=float, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", help="write/reuse the videos here (default: a temporary folder)")
    args = parser.parse_args()
    folder = args.keep or tempfile.mkdtemp(prefix="longvid-stream-")
    os.makedirs(folder, exist_ok=True)
    videos = {}
    for minutes in sorted(set(args.minutes) | {args.overlap_minutes}):
        path = os.path.join(folder, f"{minutes:g}min_160x120.mp4")
        if not os.path.exists(path):
            write_demo_video(path, seconds=minutes * 60, width=160, height=120)
        videos[minutes] = path
    print(f"preset {args.preset}, torch threads {args.threads}, 160x120 30 fps videos, 16x4 clips")
    print(f"{'video':>8} {'clips':>6} {'peak RSS MiB':>13} {'wall s':>8} {'clips/s':>8}")
    peaks = {}
    for minutes in args.minutes:
        path = videos[minutes]
        run = probe("pipelined", path, args.threads, args.preset)
        peaks[minutes] = run["peak_mib"]
        print(f"{minutes:>6g}min {run['clips']:>6} {run['peak_mib']:>13.1f} {run['seconds']:>8.1f} {run['clips'] / run['seconds']:>8.1f}")
    if len(peaks) > 1:
        longest, shortest = max(peaks), min(peaks)
        print(f"peak RSS ratio {longest:g} min / {shortest:g} min: {peaks[longest] / peaks[shortest]:.3f}")
    overlap = videos[args.overlap_minutes]
    timings = {
        mode: min(probe(mode, overlap, args.threads, args.preset)["seconds"] for _ in range(args.repeats))
        for mode in ("decode", "model", "pipelined")
    }
    bound = max(timings["decode"], timings["model"])
    print(f"on the {args.overlap_minutes:g}-minute video: decode-only {timings['decode']:.2f} s, model-only {timings['model']:.2f} s, "
          f"pipelined {timings['pipelined']:.2f} s = {timings['pipelined'] / bound:.2f} x max(decode, model)")
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
