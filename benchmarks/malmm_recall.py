"""MA-LMM vs the no-memory InstructBLIP baseline on the benchmark's QA ``recall`` task.

Tiny random frozen CLIP encoder and LLaMA-style LLM; the Q-Former side of each system is
trained from scratch (about 2 minutes of CPU for the default two systems) and tested on
held-out seeds. See :mod:`longvid.malmm.bench` for what each system sees.

    python benchmarks/malmm_recall.py                            # malmm vs last-frame baseline
    python benchmarks/malmm_recall.py --systems malmm,last,concat  # + all frames concatenated (slower)
    python -m longvid bench malmm                                # the default run, from the CLI
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's longvid
from longvid.malmm.bench import MALMMBenchSpec, format_table, run_malmm_bench  # noqa: E402


def main() -> None:
    defaults = MALMMBenchSpec()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(defaults.systems), help="malmm, last, concat (comma-separated)")
    parser.add_argument("--num-clips", type=int, default=defaults.num_clips)
    parser.add_argument("--clip-frames", type=int, default=defaults.clip_frames)
    parser.add_argument("--distances", default=",".join(map(str, defaults.distances)), help="cue distances in clips before the last clip")
    parser.add_argument("--memory-length", type=int, default=defaults.memory_length, help="L, MA-LMM bank slots")
    parser.add_argument("--last-frames", type=int, default=defaults.last_frames, help="frames the 'last' baseline sees")
    parser.add_argument("--train-videos", type=int, default=defaults.train_videos)
    parser.add_argument("--test-videos", type=int, default=defaults.test_videos)
    parser.add_argument("--epochs", type=int, default=defaults.train.epochs)
    parser.add_argument("--lr", type=float, default=defaults.train.lr)
    parser.add_argument("--seed", type=int, default=defaults.train.seed)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON lines after the table")
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()
    spec = MALMMBenchSpec(
        num_clips=args.num_clips, clip_frames=args.clip_frames, distances=tuple(int(d) for d in args.distances.split(",")),
        memory_length=args.memory_length, last_frames=args.last_frames, train_videos=args.train_videos,
        test_videos=args.test_videos, systems=tuple(args.systems.split(",")),
        train=replace(defaults.train, epochs=args.epochs, lr=args.lr, seed=args.seed),
    )  # fmt: skip
    torch.set_num_threads(1)  # tiny tensors: one thread is much faster than two busy ones
    torch.manual_seed(spec.train.seed)
    rows = run_malmm_bench(spec, log=lambda text: print(text, file=sys.stderr))
    print(f"recall: {spec.num_frames} frames, cue {spec.distances} clips of {spec.clip_frames} frames before the last clip, "
          f"{spec.num_classes} classes, {spec.train_videos} training / {spec.test_videos} held-out videos")
    print(format_table(rows))
    if args.json:
        print("\n".join(json.dumps(row) for row in rows))


if __name__ == "__main__":
    main()
