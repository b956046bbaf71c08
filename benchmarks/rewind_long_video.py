"""A 10-minute 1-fps video through a tiny ReWind: memory tokens and feature-buffer size per policy.

    python -m benchmarks.rewind_long_video [--seconds 600] [--out DIR]   (from the repository root)

Writes a moving-shapes video of ``--seconds`` frames at 1 fps to ``--out``, builds a random
tiny ReWind (tiny CLIP tower + tiny LLaMA built in memory) and asks one question with
each frame-store policy: keep all, keep every 4th, spill to memory-mapped files.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from longvid.rewind.ask import ask_rewind
from longvid.data.synth import moving_shapes
from longvid.rewind import build_model
from longvid.core.tiny import tiny_llm, tiny_vision
from longvid.video import write_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    root = args.out or tempfile.mkdtemp(prefix="rewind-long-")
    os.makedirs(root, exist_ok=True)
    video = os.path.join(root, "long.mp4")
    write_video(video, moving_shapes(args.seconds, fps=1.0, width=64, height=64), fps=1.0)
    model = build_model("rewind_tiny", encoder=tiny_vision(), llm=tiny_llm(), clip_frames=16)
    question = "what color is the square"
    print(f"video: {args.seconds} s at 1 fps; model rewind_tiny (clip_frames 16, N_W 2, L {model.config.top_l}, K_c {model.config.num_select})")
    print(f"{'buffer policy':<22} {'frames':>6} {'mem tokens':>10} {'LLM in':>7} {'memory B':>9} {'buffer RAM B':>12} {'buffer disk B':>13} {'s':>6}")
    for name, options in [("keep all", {}), ("keep every 4th", {"keep_every": 4}), ("spill to disk (mmap)", {"spill_dir": root})]:
        start = time.perf_counter()
        answer = ask_rewind(video, question, model, max_new_tokens=4, **options)
        seconds = time.perf_counter() - start
        print(f"{name:<22} {answer.frames_seen:>6} {answer.memory_tokens:>10} {answer.llm_input_tokens:>7} {answer.memory_bytes:>9} "
              f"{answer.buffer_ram_bytes:>12} {answer.buffer_disk_bytes:>13} {seconds:>6.1f}")


if __name__ == "__main__":
    main()
