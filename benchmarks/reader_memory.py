"""Peak memory of streaming videos through ClipReader: long videos, and 4K frames.

    python benchmarks/reader_memory.py [--minutes 2 60] [--width 160 --height 120] [-T 16 --tau 4] [--keep DIR]
    python benchmarks/reader_memory.py --4k [--keep DIR]

Writes generated 30 fps videos of each length, then streams each one through
``ClipReader`` (16x4 clips, 224x224, background decoding, by default) in a fresh process
and prints that process's peak RSS, and the RSS of a process that only imports the
reader (the floor). Bounded memory means the figures match across lengths.

``--4k`` streams a 3-second 3840x2160 video as T=64 clips of every frame (the reader
resizes each frame as it is decoded, so it never holds 64 full-size frames, which
would take ~1.5 GiB): the peak RSS should stay under 600 MiB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from longvid.data.synth import moving_shapes, write_demo_video
from longvid.video import write_video

# Peak RSS from /proc (VmHWM): getrusage's ru_maxrss would include the parent's RSS at the fork.
STREAM = """
import sys, time
import torch
torch.set_num_threads(2)
from longvid.video import ClipReader
def peak_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
if len(sys.argv) == 1:  # the floor: imports only
    print(0, peak_kib(), 0.0)
    sys.exit()
start = time.perf_counter()
clips = 0
for clip in ClipReader(sys.argv[1], clip_frames=int(sys.argv[2]), stride=int(sys.argv[3]), background=True):
    clips += 1
print(clips, peak_kib(), time.perf_counter() - start)
"""

LIMIT_4K_MIB = 600


def stream_peak(*args: str) -> tuple[int, float, float]:
    """(clips, peak RSS in MiB, seconds) of a fresh process streaming a video (no args: imports only)."""
    out = subprocess.run([sys.executable, "-c", STREAM, *args], capture_output=True, text=True, check=True)
    clips, peak_kib, seconds = out.stdout.split()
    return int(clips), int(peak_kib) / 1024, float(seconds)


def write_4k(path: str, seconds: float = 3.0, fps: float = 30.0) -> int:
    """A 3840x2160 video: generated 480x270 moving shapes, each pixel repeated 8x8 (fast to make)."""
    small = moving_shapes(seconds, fps, width=480, height=270)
    return write_video(path, (frame.repeat(8, axis=0).repeat(8, axis=1) for frame in small), fps=fps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[2, 60])
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("-T", "--clip-frames", type=int, default=16)
    parser.add_argument("--tau", type=int, default=4)
    parser.add_argument("--4k", dest="uhd", action="store_true", help="a 3-s 3840x2160 video as T=64 clips of every frame")
    parser.add_argument("--keep", help="write the videos here (default: a temporary folder)")
    args = parser.parse_args()
    if args.uhd:
        args.minutes, args.width, args.height, args.clip_frames, args.tau = [0.05], 3840, 2160, 64, 1
    folder = args.keep or tempfile.mkdtemp(prefix="longvid-reader-memory-")
    os.makedirs(folder, exist_ok=True)
    rows = []
    for minutes in args.minutes:
        path = os.path.join(folder, f"{minutes:g}min_{args.width}x{args.height}.mp4")
        if not os.path.exists(path):
            start = time.perf_counter()
            if args.uhd:
                write_4k(path, seconds=minutes * 60)
            else:
                write_demo_video(path, seconds=minutes * 60, width=args.width, height=args.height)
            print(f"wrote {path} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        clips, peak, seconds = stream_peak(path, str(args.clip_frames), str(args.tau))
        rows.append((minutes, clips, peak, seconds))
    floor = stream_peak()[1]
    print(f"{args.width}x{args.height} video, T={args.clip_frames} tau={args.tau} clips at 224x224, background decoding")
    print(f"{'video':>8} {'clips':>6} {'peak RSS MiB':>13} {'stream s':>9} {'clips/s':>8}")
    for minutes, clips, peak, seconds in rows:
        print(f"{minutes * 60:>7g}s {clips:>6} {peak:>13.1f} {seconds:>9.1f} {clips / seconds:>8.1f}")
    print(f"imports alone: {floor:.1f} MiB")
    if len(rows) > 1:
        print(f"peak RSS ratio {rows[-1][0]:g} min / {rows[0][0]:g} min: {rows[-1][2] / rows[0][2]:.3f}")
    if args.uhd:
        full = args.clip_frames * args.width * args.height * 3 / 2**20
        verdict = "under" if rows[0][2] < LIMIT_4K_MIB else "OVER"
        print(f"4K at T={args.clip_frames}: peak {rows[0][2]:.0f} MiB, {verdict} the {LIMIT_4K_MIB} MiB limit "
              f"(T full-size RGB frames alone would take {full:.0f} MiB)")
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
