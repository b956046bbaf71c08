"""Run every bad input a new user might type and print what longvid answers.

    python benchmarks/bad_input_probe.py [--only WORD]

Each case runs the installed ``longvid`` script in a fresh folder holding the files the
probe makes (a short video, annotation files, a trained checkpoint, damaged files),
with output piped to a file, as a user's shell would. The table lists the command,
its exit code and the first line of its message (the first ``longvid:`` line after the
model's info line, else the first line); the run fails (exit 1) if any case
printed a traceback or exited 0 when it should not have.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

_REWIND = "--model rewind --preset rewind_tiny --encoder vision --llm llm"
_MALMM = "--model malmm --preset malmm_tiny --encoder vision --llm llm --qformer-tokenizer llm"

# (command line as typed, from the probe folder; expected exit code). ``SIGINT``/``SIGTERM``
# first: the probe sends that signal once the run has loaded its model.
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
    # info / clips: unreadable files, options, times on the video's own clock, damage
    ("longvid info missing.mp4", 1),
    ("longvid info .", 1),
    ("longvid info notes.mp4", 1),
    ("longvid info empty.mp4", 1),
    ("longvid info audio.m4a", 1),
    ("longvid info a.mp4 --fps nan", 1),
    ("longvid clips garbage.mkv", 1),
    ("longvid clips a.mp4 -T 0", 1),
    ("longvid clips a.mp4 -T abc", 2),
    ("longvid clips a.mp4 --size 0", 1),
    ("longvid clips a.mp4 --start -1", 1),
    ("longvid clips a.mp4 --start 3 --end 2", 1),
    ("longvid clips a.mp4 --start 60", 1),
    ("longvid clips a.mp4 -T 64 --tail drop", 1),
    ("longvid clips shifted.ts --start 10.5", 1),
    ("longvid clips zeroed.mp4 --size 32", 0),  # damaged: one warning line, the clips it could decode
    ("longvid info", 2),
    # stream: options, output, checkpoints, scores, resume
    ("longvid stream v.mp4 --size 0", 1),
    ("longvid stream v.mp4 --threads -1", 1),
    ("longvid stream v.mp4 --topk 0", 1),
    ("longvid stream v.mp4 --batch-streams 0", 1),
    ("longvid stream v.mp4 -T 0", 1),
    ("longvid stream v.mp4 --tau 0", 1),
    ("longvid stream v.mp4 --save-scores scores_file", 1),
    ("longvid stream v.mp4 --out outdir", 1),
    ("longvid stream v.mp4 --resume", 1),
    ("flock busy.jsonl.lock longvid stream v.mp4 --out busy.jsonl", 1),  # another run holds the output
    ("longvid stream v.mp4 --checkpoint truncated.safetensors --out o.jsonl", 1),
    ("longvid stream v.mp4 --checkpoint garbage.safetensors --out o.jsonl", 1),
    ("longvid stream v.mp4 --model memvit_tiny --checkpoint truncated.safetensors --out o.jsonl", 1),
    ("longvid stream v.mp4 --checkpoint unknown_key.safetensors --out o.jsonl", 1),
    ("longvid stream v.mp4 --checkpoint wrong_type.safetensors --out o.jsonl", 1),
    ("longvid stream v.mp4 --checkpoint neg_classes.safetensors --out o.jsonl", 1),
    ("longvid stream v.mp4 --model memvit_tiny --checkpoint unpicklable.pyth --out o.jsonl", 1),
    ("longvid stream v.mp4 --checkpoint nan.safetensors --out nan.jsonl", 1),
    ("longvid stream v.mp4 --out not_a_record.jsonl --resume", 1),
    ("SIGINT longvid stream live.mp4 v.mp4 --out live.jsonl", 130),  # Ctrl-C while a FIFO input opens
    ("SIGTERM longvid stream live.mp4 v.mp4 --out live.jsonl", 143),
    # eval / ask: damaged checkpoints, untrained weights, options
    ("longvid eval memvit_tiny_synthetic model=toy --checkpoint run_json", 1),
    (f"longvid ask v.mp4 'what color' {_REWIND}", 1),
    (f"longvid ask v.mp4 'what color' {_MALMM} --weights unpicklable.pyth", 1),
    (f"longvid ask v.mp4 'what color' {_REWIND} --weights truncated.safetensors", 1),
    (f"longvid ask v.mp4 'what color' {_REWIND} --allow-untrained --time 60 --max-new-tokens 2", 0),
    (f"longvid ask v.mp4 'what color' {_REWIND} --allow-untrained --keep-every 0", 1),
    (f"longvid ask v.mp4 'what color' {_MALMM} --allow-untrained --fps 0", 1),
    # ReWind runs: the papers' annotation files, stages, untrained weights
    ("longvid train rewind_tiny data=charades_bad.txt out_dir=runs/r", 1),
    ("longvid train rewind_tiny data=charades_missing.txt out_dir=runs/r", 1),
    ("longvid train rewind_tiny stage=2 data=charades_ok.txt out_dir=runs/r", 1),
    ("longvid train rewind_tiny stage=2 data=moviechat_bad.json out_dir=runs/r", 1),
    ("longvid train rewind_tiny data=charades_ok.txt stage=3", 1),
    ("longvid train rewind_paper data=charades_ok.txt out_dir=runs/r", 1),
    ("longvid eval rewind_tiny val_data=charades_ok.txt out_dir=runs/none", 1),
    ("longvid stream v.mp4 --model rewind_tiny --ask 'what color' --out o.jsonl", 1),
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
        "charades_ok.txt": "a 0.0 1.0##a person sits.\n",
        "charades_bad.txt": "a 0.0 1.0##a person sits.\na 1.0 x##a person stands.\n",
        "charades_missing.txt": "a 0.0 1.0##a person sits.\nZZZ 0.0 1.0##gone.\n",
        "moviechat_bad.json": '{"info": {"video_path": "a.mp4", "fps": 0}, "global": []}',
    }
    for name, text in annotations.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    os.makedirs(os.path.join(folder, "empty_dir"))
    make_video_files(folder)
    make_stream_files(folder)
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


def make_video_files(folder: str) -> None:
    """Unreadable files, an audio-only file, a noise stream, an MPEG-TS copy whose clock
    starts at 1.48 s, and a copy with two packets zeroed."""
    from fractions import Fraction

    import av

    from longvid.video import write_video

    def path(name: str) -> str:
        return os.path.join(folder, name)

    ok = path("ok.mp4")
    write_video(ok, (np.full((48, 64, 3), 8 * (i % 30), np.uint8) for i in range(150)), fps=30)  # 5 s
    with open(path("notes.mp4"), "w") as f:
        f.write("this is not a video\n")
    open(path("empty.mp4"), "wb").close()
    with av.open(path("audio.m4a"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with av.open(path("garbage.mkv"), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(10):
            packet = av.Packet(np.random.default_rng(i).integers(0, 256, 500, dtype=np.uint8).tobytes())
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 30)
            container.mux(packet)
    with av.open(ok) as source, av.open(path("shifted.ts"), "w", format="mpegts") as target:
        out = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(video=0):
            if packet.dts is not None:
                packet.pts += 133200  # 1.48 s at 90 kHz
                packet.dts += 133200
                packet.stream = out
                target.mux(packet)
    with av.open(ok) as container:
        spans = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    with open(ok, "rb") as f:
        data = bytearray(f.read())
    for i in (20, 40):
        data[spans[i][0] : sum(spans[i])] = bytes(spans[i][1])
    with open(path("zeroed.mp4"), "wb") as f:
        f.write(bytes(data))


def make_stream_files(folder: str) -> None:
    """A demo video, good and damaged checkpoints, a FIFO no one writes, tiny encoder/LLM folders."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    import longvid
    from longvid.data.synth import write_demo_video
    from longvid.core.checkpoints import read_metadata, save_checkpoint
    from longvid.core.tiny import save_tiny_llm, save_tiny_vision
    from longvid.engine.checkpoint import save_checkpoint as save_training

    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()

    def path(name: str) -> str:
        return os.path.join(folder, name)

    write_demo_video(path("v.mp4"), seconds=4.0, width=64, height=48, seed=0)
    torch.manual_seed(0)
    model = longvid.build_model("memvit_tiny")
    save_checkpoint(model, path("good.safetensors"))
    with open(path("good.safetensors"), "rb") as f:
        data = f.read()
    with open(path("truncated.safetensors"), "wb") as f:
        f.write(data[: len(data) // 2])
    with open(path("garbage.safetensors"), "wb") as f:
        f.write(b"not safetensors at all " * 8)
    meta, tensors = read_metadata(path("good.safetensors")), load_file(path("good.safetensors"))
    for name, change in {"unknown_key": {"wings": 2}, "wrong_type": {"depth": "four"}, "neg_classes": {"num_classes": -1}}.items():
        config = json.dumps({**json.loads(meta["config"]), **change})
        save_file(tensors, path(f"{name}.safetensors"), metadata={**meta, "config": config})
    with torch.no_grad():
        model.head.projection.bias.fill_(float("nan"))
    save_checkpoint(model, path("nan.safetensors"))
    with open(path("unpicklable.pyth"), "wb") as f:
        f.write(b"\x80\x04not a pickle")
    with open(path("not_a_record.jsonl"), "w") as f:
        f.write('{"video": "a.mp4", "status": "done", "clips": 1, "seconds": 0.1}\n{"a": 1}\n')
    open(path("scores_file"), "w").close()
    os.makedirs(path("outdir"))
    save_tiny_vision(path("vision"))
    save_tiny_llm(path("llm"), hidden=64)
    os.mkfifo(path("live.mp4"))  # a live input no one writes yet
    base = save_training(path("run_json"), 1, {"model.w": torch.zeros(2)}, {"step": 1})
    with open(base + ".json", "w") as f:
        f.write('{"step": 1, "conf')


def run(folder: str, command: str) -> tuple[int, str]:
    """Run ``command`` in ``folder`` with output piped to a file, as a shell would; a leading
    ``SIGINT``/``SIGTERM`` sends that signal once the run has loaded its model."""
    argv = shlex.split(command)
    signal_name = argv.pop(0) if argv[0] in ("SIGINT", "SIGTERM") else None
    at = argv.index("longvid")
    argv[at] = os.path.join(os.path.dirname(sys.executable), "longvid")
    log = os.path.join(folder, "probe-output.txt")
    with open(log, "w") as f:
        process = subprocess.Popen(argv, cwd=folder, stdout=f, stderr=subprocess.STDOUT)
        if signal_name:
            _signal_when_loaded(process, log, getattr(signal, signal_name))
        code = process.wait(timeout=600)
    with open(log) as f:
        return code, f.read()


def _signal_when_loaded(process: subprocess.Popen, log: str, signum: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        with open(log) as f:
            if "longvid: model " in f.read():
                time.sleep(1.0)  # now opening the FIFO
                break
        time.sleep(0.2)
    if process.poll() is None:
        process.send_signal(signum)


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
            # the message: the first longvid line that is not the model's info line (progress lines may come first)
            ours = [line for line in lines if line.startswith("longvid: ") and not line.startswith("longvid: model ")]
            first = (ours or lines or [""])[0]
            bad = "Traceback" in printed or code != expected or (expected != 0 and not first.startswith("longvid"))
            failures += bad
            mark = " **FAIL**" if bad else ""
            shown = command.replace(_REWIND, "REWIND").replace(_MALMM, "MALMM").replace("|", "\\|")
            print(f"| `{shown}` | {code} | {expected} | {first[:150]}{mark} |", flush=True)
    print(f"\nREWIND = `{_REWIND}`, MALMM = `{_MALMM}`")
    print(f"{len(cases)} cases, {failures} failed, {time.perf_counter() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
