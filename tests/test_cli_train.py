"""``longvid train`` / ``longvid eval`` end to end on generated clips with the toy model."""

import json

from longvid.cli import main

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
