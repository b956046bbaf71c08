"""``longvid flops PRESET``: a MeMViT preset's parameters and GFLOPs per clip at steady state."""

from __future__ import annotations

import argparse
import json
from typing import Callable

from longvid.cli.common import print_rows
from longvid.errors import LongvidError


def cmd_flops(args: argparse.Namespace) -> int:
    from longvid.memvit.flops import model_cost
    from longvid.memvit import get_config

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
    print_rows(rows)
    return 0


def add_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    sub = command("flops", cmd_flops, "Print a model preset's parameters and GFLOPs per clip at steady state.")
    sub.add_argument("preset", help="model preset, e.g. memvit16_16x4")
    sub.add_argument("-T", "--clip-frames", type=int, default=None, help="frames per clip (default: the preset's)")
    sub.add_argument("--size", type=int, default=None, help="crop size (default: the preset's)")
    sub.add_argument("--memory", type=int, default=None, help="memory length M (0: no memory)")
    sub.add_argument("--sampler", default=None, help="memory sampler: consecutive, all or gapN")
    sub.add_argument("--memory-blocks", default=None, help="blocks that read memory: comma-separated indices or 'all'")
    sub.add_argument("--num-classes", type=int, default=None, help="classifier size (default: the preset's)")
    sub.add_argument("--json", action="store_true", help="print one JSON object")
