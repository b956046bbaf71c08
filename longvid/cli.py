"""The ``longvid`` command line. Thin: every command calls the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Callable, Sequence

from longvid.errors import LongvidError


def _add_clip_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-T", "--clip-frames", type=int, default=16, help="frames per clip T (default 16)")
    parser.add_argument("--tau", type=int, default=4, help="sampling stride in frames (default 4)")
    parser.add_argument("--fps", type=float, default=None, help="sample at this rate instead of a frame stride")
    parser.add_argument("--tail", choices=("pad", "drop"), default="pad", help="last partial clip: pad or drop")


# -- info ------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    from longvid.video import probe

    info = probe(args.video, count_frames=args.count)
    clips = info.num_clips(args.clip_frames, args.tau, args.fps, args.tail)
    sampling = f"{args.fps:g} fps" if args.fps else f"T={args.clip_frames}, tau={args.tau}"
    if args.json:
        record = dict(vars(info))
        record.update(clips=clips, clip_frames=args.clip_frames, tau=args.tau, sample_fps=args.fps, tail=args.tail)
        print(json.dumps(record))
        return 0
    counted = "counted" if info.frames_counted else "header"
    rows = [
        ("file", info.path),
        ("duration", f"{info.duration:.3f} s"),
        ("fps", f"{info.fps:.3f}"),
        ("frames", f"{info.num_frames} ({counted})"),
        ("resolution", f"{info.width}x{info.height}"),
        ("codec", info.codec),
        ("audio", "yes" if info.has_audio else "no"),
        (f"clips ({sampling}, {args.tail})", str(clips)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


# -- clips -----------------------------------------------------------------------------


def cmd_clips(args: argparse.Namespace) -> int:
    from longvid.video import ClipReader

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
    for clip in reader:
        c, t, h, w = clip.frames.shape
        print(
            f"clip {clip.index:4d}  {clip.start:8.3f}-{clip.end:8.3f} s  frames ({c}, {t}, {h}, {w})"
            f"  valid {clip.num_valid:2d}  mean {clip.frames.mean().item():+.3f}"
        )
    return 0


# -- demo-video / demo -----------------------------------------------------------------


def cmd_demo_video(args: argparse.Namespace) -> int:
    from longvid.bench.synth import write_demo_video

    count = write_demo_video(args.out, seconds=args.seconds, fps=args.fps, width=args.width, height=args.height, seed=args.seed)
    print(f"wrote {args.out}: {count} frames, {args.width}x{args.height} at {args.fps:g} fps")
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


# -- flops -----------------------------------------------------------------------------


def cmd_flops(args: argparse.Namespace) -> int:
    from longvid.flops import model_cost
    from longvid.models.memvit import get_config

    blocks = None
    if args.memory_blocks == "all":
        blocks = tuple(range(get_config(args.preset).depth))
    elif args.memory_blocks is not None:
        try:
            blocks = tuple(int(b) for b in args.memory_blocks.split(",") if b.strip())
        except ValueError:
            raise LongvidError(f"--memory-blocks takes comma-separated block indices or 'all', got {args.memory_blocks!r}") from None
    cost = model_cost(args.preset, clip_frames=args.clip_frames, size=args.size, memory_len=args.memory, sampler=args.sampler, memory_blocks=blocks, num_classes=args.num_classes)
    if args.json:
        print(json.dumps(cost.as_dict()))
        return 0
    memory = f"M={cost.memory_len}, {cost.sampler}, {len(cost.memory_blocks)} blocks" if cost.memory_len else "none"
    rows = [
        ("model", cost.preset),
        ("clip", f"{cost.clip_frames}x{cost.size}x{cost.size}, batch 1"),
        ("memory", memory),
        ("params", f"{cost.params:,}"),
        ("GFLOPs", f"{cost.gflops:.2f} (steady state, 1 multiply-add = 1 FLOP)"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


# -- parser ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="longvid", description="Long video understanding with memory.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    sub = command("info", cmd_info, "Print a video's duration, fps, frames, resolution, codec and clip count.")
    sub.add_argument("video")
    _add_clip_options(sub)
    sub.add_argument("--count", action="store_true", help="decode the whole video to count frames exactly")
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = command("clips", cmd_clips, "Stream a video through the clip reader and print each clip.")
    sub.add_argument("video")
    _add_clip_options(sub)
    sub.add_argument("--size", type=int, default=224, help="short-side resize and center crop (default 224)")
    sub.add_argument("--start", type=float, default=0.0, help="start time in seconds")
    sub.add_argument("--end", type=float, default=None, help="end time in seconds")

    sub = command("demo-video", cmd_demo_video, "Write a generated moving-shapes video.")
    sub.add_argument("out", help="output video path (.mp4)")
    sub.add_argument("--seconds", type=float, default=20.0)
    sub.add_argument("--fps", type=float, default=30.0)
    sub.add_argument("--width", type=int, default=160)
    sub.add_argument("--height", type=int, default=120)
    sub.add_argument("--seed", type=int, default=0)

    sub = command("demo", cmd_demo, "Write a demo video, print its info and stream its clips.")
    sub.add_argument("--out", default="longvid-demo", help="output folder (default longvid-demo/)")
    sub.add_argument("--seconds", type=float, default=20.0)
    sub = command("flops", cmd_flops, "Print a model preset's parameters and GFLOPs per clip at steady state.")
    sub.add_argument("preset", help="model preset, e.g. memvit16_16x4")
    sub.add_argument("-T", "--clip-frames", type=int, default=None, help="frames per clip (default: the preset's)")
    sub.add_argument("--size", type=int, default=None, help="crop size (default: the preset's)")
    sub.add_argument("--memory", type=int, default=None, help="memory length M (0: no memory)")
    sub.add_argument("--sampler", default=None, help="memory sampler: consecutive, all or gapN")
    sub.add_argument("--memory-blocks", default=None, help="blocks that read memory: comma-separated indices or 'all'")
    sub.add_argument("--num-classes", type=int, default=None, help="classifier size (default: the preset's)")
    sub.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("longvid")
    except PackageNotFoundError:
        return "unknown"


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"longvid: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    warnings.formatwarning = _format_warning
    try:
        return args.handler(args)
    except LongvidError as err:
        print(f"longvid: error: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as err:
        print(f"longvid: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("longvid: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
