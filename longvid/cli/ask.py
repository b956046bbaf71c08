"""``longvid ask VIDEO QUESTION``: watch a video online and answer a question about it (MA-LMM or ReWind)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Callable

from longvid.cli.common import DTYPE_HELP


def cmd_ask(args: argparse.Namespace) -> int:
    from longvid.ask import AskOptions, ask, check_ask, summary
    from longvid.precision import resolve_dtype

    options = AskOptions(preset=args.preset, encoder=args.encoder, llm=args.llm, weights=args.checkpoint, device=args.device,
                         until=args.time, frames=args.frames, fps=args.fps, qformer_tokenizer=args.qformer_tokenizer,
                         keep_every=args.keep_every, spill_dir=args.spill_dir, max_new_tokens=args.max_new_tokens)
    check_ask(args.model, options, args.allow_untrained)
    dtype, note = resolve_dtype(args.dtype, args.device or "cpu")
    if note:
        print(f"longvid: {note}", file=sys.stderr)
    options = replace(options, dtype=dtype)
    answer = ask(args.video, args.question, args.model, options)
    if args.json:
        print(json.dumps(vars(answer)))
        return 0
    print(answer.text)
    print(summary(args.model, answer, options), file=sys.stderr)
    return 0


def add_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    sub = command("ask", cmd_ask, "Watch a video online and answer a question about it (MA-LMM or ReWind).")
    sub.add_argument("video")
    sub.add_argument("question")
    sub.add_argument("--model", choices=("malmm", "rewind"), default="malmm", help="which system answers (default malmm)")
    sub.add_argument("--preset", default=None, help="model preset (default malmm_qa / rewind_paper)")
    sub.add_argument("--encoder", "--vision", dest="encoder", default=None,
                     help="image encoder: path or hub id of a CLIP/SigLIP/AutoModel vision tower")
    sub.add_argument("--llm", default=None, help="language model: path or hub id of a causal LM")
    sub.add_argument("--checkpoint", "--weights", dest="checkpoint", default=None,
                     help="trained weights (.safetensors; for MA-LMM also released .pth names)")
    sub.add_argument("--allow-untrained", action="store_true",
                     help="run without --weights (random trained parts: for smoke tests, the answer is noise)")
    sub.add_argument("--time", type=float, default=None, help="breakpoint mode: answer at T seconds, seeing only video up to T")
    sub.add_argument("--frames", type=int, default=20, help="malmm: frames sampled uniformly over the video (default 20)")
    sub.add_argument("--fps", type=float, default=None, help="malmm: sample at this rate instead (long videos, online)")
    sub.add_argument("--qformer-tokenizer", default="bert-base-uncased", help="malmm: Q-Former instruction tokenizer ('' for none)")
    sub.add_argument("--keep-every", type=int, default=1, help="rewind: feature buffer keeps every k-th frame (default 1: all)")
    sub.add_argument("--spill-dir", default=None, help="rewind: feature buffer spills to memory-mapped files in this folder")
    sub.add_argument("--max-new-tokens", type=int, default=32)
    sub.add_argument("--device", default=None, help="torch device (default cpu)")
    sub.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help=DTYPE_HELP)
    sub.add_argument("--json", action="store_true", help="print one JSON object")
