"""``longvid clips VIDEO``: stream a video through the clip reader and print each clip."""

from __future__ import annotations

import argparse
import math
from typing import Callable

from longvid.cli.common import add_clip_options, check_clip_options
from longvid.errors import LongvidError


def cmd_clips(args: argparse.Namespace) -> int:
    from longvid.video import ClipReader

    check_clip_options(args)
    if args.size < 1:
        raise LongvidError(f"--size must be >= 1, got {args.size}")
    if not (math.isfinite(args.start) and args.start >= 0):
        raise LongvidError(f"--start must be a time >= 0 seconds, got {args.start:g}")
    if args.end is not None and not (math.isfinite(args.end) and args.end > args.start):
        raise LongvidError(f"--end must be a time after --start ({args.start:g} s), got {args.end:g}")
    reader = ClipReader(
        args.video,
        clip_frames=args.clip_frames,
        stride=args.tau,
        fps=args.fps,
        tail=args.tail,
        short_side=args.size,
        crop=args.size,
        start=args.start,
        end=args.end,
        background=True,
    )
    clips = 0
    for clip in reader:
        c, t, h, w = clip.frames.shape
        print(
            f"clip {clip.index:4d}  {clip.start:8.3f}-{clip.end:8.3f} s  frames ({c}, {t}, {h}, {w})"
            f"  valid {clip.num_valid:2d}  mean {clip.frames.mean().item():+.3f}"
        )
        clips += 1
    if clips == 0 and args.tail == "drop":
        sampling = f"{args.fps:g} fps" if args.fps else f"tau={args.tau}"
        where = "the video" if args.start == 0 and args.end is None else "--start/--end"
        raise LongvidError(f"{args.video}: not one whole clip of T={args.clip_frames} ({sampling}) in {where}; "
                           f"--tail pad yields the partial one")
    if clips == 0:
        raise LongvidError(f"{args.video}: no video frames between {args.start:g} s and {args.end:g} s")
    return 0


def add_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    sub = command("clips", cmd_clips, "Stream a video through the clip reader and print each clip.")
    sub.add_argument("video")
    add_clip_options(sub)
    sub.add_argument("--size", type=int, default=224, help="short-side resize and center crop (default 224)")
    sub.add_argument("--start", type=float, default=0.0, help="start time in seconds")
    sub.add_argument("--end", type=float, default=None, help="end time in seconds")
