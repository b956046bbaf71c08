import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from longvid.cli import main
from longvid.models.tiny import save_tiny_llm, save_tiny_vision
from longvid.video import write_video


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ask")
    frames = [np.full((32, 32, 3), 20 * i % 256, dtype=np.uint8) for i in range(20)]
    video = str(root / "v.mp4")
    write_video(video, frames, fps=1.0)  # 20 s at 1 fps
    return video, save_tiny_vision(str(root / "vision")), save_tiny_llm(str(root / "llm"), hidden=64), root


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ask_rewind_breakpoint_and_buffer(setup, capsys):
    video, vision, llm, root = setup
    common = ["--model", "rewind", "--preset", "rewind_tiny", "--vision", vision, "--llm", llm, "--max-new-tokens", "2"]
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


def test_ask_errors(setup, capsys, tmp_path):
    video, vision, llm, _ = setup
    common = ["--preset", "rewind_tiny", "--vision", vision, "--llm", llm]
    code, _, err = run(capsys, "ask", str(tmp_path / "missing.mp4"), "q", *common)
    assert code == 1 and "no such file" in err
    code, _, err = run(capsys, "ask", video, "q", *common, "--weights", str(tmp_path / "w.safetensors"))
    assert code == 1 and "no such weights file" in err
    save_file({"separator": torch.zeros(64)}, str(tmp_path / "bad.safetensors"))
    code, _, err = run(capsys, "ask", video, "q", *common, "--weights", str(tmp_path / "bad.safetensors"))
    assert code == 1 and "do not match the model" in err
    code, _, err = run(capsys, "ask", video, "q", *common, "--preset", "rewind_big")
    assert code == 1 and "unknown ReWind preset" in err
