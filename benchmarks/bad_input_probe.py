"""Run every bad input a new user might type and print what longvid answers.

    python benchmarks/bad_input_probe.py [--only WORD]

Each case runs the installed ``longvid`` script in a fresh folder holding the files the
probe makes (a short video, annotation files, a trained checkpoint, damaged files),
with output piped to a file, as a user's shell would. The table lists the command,
its exit code and the first line of its message (the first ``longvid:`` line, else the
first line); the run fails (exit 1) if any case
printed a traceback or exited 0 when it should not have.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

# (command line as typed, from the probe folder; expected exit code)
CASES: list[tuple[str, int]] = [
    # train / eval: config values
    ("longvid train memvit_tiny_synthetic out_dir=runs/a clip_grad=-1", 1),
    ("longvid train memvit_tiny_synthetic out_dir=runs/a lr=nan", 1),
    ("longvid train memvit_tiny_synthetic out_dir=runs/a lr=0", 1),
    ("longvid train memvit_tiny_synthetic out_dir=runs/a min_lr=1", 1),
    ("longvid train memvit_tiny_synthetic out_dir=runs/a weight_decay=-0.1", 1),
    ("longvid train memvit_tiny_synthetic out_dir=runs/a max_steps=-1", 1),
    ("longvid train memvit_tiny_synthetic out_dir=runs/a checkpoint_every=0", 1),
    ("longvid train memvit_tiny_synthetic out_dir=runs/a log_every=0", 1),
    ("longvid train memvit_tiny_synthetic out_dir=runs/a clip_frames=0", 1),
    ("longvid train memvit_tiny_synthetic out_dir=runs/a size=0", 1),
    ("longvid train memvit_tiny_synthetic out_dir=runs/a label_smoothing=1", 1),
    ("longvid train memvit_tiny_synthetic out_dir=runs/a on_nan=maybe", 1),
    ("longvid train memvit_tiny_synthetic out_dir=runs/a clip_frames=3", 1),
    ("longvid train memvit_tiny_synthetic out_dir=runs/a epochs=two", 1),
    ("longvid train memvit_tiny_synthetic out_dir=runs/a no_such_field=1", 1),
    ("longvid train memvit_tiny_synthetic out_dir=runs/a --bogus", 2),
    ("longvid train no_such_preset", 1),
    # train: annotation files
    ("longvid train memvit_tiny_synthetic data=label_out_of_range.csv out_dir=runs/a clip_frames=2 size=16", 1),
    ("longvid train memvit_tiny_synthetic data=label_negative.csv out_dir=runs/a clip_frames=2 size=16", 1),
    ("longvid train memvit_tiny_synthetic data=label_missing.csv out_dir=runs/a clip_frames=2 size=16", 1),
    ("longvid train memvit_tiny_synthetic data=unterminated_quote.csv out_dir=runs/a clip_frames=2 size=16", 1),
    ("longvid train memvit_tiny_synthetic data=header_only.csv out_dir=runs/a clip_frames=2 size=16", 1),
    ("longvid train memvit_tiny_synthetic data=mixed_labels.csv out_dir=runs/a clip_frames=2 size=16", 1),
    ("longvid train memvit_tiny_synthetic data=no_such_file.csv out_dir=runs/a", 1),
    # train: a loss that becomes NaN; resume from a damaged checkpoint
    ("longvid train memvit_tiny_synthetic out_dir=runs/nan lr=1e30 warmup_steps=0 clip_grad=0", 1),
    ("longvid train memvit_tiny_synthetic model=toy out_dir=damaged max_steps=6 --resume --quiet", 0),
    ("longvid eval memvit_tiny_synthetic model=toy out_dir=garbage", 1),
    ("longvid eval memvit_tiny_synthetic out_dir=empty_dir", 1),
    ("longvid eval memvit_tiny_synthetic out_dir=damaged", 1),  # a checkpoint of another model
    ("longvid eval memvit_tiny_synthetic model=toy out_dir=damaged/step_00000004", 1),
    # flops / bench / demo
    ("longvid flops memvit_tiny --size 0", 1),
    ("longvid flops memvit_tiny -T 3", 1),
    ("longvid flops memvit_tiny --num-classes 0", 1),
    ("longvid flops memvit_tiny --memory -1", 1),
    ("longvid bench --quick --full", 1),
    ("longvid bench scaling --size 50", 1),
    ("longvid demo-video no_such_folder/x.mp4", 1),
    ("longvid demo-video x.mp4 --seconds -1", 1),
    ("longvid demo-video x.mp4 --fps 0", 1),
    ("longvid demo --seconds 0", 1),
]


def make_files(folder: str) -> None:
    """The files the cases name, in ``folder``."""
    from longvid.video import write_video

    frames = [np.full((32, 32, 3), 8 * i, np.uint8) for i in range(16)]
    write_video(os.path.join(folder, "a.mp4"), frames, fps=8)
    annotations = {
        "label_out_of_range.csv": "video,label\na.mp4,0\na.mp4,1\na.mp4,7\n",
        "label_negative.csv": "video,label\na.mp4,0\na.mp4,-1\na.mp4,3\n",
        "label_missing.csv": "video,label\na.mp4,0\na.mp4,\n",
        "unterminated_quote.csv": 'video,label\na.mp4,0\n"a.mp4,1\na.mp4,2\n',
        "header_only.csv": "video,label\n",
        "mixed_labels.csv": "video,label\na.mp4,cut\na.mp4,2\n",
    }
    for name, text in annotations.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    os.makedirs(os.path.join(folder, "empty_dir"))
    # a run with two checkpoints whose newest is truncated: resume falls back, eval of a
    # garbage file names it
    run(folder, "longvid train memvit_tiny_synthetic model=toy out_dir=damaged max_steps=4 checkpoint_every=2 --quiet")
    newest = os.path.join(folder, "damaged", "step_00000004.safetensors")
    with open(newest, "rb") as f:
        data = f.read()
    with open(newest, "wb") as f:
        f.write(data[: len(data) // 2])
    os.makedirs(os.path.join(folder, "garbage"))
    for ext, text in ((".json", '{"step": 1}'), (".safetensors", "not a tensor file")):
        with open(os.path.join(folder, "garbage", "step_00000001" + ext), "w") as f:
            f.write(text)


def run(folder: str, command: str) -> tuple[int, str]:
    """Run ``command`` (starting with ``longvid``) in ``folder`` with output piped to a file."""
    argv = shlex.split(command)
    script = os.path.join(os.path.dirname(sys.executable), argv[0])
    log = os.path.join(folder, "probe-output.txt")
    with open(log, "w") as f:
        code = subprocess.run([script, *argv[1:]], cwd=folder, stdout=f, stderr=subprocess.STDOUT, timeout=600).returncode
    with open(log) as f:
        return code, f.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="run only the cases whose command contains this word")
    args = parser.parse_args()
    cases = [c for c in CASES if args.only is None or args.only in c[0]]
    failures = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="longvid-probe-") as folder:
        make_files(folder)
        print("| input | exit | expected | first line of the message |")
        print("|---|---|---|---|")
        for command, expected in cases:
            code, printed = run(folder, command)
            lines = [line for line in printed.splitlines() if line.strip()]
            ours = [line for line in lines if line.startswith("longvid: ")]  # progress lines may come first
            first = (ours or lines or [""])[0]
            bad = "Traceback" in printed or code != expected or (expected == 1 and not first.startswith("longvid: "))
            failures += bad
            mark = " **FAIL**" if bad else ""
            print(f"| `{command.removeprefix('longvid ')}` | {code} | {expected} | {first[:160]}{mark} |", flush=True)
    print(f"\n{len(cases)} cases, {failures} failed, {time.perf_counter() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
