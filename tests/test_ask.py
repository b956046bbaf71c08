import json
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import longvid_script
from longvid.cli import main
from longvid.core.tiny import save_tiny_llm, save_tiny_vision
from longvid.video import write_video


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ask")
    frames = [np.full((32, 32, 3), 20 * i % 256, dtype=np.uint8) for i in range(20)]
    video = str(root / "v.mp4")
    write_video(video, frames, fps=1.0)  # 20 s at 1 fps
    return video, save_tiny_vision(str(root / "vision")), save_tiny_llm(str(root / "llm"), hidden=64), root


def longvid_lines(err: str) -> list[str]:
    """What longvid itself wrote to stderr (transformers draws its "Loading weights" bars there too)."""
    return [line for line in err.replace("\r", "\n").splitlines() if line.startswith("longvid:")]


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ask_rewind_breakpoint_and_buffer(setup, capsys):
    video, vision, llm, root = setup
    common = ["--model", "rewind", "--preset", "rewind_tiny", "--vision", vision, "--llm", llm, "--max-new-tokens", "2",
              "--allow-untrained"]
    code, out, _ = run(capsys, "ask", video, "what color is the square", *common, "--json")
    whole = json.loads(out)
    assert code == 0 and whole["frames_seen"] == 20 and whole["memory_tokens"] == 40
    assert len(whole["selected_times"]) == 2 and whole["buffer_ram_bytes"] > 0
    code, out, _ = run(capsys, "ask", video, "what color is the square", *common, "--json", "--time", "7",
                       "--spill-dir", str(root / "spill"))
    early = json.loads(out)
    assert early["frames_seen"] == 8 and early["memory_tokens"] == 16 and max(early["selected_times"]) <= 7
    assert early["buffer_ram_bytes"] == 0 and early["buffer_disk_bytes"] > 0
    code, out, err = run(capsys, "ask", video, "what color", *common, "--time", "3")
    assert code == 0 and "4 frames (up to 3 s), 8 memory tokens" in err
    code, out, err = run(capsys, "ask", video, "what color", *common, "--time", "100", "--json")
    assert code == 0 and json.loads(out)["frames_seen"] == 20
    assert longvid_lines(err) == [f"longvid: warning: {video}: --time 100 s is past the end of the video (20.00 s); the answer sees the whole video"]


def test_ask_refuses_untrained_weights_unless_allowed(setup, capsys):
    video, vision, llm, _ = setup
    code, out, err = run(capsys, "ask", video, "what color", "--model", "rewind", "--preset", "rewind_tiny", "--vision", vision, "--llm", llm)
    assert code == 1 and out == ""  # was: an answer from random weights, e.g. "to where where where"
    assert err == ("longvid: error: ask --model rewind needs trained weights (--weights FILE): without them the memory, "
                   "projections and LoRA adapters are random and the answer is noise (--allow-untrained runs it anyway)\n")


def one_error_line(err: str) -> str:
    (line,) = longvid_lines(err)
    assert line.startswith("longvid: error: ") and "Traceback" not in err, err
    return line


def test_ask_errors(setup, capsys, tmp_path):
    video, vision, llm, _ = setup
    common = ["--model", "rewind", "--preset", "rewind_tiny", "--vision", vision, "--llm", llm]
    code, _, err = run(capsys, "ask", str(tmp_path / "missing.mp4"), "q", *common, "--allow-untrained")
    assert code == 1 and "no such file" in err
    code, _, err = run(capsys, "ask", video, "q", *common, "--weights", str(tmp_path / "w.safetensors"))
    assert code == 1 and "no such weights file" in err
    bad = str(tmp_path / "bad.safetensors")
    save_file({"separator": torch.zeros(64)}, bad)
    code, _, err = run(capsys, "ask", video, "q", *common, "--weights", bad)
    assert code == 1 and one_error_line(err).startswith(f"longvid: error: {bad}: ReWind weights do not match the model")
    code, _, err = run(capsys, "ask", video, "q", *common, "--preset", "rewind_big", "--allow-untrained")
    assert code == 1 and "unknown ReWind preset" in err


def test_ask_damaged_weights_are_one_line_errors_naming_the_file(setup, capsys, tmp_path):
    video, vision, llm, _ = setup
    common = ["--model", "rewind", "--preset", "rewind_tiny", "--vision", vision, "--llm", llm]
    good = str(tmp_path / "good.safetensors")
    save_file({"separator": torch.zeros(64)}, good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(open(good, "rb").read()[:100])
    code, _, err = run(capsys, "ask", video, "q", *common, "--weights", str(truncated))
    assert code == 1 and one_error_line(err).startswith(f"longvid: error: {truncated}: not a readable safetensors file")
    unpicklable = tmp_path / "released.pyth"
    unpicklable.write_bytes(b"\x80\x04not a pickle")
    code, _, err = run(capsys, "ask", video, "q", *common, "--weights", str(unpicklable))
    assert code == 1 and one_error_line(err).startswith(f"longvid: error: {unpicklable}: cannot read as a weights-only torch checkpoint, damaged")


def test_installed_script_answers_and_refuses_as_a_user_sees_it(setup, tmp_path):
    from longvid.rewind import build_model, trainable_state_dict

    video, vision, llm, _ = setup
    weights = str(tmp_path / "rewind.safetensors")
    model = build_model("rewind_tiny", encoder=vision, llm=llm)
    save_file({k: v.contiguous() for k, v in trainable_state_dict(model).items()}, weights)
    common = [longvid_script(), "ask", video, "what color is the square", "--model", "rewind", "--preset", "rewind_tiny",
              "--vision", vision, "--llm", llm, "--max-new-tokens", "2"]

    def user_runs(*extra):
        out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        with open(out, "w") as stdout, open(err, "w") as stderr:
            code = subprocess.run([*common, *extra], stdout=stdout, stderr=stderr, timeout=300).returncode
        return code, out.read_text(), err.read_text()

    code, out, err = user_runs("--weights", weights, "--time", "7")
    assert code == 0 and len(out.splitlines()) == 1  # the answer
    assert longvid_lines(err) == [] and "Traceback" not in err and "\r" not in err  # no library progress bars in a log
    assert err.splitlines()[-1].startswith("[rewind: 8 frames (up to 7 s), 16 memory tokens")
    code, out, err = user_runs()
    assert code == 1 and out == ""
    assert one_error_line(err).startswith("longvid: error: ask --model rewind needs trained weights")
