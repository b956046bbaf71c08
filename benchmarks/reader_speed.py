"""Decoding throughput of ClipReader against a bare PyAV decode loop over the same file.

    python benchmarks/reader_speed.py [VIDEO] [--seconds 120] [--repeats 3]

Without VIDEO, writes a generated 160x120, 30 fps video of ``--seconds`` seconds.
Prints frames decoded per second for:
  bare decode          for frame in container.decode(stream): pass
  bare decode + RGB    ... frame.to_ndarray(format="rgb24") for every frame
  bare decode + RGB(r) ... the same conversion through one reused VideoReformatter
  bare decode -> clips ... and stacked into (C, T, H, W) uint8 tensors of 16 frames
  reader, uint8 frames ClipReader(stride=1, no resize/crop/normalize, dtype=uint8): every frame, (C, T, H, W) uint8
  reader, raw frames   the same as float32 in [0, 1]
  reader, 16x4 @224    ClipReader defaults (MeMViT input: every 4th frame, resize, crop, normalize)
  reader, 16x4 bg      the same with the background decode thread
Each figure is the best of ``--repeats`` runs (decode threads: FFmpeg's choice in all rows).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import av
import torch
from av.video.reformatter import VideoReformatter

from longvid.data.synth import write_demo_video
from longvid.video import ClipReader, probe


def bare_decode(path: str, to_rgb: str | None, clip_frames: int = 16) -> int:
    """Decode every frame; ``to_rgb``: None, "ndarray" (frame.to_ndarray(format="rgb24")),
    "reformatter" (one reused VideoReformatter, as the reader does), or "clips" (that,
    then every ``clip_frames`` frames a (C, T, H, W) uint8 tensor: the reader's output)."""
    count = 0
    reformatter = VideoReformatter()
    frames = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if to_rgb == "ndarray":
                frame.to_ndarray(format="rgb24")
            elif to_rgb == "reformatter":
                reformatter.reformat(frame, format="rgb24").to_ndarray()
            elif to_rgb == "clips":
                frames.append(torch.from_numpy(reformatter.reformat(frame, format="rgb24").to_ndarray()))
                if len(frames) == clip_frames:
                    torch.stack(frames).permute(3, 0, 1, 2).contiguous()
                    frames = []
            count += 1
    return count


def reader_decode(path: str, **kwargs) -> int:
    reader = ClipReader(path, **kwargs)
    for _ in reader:
        pass
    return reader.info.num_frames


def best_rate(fn, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        frames = fn()
        rates.append(frames / (time.perf_counter() - start))
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        path = args.video
        if path is None:
            path = os.path.join(folder, "bench.mp4")
            write_demo_video(path, seconds=args.seconds, width=160, height=120)
        info = probe(path)
        print(f"{path}: {info.num_frames} frames, {info.width}x{info.height}, {info.codec}, {info.duration:.1f} s")
        raw = dict(stride=1, clip_frames=16, short_side=None, crop=None, mean=None, std=None)
        uint8 = dict(raw, dtype=torch.uint8)
        rows = [
            ("bare decode", lambda: bare_decode(path, None)),
            ("bare decode + RGB", lambda: bare_decode(path, "ndarray")),
            ("bare decode + RGB(r)", lambda: bare_decode(path, "reformatter")),
            ("bare decode -> clips", lambda: bare_decode(path, "clips")),
            ("reader, uint8 frames", lambda: reader_decode(path, **uint8)),
            ("reader, raw frames", lambda: reader_decode(path, **raw)),
            ("reader, 16x4 @224", lambda: reader_decode(path)),
            ("reader, 16x4 @224 bg", lambda: reader_decode(path, background=True)),
        ]
        rates = {name: best_rate(fn, args.repeats) for name, fn in rows}
    base = {"reader, uint8 frames": "bare decode -> clips", "reader, raw frames": "bare decode + RGB(r)", "reader, 16x4 @224": "bare decode", "reader, 16x4 @224 bg": "bare decode"}
    print(f"{'loop':<22} {'frames/s':>10}  vs")
    for name, rate in rates.items():
        versus = f"{rate / rates[base[name]]:.2f}x of {base[name]}" if name in base else ""
        print(f"{name:<22} {rate:>10.0f}  {versus}")


if __name__ == "__main__":
    main()
