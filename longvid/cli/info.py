"""``longvid info VIDEO``: a video's duration, fps, frames, resolution, codec and clip count."""

from __future__ import annotations

import argparse
import json
from typing import Callable

from longvid.cli.common import add_clip_options, check_clip_options, print_rows


def cmd_info(args: argparse.Namespace) -> int:
    from longvid.video import probe

    check_clip_options(args)
    info = probe(args.video, count_frames=args.count)
    clips = info.num_clips(args.clip_frames, args.tau, args.fps, args.tail)
    sampling = f"{args.fps:g} fps" if args.fps else f"T={args.clip_frames}, tau={args.tau}"
    if args.json:
        record = dict(vars(info))
        record.update(clips=clips, clip_frames=args.clip_frames, tau=args.tau, sample_fps=args.fps, tail=args.tail)
        print(json.dumps(record))
        return 0
    counted = "counted" if info.frames_counted else "header"
    resolution = f"{info.width}x{info.height}"
    if info.rotation:
        coded = f"{info.height}x{info.width}" if info.rotation % 180 else resolution
        resolution += f" (as displayed; coded {coded}, rotation {info.rotation})"
    rows = [
        ("file", info.path),
        ("duration", f"{info.duration:.3f} s"),
        ("fps", f"{info.fps:.3f}"),
        ("frames", f"{info.num_frames} ({counted})"),
        ("resolution", resolution),
        ("codec", info.codec),
        ("audio", "yes" if info.has_audio else "no"),
        (f"clips ({sampling}, {args.tail})", str(clips)),
    ]
    print_rows(rows)
    return 0


def add_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    sub = command("info", cmd_info, "Print a video's duration, fps, frames, resolution, codec and clip count.")
    sub.add_argument("video")
    add_clip_options(sub)
    sub.add_argument("--count", action="store_true", help="decode the whole video to count frames exactly")
    sub.add_argument("--json", action="store_true", help="print one JSON object")
