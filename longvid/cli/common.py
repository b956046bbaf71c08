"""What several commands share: the ``--dtype`` help, the clip options of ``info`` and ``clips``,
and the name/value table ``info`` and ``flops`` print."""

from __future__ import annotations

import argparse
import math

from longvid.errors import LongvidError


DTYPE_HELP = ("weights and memory in this dtype (default float32); bfloat16 needs native CPU bf16 "
              "(AVX512-BF16/AMX), else it runs in float32 with a note")


def add_clip_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-T", "--clip-frames", type=int, default=16, help="frames per clip T (default 16)")
    parser.add_argument("--tau", type=int, default=4, help="sampling stride in frames (default 4)")
    parser.add_argument("--fps", type=float, default=None, help="sample at this rate instead of a frame stride")
    parser.add_argument("--tail", choices=("pad", "drop"), default="pad", help="last partial clip: pad or drop")


def check_clip_options(args: argparse.Namespace) -> None:
    """Clip options a user mistyped, as one-line errors that name the flag."""
    if args.clip_frames < 1:
        raise LongvidError(f"-T/--clip-frames must be >= 1, got {args.clip_frames}")
    if args.tau < 1:
        raise LongvidError(f"--tau must be >= 1, got {args.tau}")
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise LongvidError(f"--fps must be a number > 0, got {args.fps:g}")


def print_rows(rows: list[tuple[str, str]]) -> None:
    """Print ``(name, value)`` rows as two aligned columns."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
