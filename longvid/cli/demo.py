"""``longvid demo-video OUT`` (a generated recall video) and ``longvid demo`` (write one, print its info, stream its clips)."""

from __future__ import annotations

import argparse
import os
from typing import Callable

from longvid.cli.clips import cmd_clips
from longvid.cli.info import cmd_info


def cmd_demo_video(args: argparse.Namespace) -> int:
    from longvid.data.synth import SynthSpec, demo_sample, write_demo_video

    count = write_demo_video(args.out, seconds=args.seconds, fps=args.fps, width=args.width, height=args.height, seed=args.seed)
    print(f"wrote {args.out}: {count} frames, {args.width}x{args.height} at {args.fps:g} fps")
    sample = demo_sample(args.seconds, seed=args.seed)
    start, end = sample.target
    print(f"cue: the {sample.answer} flashes at {start:.2f}-{end:.2f} s, {sample.distance} clips "
          f"({SynthSpec().clip_seconds:g} s each) before the last clip")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    os.makedirs(args.out, exist_ok=True)
    video = os.path.join(args.out, "demo.mp4")
    common = dict(clip_frames=16, tau=4, fps=None, tail="pad")
    cmd_demo_video(argparse.Namespace(out=video, seconds=args.seconds, fps=30.0, width=160, height=120, seed=0))
    print()
    cmd_info(argparse.Namespace(video=video, count=False, json=False, **common))
    print()
    cmd_clips(argparse.Namespace(video=video, size=224, start=0.0, end=None, **common))
    return 0


def add_demo_video_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    sub = command("demo-video", cmd_demo_video, "Write a generated recall video: moving shapes and one brief coloured cue.")
    sub.add_argument("out", help="output video path (.mp4)")
    sub.add_argument("--seconds", type=float, default=20.0)
    sub.add_argument("--fps", type=float, default=16.0, help="frame rate (default 16: with the default stride 4, the 4 frames/s the shipped recall model sees)")
    sub.add_argument("--width", type=int, default=160)
    sub.add_argument("--height", type=int, default=120)
    sub.add_argument("--seed", type=int, default=0)


def add_demo_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    sub = command("demo", cmd_demo, "Write a demo video, print its info and stream its clips.")
    sub.add_argument("--out", default="longvid-demo", help="output folder (default longvid-demo/)")
    sub.add_argument("--seconds", type=float, default=20.0)
