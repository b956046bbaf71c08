"""`longvid stream` as a user types it: bad options, a busy output, NaN scores, a damaged
--resume file, and the installed script in a real process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import longvid
from longvid.data.synth import write_demo_video
from longvid.core.checkpoints import save_checkpoint
from conftest import longvid_script, wait_until_blocked_opening_a_fifo
from longvid.cli import main
from longvid.fileio import FileLockedError, exclusive_lock
from longvid.predict import StreamSettings, run_stream
from longvid.video import write_video

torch.set_num_threads(1)  # tiny models: threads only contend on a shared machine

SMALL = ["--size", "32", "--tau", "2", "--threads", "1"]


def strict_records(path) -> list[dict]:
    """Every line of ``path``: whole, and valid JSON (no bare NaN / Infinity)."""
    def refuse(constant):
        raise ValueError(f"{constant} is not valid JSON")

    with open(path) as f:
        lines = f.readlines()
    assert all(line.endswith("\n") for line in lines)
    return [json.loads(line, parse_constant=refuse) for line in lines]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("longvid: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("option, message", [
    (["--size", "0"], "--size must be >= 1, got 0"),
    (["--threads", "-1"], "--threads must be >= 1, got -1"),
    (["--topk", "0"], "--topk must be >= 1, got 0"),
    (["--batch-streams", "0"], "--batch-streams must be >= 1, got 0"),
    (["-T", "0"], "-T/--clip-frames must be >= 1, got 0"),
    (["--tau", "0"], "--tau must be >= 1, got 0"),
    (["--save-scores", "FILE"], "is a file; give a folder"),
    (["--out", "DIR"], "is a folder; give the JSON lines file"),
    (["--resume"], "--resume needs --out"),
    (["--decode-threads", "-1"], "--decode-threads must be >= 0 (0: FFmpeg chooses), got -1"),
    (["--prefetch", "0"], "--prefetch must be >= 1, got 0"),
])
def test_bad_options_fail_before_the_model_loads(videos, tmp_path, capsys, option, message):
    (tmp_path / "FILE").write_text("not a folder")
    (tmp_path / "DIR").mkdir()
    option = [str(tmp_path / o) if o in ("FILE", "DIR") else o for o in option]
    # an unknown preset: had the model been loaded first, its error would show instead
    assert main(["stream", videos["cfr"], "--model", "no_such_preset", *option]) == 1
    assert message in one_error_line(capsys)


def test_stream_settings_refuse_sizes_below_one():
    with pytest.raises(longvid.LongvidError, match="size must be an integer >= 1, got 0"):
        StreamSettings(size=0)


def test_save_scores_pointing_at_a_file_is_an_error_in_the_library(videos, tmp_path):
    (tmp_path / "scores").write_text("")
    model = longvid.build_model("memvit_tiny")
    with pytest.raises(longvid.LongvidError, match="is a file"):
        run_stream(model, [videos["cfr"]], out=str(tmp_path / "out.jsonl"), save_scores=str(tmp_path / "scores"), progress=False)
    assert not (tmp_path / "out.jsonl").exists()  # nothing was started


def test_exclusive_lock_is_reentrant_and_removed_on_release(tmp_path):
    path = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.lock").write_text("99999\n")  # left by a killed run: the kernel released its lock
    with exclusive_lock(path):
        with exclusive_lock(path):
            assert (tmp_path / "out.jsonl.lock").read_text() == f"{os.getpid()}\n"
        assert (tmp_path / "out.jsonl.lock").exists()
    assert not (tmp_path / "out.jsonl.lock").exists()


HOLD_LOCK = """
import sys
from longvid.fileio import exclusive_lock
with exclusive_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_locked_output_is_refused_and_left_alone(videos, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text('{"video": "a.mp4", "status": "done", "clips": 1, "seconds": 0.1}\n')
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(FileLockedError, match=f"pid {holder.pid}"):
            run_stream(longvid.build_model("memvit_tiny"), [videos["cfr"]], out=str(out), progress=False)
    finally:
        holder.communicate("")
    assert out.read_text().count("\n") == 1  # the other run's file was not touched
    assert not (tmp_path / "out.jsonl.lock").exists()


@pytest.mark.skipif(not os.path.exists("/proc/self/wchan"), reason="needs Linux /proc")
def test_two_runs_on_one_output_the_second_is_refused_and_the_first_loses_nothing(videos, tmp_path, capsys):
    fifo, out = tmp_path / "live.mp4", tmp_path / "out.jsonl"
    os.mkfifo(fifo)  # the first run waits there, after its first video, until the test lets it go on
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([longvid_script(), "stream", videos["cfr"], str(fifo), "--out", str(out), *SMALL],
                                 stdout=log, stderr=subprocess.STDOUT)
        wait_until_blocked_opening_a_fifo(first.pid)
        assert main(["stream", videos["vfr"], "--out", str(out), "--quiet", *SMALL]) == 1
        with open(fifo, "w"):  # an empty live input: the first run records an error for it and ends
            pass
        assert first.wait(timeout=120) == 1
    assert f"{out}: another process (pid {first.pid}) is writing it" in one_error_line(capsys)
    records = strict_records(out)  # was: the second run's records only; the first run's went to a deleted file
    assert [r.get("status") for r in records] == [None] * 19 + ["done", "error"]  # 150 frames: 19 clips of 4 x 2
    assert records[-2]["video"] == videos["cfr"] and records[-1]["video"] == str(fifo)
    assert not (tmp_path / "out.jsonl.lock").exists()


class NaNOnDarkClips(torch.nn.Module):
    """A tiny MeMViT whose scores are NaN for dark clips (as with a weight overflow)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner = longvid.build_model("memvit_tiny").eval()
        self.config = self.inner.config

    def init_state(self, *args, **kwargs):
        return self.inner.init_state(*args, **kwargs)

    def forward(self, clips, state):
        logits, state = self.inner(clips, state)
        dark = clips.mean(dim=(1, 2, 3, 4)) < -1.9  # (b,): black frames normalize to -2, the demo videos to about -1.4
        return logits.masked_fill(dark[:, None], float("nan")), state


def test_nan_scores_are_null_and_end_only_their_video(tmp_path):
    dark = str(tmp_path / "dark.mp4")
    write_video(dark, (np.zeros((48, 64, 3), np.uint8) for _ in range(60)), fps=30)
    bright = str(tmp_path / "bright.mp4")
    write_demo_video(bright, seconds=3.0, width=64, height=48, seed=0)
    out = tmp_path / "out.jsonl"
    settings = StreamSettings(clip_frames=16, stride=2, size=32, topk=3, background=False)
    summary = run_stream(NaNOnDarkClips(), [dark, bright], out=str(out), settings=settings, batch_streams=2,
                         save_scores=str(tmp_path / "scores"), progress=False)
    records = strict_records(out)
    assert [r for r in records if r["video"] == dark] == [
        {"video": dark, "clip": 0, "start": 0.0, "end": records[0]["end"], "top": None},
        {"video": dark, "status": "error", "error": records[1]["error"]},
    ]
    assert "scores for clip 0 are not finite" in records[1]["error"]
    assert [r["clip"] for r in records if r["video"] == bright and "clip" in r] == [0, 1, 2]
    assert summary.done == 1 and summary.failed == 1
    assert os.listdir(tmp_path / "scores") == ["bright.npy"]


def test_cli_nan_weights_write_valid_json_and_exit_nonzero(videos, tmp_path, capsys):
    model = longvid.build_model("memvit_tiny")
    with torch.no_grad():
        model.head.projection.bias.fill_(float("nan"))
    save_checkpoint(model, tmp_path / "nan.safetensors")
    out = tmp_path / "out.jsonl"
    assert main(["stream", videos["cfr"], "--checkpoint", str(tmp_path / "nan.safetensors"), "--out", str(out), *SMALL]) == 1
    records = strict_records(out)  # was: bare NaN scores, and exit 0
    assert records[0]["top"] is None and records[1]["status"] == "error" and len(records) == 2
    assert "not finite" in capsys.readouterr().err


@pytest.mark.parametrize("line, why", [
    ('{"a": 1}', "not a longvid stream record"),
    ("[1, 2]", "not a longvid stream record"),
    ('{"video": 3, "clip": 0}', "not a longvid stream record"),
    ("{oops", "not a longvid stream output (bad JSON"),
    ('{"video": "a.mp4", "clip": 0, "top": [{"label": 1, "score": NaN}]}', "not a longvid stream output (bad JSON: NaN is not JSON)"),
], ids=["object", "list", "number-video", "garbage", "NaN"])
def test_resume_names_the_line_that_is_not_a_record(videos, tmp_path, capsys, line, why):
    out = tmp_path / "out.jsonl"
    before = f'{{"video": "a.mp4", "status": "done", "clips": 1, "seconds": 0.1}}\n{line}\n'
    out.write_text(before)
    assert main(["stream", videos["cfr"], "--out", str(out), "--resume", "--model", "memvit_tiny", "--quiet", *SMALL]) == 1
    assert one_error_line(capsys).startswith(f"longvid: error: {out}:2: {why}")
    assert out.read_text() == before  # nothing lost


def test_installed_script_streams_to_stdout_with_plain_progress(videos, tmp_path):
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        result = subprocess.run([longvid_script(), "stream", videos["cfr"], videos["text"], *SMALL], stdout=stdout, stderr=stderr, timeout=120)
    assert result.returncode == 1  # one video failed
    records = strict_records(out)
    assert [r.get("status") for r in records] == [None] * 19 + ["done", "error"]  # 150 frames: 19 clips of 4 x 2
    log = err.read_text().splitlines()
    assert log[0].startswith("longvid: model MeMViT (shipped demo weights")
    assert f"longvid: {videos['text']}: not a readable video file" in log[1]
    assert log[-2].startswith("stream: 2/2 video (") and log[-2].endswith("1 failed")  # progress, though not a terminal
    assert log[-1].startswith("longvid: 1 videos done, 1 failed, 0 skipped")
    assert "Traceback" not in err.read_text()


def test_installed_script_takes_the_split_and_model_options(tmp_path, run_cli, monkeypatch):
    video = tmp_path / "scene.mp4"
    write_demo_video(str(video), seconds=3, width=96, height=72)
    options = SMALL  # the shipped demo weights: the same model in both runs
    code, printed = run_cli("stream", video, *options, "--out", tmp_path / "plain.jsonl")
    assert code == 0, printed
    monkeypatch.setenv("CXX", str(tmp_path / "no-compiler"))  # inductor cannot build its kernels: compiling fails
    code, printed = run_cli("stream", video, *options, "--decode-threads", "1", "--prefetch", "3", "--channels-last", "--compile",
                            "--out", tmp_path / "options.jsonl")
    assert code == 0, printed
    lines = printed.splitlines()
    assert "1 thread(s); decoding 1 thread(s) 3 clips ahead" in lines[0]
    assert [line for line in lines if "torch.compile" in line] == [lines[1]]
    assert lines[1].startswith("longvid: torch.compile failed (") and lines[1].endswith("); running eagerly")
    assert "Traceback" not in printed and lines[-1].startswith("longvid: 1 videos done")
    plain, options = strict_records(tmp_path / "plain.jsonl"), strict_records(tmp_path / "options.jsonl")
    assert len(plain) == len(options) > 2
    for a, b in zip(plain, options):  # channels-last changes the last bits at most
        assert [t["label"] for t in a.get("top", [])] == [t["label"] for t in b.get("top", [])]
        assert np.allclose([t["score"] for t in a.get("top", [])], [t["score"] for t in b.get("top", [])], atol=2e-6)
