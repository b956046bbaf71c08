"""`longvid stream` at scale: bounded memory over long videos, and decode/compute overlap.

    python benchmarks/stream_speed.py [--minutes 2 60] [--overlap-minutes 10 | --overlap-video FILE]
        [--preset memvit_tiny] [--splits 1x1 1x2 2x1 0x2] [--prefetch 1 2 4] [--repeats 3] [--keep DIR]

Memory: for each generated 160x120 30 fps ``--minutes`` video, a fresh process streams
it (``run_stream``, the default thread split) and reports its peak RSS and clips/s
(``--minutes`` with no value skips this part).

Overlap: on the ``--overlap-minutes`` generated video (or ``--overlap-video``), one fresh
process per thread split ``DxT`` (D FFmpeg decoding threads, 0 = FFmpeg's choice; T
torch intra-op threads) and prefetch depth measures, over the same clips,
decode-only, model-only and pipelined walls, interleaved ``--repeats`` times (best of
each kept; see :mod:`longvid.bench.stream_overlap`). Each row prints the three walls,
pipelined / max(decode-only, model-only) for that split, and the CPU seconds (the
decoding processes included). Decoding runs in a child process (the stream's default);
a last row decodes in a thread of the model's process instead (the pipeline before),
at the fastest split. Target: pipelined <= 1.15 x max(decode, model). The fastest
split is the one to make the default (:func:`longvid.core.stream_input.default_split`; the
last line prints the default on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from longvid.bench.stream_overlap import MODES
from longvid.data.synth import write_demo_video


def worker(video: str, preset: str, decode_threads: int, torch_threads: int, prefetch: int, repeats: int, background: str) -> dict:
    """One split in this (fresh) process (see longvid.bench.stream_overlap)."""
    import torch

    torch.set_num_threads(torch_threads)
    import longvid
    from longvid.bench.stream_overlap import measure_overlap
    from longvid.predict import settings_for

    torch.manual_seed(0)
    model = longvid.build_model(preset).eval()
    settings = settings_for(model, background=background, decode_threads=decode_threads, prefetch=prefetch)
    return measure_overlap(model, video, settings, repeats)


def run_worker(video: str, preset: str, split: tuple[int, int], prefetch: int, repeats: int, background: str) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", video, preset, str(split[0]), str(split[1]), str(prefetch),
               str(repeats), background]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"worker failed ({' '.join(command)}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


MEMORY_PROBE = r"""
import json, os, resource, sys, tempfile
import longvid
from longvid.predict import run_stream
from longvid.predict import settings_for
from longvid.core.stream_input import apply_split, model_work

model = longvid.build_model(sys.argv[2]).eval()
settings = settings_for(model)
apply_split(model_work(model, settings.clip_frames, settings.size))
with tempfile.TemporaryDirectory() as folder:
    summary = run_stream(model, [sys.argv[1]], out=os.path.join(folder, "out.jsonl"), settings=settings, progress=False)
print(json.dumps({"clips": summary.clips, "seconds": summary.seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def memory_rows(videos: dict[float, str], preset: str) -> None:
    print(f"{'video':>8} {'clips':>6} {'peak RSS MiB':>13} {'wall s':>8} {'clips/s':>8}")
    peaks = {}
    for minutes, path in videos.items():
        out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, path, preset], capture_output=True, text=True, check=True)
        run = json.loads(out.stdout.strip().splitlines()[-1])
        peaks[minutes] = run["peak_mib"]
        print(f"{minutes:>6g}min {run['clips']:>6} {run['peak_mib']:>13.1f} {run['seconds']:>8.1f} {run['clips'] / run['seconds']:>8.1f}")
    if len(peaks) > 1:
        longest, shortest = max(peaks), min(peaks)
        print(f"peak RSS ratio {longest:g} min / {shortest:g} min: {peaks[longest] / peaks[shortest]:.3f}")


def parse_split(text: str) -> tuple[int, int]:
    try:
        decode, model = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a split is DxT (decode threads x torch threads), got {text!r}") from None
    if decode < 0 or model < 1:
        raise argparse.ArgumentTypeError(f"need D >= 0 and T >= 1, got {text!r}")
    return decode, model


def overlap_table(video: str, preset: str, splits, prefetches, repeats: int, compare_thread: bool) -> None:
    import longvid
    from longvid.predict import settings_for
    from longvid.core.stream_input import available_cores, default_split, model_work

    model = longvid.build_model(preset)
    settings = settings_for(model)
    default = default_split(work=model_work(model, settings.clip_frames, settings.size))
    print(f"overlap: {preset} on {video}; {available_cores()} cores; best of {repeats} interleaved repeats; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'decoder':>7} {'split DxT':>9} {'prefetch':>8} {'clips':>6} {'decode s':>9} {'model s':>8} {'pipelined s':>12} {'ratio':>6} "
          f"{'cpu dec/model/pipe s':>21}  outputs")
    rows = []
    configs = [(split, prefetches[0], "process") for split in splits]
    later = [(None, p, "process") for p in prefetches[1:]] + ([(None, None, "thread")] if compare_thread else [])
    for split, prefetch, background in configs + later:
        if split is None:  # the other prefetch depths, and the thread decoder, at the best process split so far
            best = min(rows, key=lambda row: row[2]["modes"]["pipelined"]["wall"])
            split, prefetch = best[0], prefetch or best[1]
        result = run_worker(video, preset, split, prefetch, repeats, background)
        if background == "process":
            rows.append((split, prefetch, result))
        modes = result["modes"]
        cpus = "/".join(f"{modes[m]['cpu']:.1f}" for m in MODES)
        print(f"{background:>7} {split[0]:>5}x{split[1]:<3} {prefetch:>8} {modes['pipelined']['clips']:>6} {modes['decode']['wall']:>9.2f} "
              f"{modes['model']['wall']:>8.2f} {modes['pipelined']['wall']:>12.2f} {result['ratio']:>6.2f} "
              f"{cpus:>21}  {'identical' if result['identical'] else 'DIFFER'}", flush=True)
    split, prefetch, best = min(rows, key=lambda row: row[2]["modes"]["pipelined"]["wall"])
    fastest = {m: min(row[2]["modes"][m]["wall"] for row in rows) for m in ("decode", "model")}
    print(f"fastest pipelined (process decoder): split {split[0]}x{split[1]}, prefetch {prefetch}: {best['modes']['pipelined']['wall']:.2f} s = "
          f"{best['modes']['pipelined']['wall'] / max(fastest.values()):.2f} x max(fastest decode-only {fastest['decode']:.2f}, "
          f"fastest model-only {fastest['model']:.2f}) over all rows")
    print(f"default split on this machine: {default.decode_threads}x{default.torch_threads}, prefetch {default.prefetch} "
          f"(longvid.core.stream_input.default_split)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        video, preset, decode, model, prefetch, repeats, background = sys.argv[2:9]
        print(json.dumps(worker(video, preset, int(decode), int(model), int(prefetch), int(repeats), background)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="*", default=[2, 60], help="memory part: video lengths (none: skip)")
    parser.add_argument("--preset", default="memvit_tiny")
    parser.add_argument("--overlap-minutes", type=float, default=10, help="overlap part: generated video length (0: skip)")
    parser.add_argument("--overlap-video", default=None, help="overlap part on this video instead of a generated one")
    parser.add_argument("--splits", type=parse_split, nargs="+", default=[(1, 1), (1, 2), (2, 1), (0, 2)],
                        help="decode threads x torch threads to time (default 1x1 1x2 2x1 0x2)")
    parser.add_argument("--prefetch", type=int, nargs="+", default=[2, 1, 4],
                        help="queue depths: the first for every split, the others at the fastest split (default 2 1 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-thread", action="store_true", help="skip the comparison row with decoding in a thread (the old pipeline)")
    parser.add_argument("--keep", help="write/reuse the generated videos here (default: a temporary folder)")
    args = parser.parse_args()
    if args.overlap_video is not None and not os.path.isfile(args.overlap_video):
        parser.error(f"{args.overlap_video}: no such video")
    if min(args.prefetch) < 1 or args.repeats < 1:
        parser.error("--prefetch and --repeats must be >= 1")
    folder = args.keep or tempfile.mkdtemp(prefix="longvid-stream-")
    os.makedirs(folder, exist_ok=True)
    lengths = set(args.minutes) | ({args.overlap_minutes} if args.overlap_video is None and args.overlap_minutes > 0 else set())
    videos = {}
    for minutes in sorted(lengths):
        path = os.path.join(folder, f"{minutes:g}min_160x120.mp4")
        if not os.path.exists(path):
            write_demo_video(path, seconds=minutes * 60, width=160, height=120)
        videos[minutes] = path
    try:
        if args.minutes:
            print(f"memory: preset {args.preset}, default thread split, 160x120 30 fps videos, 16x4 clips")
            memory_rows({m: videos[m] for m in args.minutes}, args.preset)
        overlap = args.overlap_video or videos.get(args.overlap_minutes)
        if overlap is not None:
            overlap_table(overlap, args.preset, args.splits, args.prefetch, args.repeats, not args.no_thread)
    finally:
        if not args.keep:
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
