"""``longvid train`` / ``longvid eval`` end to end on generated clips, also as a user types
them (the installed script, no --quiet, output piped to a file); bad input fails in one
line before any work."""

import contextlib
import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import termios

import pytest

from conftest import gray_frames, longvid_script
from longvid.cli import main
from longvid.memvit.recipes import load_config
from longvid.memvit.data import build_sources
from longvid.video import write_video

FIELDS = ["model=toy", "synthetic_videos=4", "synthetic_clips=2", "clip_frames=2", "size=4", "batch_size=2", "log_every=100"]


def test_train_resume_and_eval(tmp_path, capsys):
    out = f"out_dir={tmp_path / 'run'}"
    assert main(["train", "memvit_tiny_synthetic", *FIELDS, out, "epochs=1", "--quiet"]) == 0
    assert main(["train", "memvit_tiny_synthetic", *FIELDS, out, "epochs=2", "--resume", "--quiet"]) == 0
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert steps == list(range(1, 9))  # the resumed run continued at step 5
    capsys.readouterr()
    assert main(["eval", "memvit_tiny_synthetic", *FIELDS, out, "--json", "--quiet"]) == 0
    assert "top1" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bad_config_is_one_line_error(capsys):
    assert main(["train", "memvit_tiny_synthetic", "epochs=zero"]) == 1
    assert capsys.readouterr().err.strip() == "longvid: error: config field epochs expects int, got 'zero'"


def test_train_without_quiet_piped_writes_a_checkpoint_then_eval(run_cli, tmp_path):
    out = tmp_path / "run"
    code, text = run_cli("train", "memvit_tiny_synthetic", f"out_dir={out}", "max_steps=2")
    assert code == 0, text
    assert "Traceback" not in text and "\r" not in text
    assert "trained 2 steps" in text and "train: 2/2 step" in text
    assert os.path.exists(out / "step_00000002.safetensors")
    code, text = run_cli("eval", "memvit_tiny_synthetic", f"out_dir={out}")
    assert code == 0, text
    assert "top1" in text and "eval: " in text and "\r" not in text


def test_overrides_before_and_after_options(run_cli, tmp_path):
    out = tmp_path / "run"
    code, text = run_cli("train", "memvit_tiny_synthetic", *FIELDS, f"out_dir={out}", "--quiet", "max_steps=1")
    assert code == 0, text
    code, text = run_cli("train", "memvit_tiny_synthetic", "--resume", *FIELDS, f"out_dir={out}", "max_steps=2", "--quiet")
    assert code == 0, text
    steps = [json.loads(line)["step"] for line in open(out / "log.jsonl")]
    assert steps == [1, 2]
    code, text = run_cli("train", "memvit_tiny_synthetic", f"out_dir={out}", "--bogus")
    assert code == 2 and "unrecognized arguments: --bogus" in text


@pytest.mark.parametrize(
    "override, field",
    [
        ("clip_grad=-1", "clip_grad"), ("lr=nan", "lr"), ("lr=0", "lr"), ("lr=-0.1", "lr"), ("min_lr=1", "min_lr"),
        ("weight_decay=-1", "weight_decay"), ("max_steps=-1", "max_steps"), ("checkpoint_every=0", "checkpoint_every"),
        ("log_every=0", "log_every"), ("clip_frames=0", "clip_frames"), ("size=0", "size"),
        ("label_smoothing=1", "label_smoothing"), ("label_smoothing=-0.1", "label_smoothing"), ("on_nan=maybe", "on_nan"),
        ("stride=0", "stride"), ("num_classes=-1", "num_classes"), ("no_such_field=1", "no_such_field"),
        ("batch_size=two", "batch_size"),
    ],
)  # fmt: skip
def test_bad_config_value_is_one_line_naming_the_field(override, field, tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["train", "memvit_tiny_synthetic", f"out_dir={tmp_path / 'run'}", override])
    assert code == 1
    assert err.getvalue().count("\n") == 1 and err.getvalue().startswith("longvid: error: ")
    assert field in err.getvalue()
    assert not os.path.exists(tmp_path / "run")  # nothing was started


def _videos_and_annotations(tmp_path, rows: str):
    write_video(tmp_path / "a.mp4", gray_frames(16, 32, 32), fps=8)
    ann = tmp_path / "ann.csv"
    ann.write_text("video,label\n" + rows)
    return ann


@pytest.mark.parametrize(
    "rows, message",
    [
        ("a.mp4,0\na.mp4,1\na.mp4,7\n", "ann.csv:4: label 7 is outside [0, 4)"),
        ("a.mp4,0\na.mp4,-1\n", "ann.csv:3: label -1 is outside [0, 4)"),
        ("a.mp4,0\na.mp4,\n", "ann.csv:3: no label"),
        ('a.mp4,0\n"a.mp4,1\na.mp4,2\n', "ann.csv:3: malformed CSV"),
        ("", "ann.csv: no samples"),
    ],
)
def test_bad_annotation_fails_before_step_one(run_cli, tmp_path, rows, message):
    ann = _videos_and_annotations(tmp_path, rows)
    out = tmp_path / "run"
    code, text = run_cli("train", "memvit_tiny_synthetic", f"data={ann}", f"out_dir={out}", "clip_frames=2", "size=16")
    assert code == 1, text
    assert text.count("\n") == 1 and text.startswith("longvid: error: ") and message in text
    assert not os.path.exists(out / "log.jsonl")


def test_named_classes_are_saved_and_used_by_eval(run_cli, tmp_path):
    write_video(tmp_path / "a.mp4", gray_frames(16, 32, 32), fps=8)
    (tmp_path / "train.csv").write_text("video,label\na.mp4,stir\na.mp4,cut\na.mp4,wash\n")
    (tmp_path / "val.csv").write_text("video,label\na.mp4,wash\n")  # a subset: must not be renumbered
    out = tmp_path / "run"
    common = [f"data={tmp_path / 'train.csv'}", f"out_dir={out}", "model=toy", "clip_frames=2", "size=16", "batch_size=1", "epochs=1"]
    code, text = run_cli("train", "memvit_tiny_synthetic", *common, "--quiet")
    assert code == 0, text
    assert json.loads((out / "classes.json").read_text()) == ["cut", "stir", "wash"]
    config = load_config("memvit_tiny_synthetic", [*common, f"val_data={tmp_path / 'val.csv'}"])
    sources = build_sources(config, saved_in=[str(out)])
    assert sources.val.targets(0)["label"].item() == 2
    code, text = run_cli("eval", "memvit_tiny_synthetic", *common, f"val_data={tmp_path / 'val.csv'}", "--json")
    assert code == 0, text
    assert "top1" in json.loads(text.strip().splitlines()[-1])


def test_train_in_a_terminal_draws_a_bar(tmp_path):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    command = [longvid_script(), "train", "memvit_tiny_synthetic", f"out_dir={tmp_path / 'run'}", "max_steps=2"]
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path)
    os.close(slave)
    printed = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        printed += chunk
    os.close(master)
    assert process.wait(timeout=120) == 0, printed
    text = printed.decode()
    assert "trained 2 steps" in text and "2/2" in text and "\r" in text  # a tqdm bar, redrawn in place


def test_memory_ablation_fields_reach_the_model(run_cli, tmp_path):
    """``compress_stride`` and ``memory_blocks`` (the paper's Tables 1b/1c) as run-config fields:
    passed to the model like memory_len; a bad value is one line before any work."""
    import torch

    from longvid.memvit.config import get_config
    from longvid.memvit.run import build_model

    fields = ["compress_stride=2,1,1", "memory_blocks=1,3"]
    config = load_config("memvit_tiny_k400", ["data=synthetic", *fields])
    assert (config.compress_stride, config.memory_blocks) == ((2, 1, 1), (1, 3))
    model = build_model(config).eval()
    assert model.config == get_config("memvit_tiny", num_frames=4, crop_size=32, num_classes=400, head="linear",
                                      compress_stride=(2, 1, 1), memory_blocks=(1, 3))  # fmt: skip
    assert model.reading_blocks == (1, 3)
    default = build_model(load_config("memvit_tiny_k400", ["data=synthetic"])).eval()
    assert default.reading_blocks == (0, 2) and default.config.compress_stride == (4, 2, 2)
    clip = torch.randn(1, 3, 4, 32, 32)
    shapes = []
    for m in (default, model):
        state = m.init_state(1)
        for _ in range(2):
            _, state = m(clip, state)
        shapes.append(tuple(state.state_dict()["keys.0.compressed"].shape))
    assert shapes[0][2] < shapes[1][2]  # a smaller stride keeps more tokens per memory entry

    out = tmp_path / "run"
    small = ["data=synthetic", "synthetic_videos=4", "synthetic_clips=2", "num_classes=4", "--quiet"]
    code, text = run_cli("train", "memvit_tiny_k400", *small, *fields, "max_steps=1", f"out_dir={out}")
    assert code == 0 and "trained 1 steps" in text, text
    code, text = run_cli("eval", "memvit_tiny_k400", *small, *fields, f"out_dir={out}")
    assert code == 0 and "top1" in text, text
    for bad, message in (("compress_stride=4,2", "compress_stride must be three strides T,H,W >= 1"),
                         ("memory_blocks=1,1", "memory_blocks must be distinct block indices >= 0"),
                         ("memory_blocks=9", "memory_blocks [9] outside 0..3")):  # fmt: skip
        code, text = run_cli("train", "memvit_tiny_k400", *small, bad, "max_steps=1", f"out_dir={tmp_path / 'bad'}")
        assert code == 1 and text.count("\n") == 1 and message in text, text
        assert not (tmp_path / "bad" / "log.jsonl").exists()
