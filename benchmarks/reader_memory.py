"""Peak memory of streaming a long video through ClipReader: 60 minutes vs 2 minutes.

    python benchmarks/reader_memory.py [--minutes 2 60] [--width 160 --height 120] [--keep DIR]

Writes generated 30 fps videos of each length, then streams each one through
``ClipReader`` (MeMViT defaults: 16x4 clips, 224x224, background decoding) in a fresh
process and prints that process's peak RSS. Bounded memory means the figures match.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from longvid.bench.synth import write_demo_video

STREAM = """
import resource, sys, time
import torch
torch.set_num_threads(2)
from longvid.video import ClipReader
start = time.perf_counter()
clips = 0
for clip in ClipReader(sys.argv[1], background=True):
    clips += 1
print(clips, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - start)
"""


def stream_peak(path: str) -> tuple[int, float, float]:
    """(clips, peak RSS in MiB, seconds) of a fresh process streaming ``path``."""
    out = subprocess.run([sys.executable, "-c", STREAM, path], capture_output=True, text=True, check=True)
    clips, peak_kib, seconds = out.stdout.split()
    return int(clips), int(peak_kib) / 1024, float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[2, 60])
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--keep", help="write the videos here (default: a temporary folder)")
    args = parser.parse_args()
    folder = args.keep or tempfile.mkdtemp(prefix="longvid-reader-memory-")
    os.makedirs(folder, exist_ok=True)
    rows = []
    for minutes in args.minutes:
        path = os.path.join(folder, f"{minutes:g}min_{args.width}x{args.height}.mp4")
        if not os.path.exists(path):
            start = time.perf_counter()
            write_demo_video(path, seconds=minutes * 60, width=args.width, height=args.height)
            print(f"wrote {path} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        clips, peak, seconds = stream_peak(path)
        rows.append((minutes, clips, peak, seconds))
    print(f"{'video':>8} {'clips':>6} {'peak RSS MiB':>13} {'stream s':>9} {'clips/s':>8}")
    for minutes, clips, peak, seconds in rows:
        print(f"{minutes:>6g}min {clips:>6} {peak:>13.1f} {seconds:>9.1f} {clips / seconds:>8.1f}")
    if len(rows) > 1:
        print(f"peak RSS ratio {rows[-1][0]:g} min / {rows[0][0]:g} min: {rows[-1][2] / rows[0][2]:.3f}")
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
