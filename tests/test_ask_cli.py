import json

import pytest
import torch

from longvid.cli import main
from longvid.malmm import build_model
from longvid.core.tiny import save_tiny_llm, save_tiny_vision
from longvid.video import write_video

torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared machine


def test_ask_malmm_end_to_end(tmp_path, capsys):
    video = str(tmp_path / "v.mp4")
    write_video(video, (torch.rand(12, 48, 64, 3) * 255).to(torch.uint8), fps=6)
    vision = save_tiny_vision(str(tmp_path / "vision"))
    llm = save_tiny_llm(str(tmp_path / "llm"))
    model = build_model("malmm_tiny", encoder=vision, llm=llm, qformer_tokenizer=llm)
    from safetensors.torch import save_file

    save_file(model.trainable_state_dict(), str(tmp_path / "w.safetensors"))
    args = ["ask", video, "what color is the circle", "--model", "malmm", "--preset", "malmm_tiny", "--encoder", vision,
            "--llm", llm, "--qformer-tokenizer", llm, "--checkpoint", str(tmp_path / "w.safetensors"), "--frames", "4"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 1 and "[malmm: 4 frames" in err
    assert main(args[:-2] + ["--fps", "3", "--time", "1.0", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["frames_seen"] == 4 and record["memory_tokens"] == 4 * 17 + 4 * 4 * (8 + 6)  # L=5 not reached
    assert main(args + ["--time", "60", "--json"]) == 0  # past the 2 s video: still 4 frames spread over all of it
    captured = capsys.readouterr()
    assert json.loads(captured.out)["frames_seen"] == 4  # was: 1 frame, spread as if the video were 60 s long
    warnings = [line for line in captured.err.replace("\r", "\n").splitlines() if line.startswith("longvid:")]
    assert warnings == [f"longvid: warning: {video}: --time 60 s is past the end of the video (2.00 s); the answer sees the whole video"]


def test_ask_errors(tmp_path, capsys):
    video = str(tmp_path / "v.mp4")
    write_video(video, torch.zeros(2, 16, 16, 3, dtype=torch.uint8), fps=2)
    assert main(["ask", video, "q"]) == 1
    assert "needs --encoder and --llm" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage_error:  # argparse: usage + one error line, exit 2
        main(["ask", video, "q", "--model", "nope"])
    assert usage_error.value.code == 2
    assert main(["ask", video, "q", "--model", "malmm", "--encoder", str(tmp_path / "none"), "--llm", "x", "--allow-untrained"]) == 1
    assert "cannot load image encoder" in capsys.readouterr().err
    assert main(["ask", video, "q", "--model", "malmm", "--encoder", str(tmp_path / "none"), "--llm", "x"]) == 1
    assert "ask --model malmm needs trained weights (--weights FILE)" in capsys.readouterr().err
    (tmp_path / "released.pth").write_bytes(b"\x80\x04not a pickle")
    assert main(["ask", video, "q", "--model", "malmm", "--encoder", str(tmp_path / "none"), "--llm", "x",
                 "--weights", str(tmp_path / "released.pth")]) == 1  # read before the encoder loads
    assert capsys.readouterr().err == (f"longvid: error: {tmp_path / 'released.pth'}: cannot read as a weights-only torch "
                                       f"checkpoint, damaged or not only tensors? (Unsupported operand 110)\n")


@pytest.mark.parametrize("option, message", [
    (["--frames", "0"], "--frames must be >= 1, got 0"),
    (["--keep-every", "0"], "--keep-every must be >= 1, got 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
    (["--fps", "0"], "--fps must be > 0, got 0"),
    (["--fps", "nan"], "--fps must be > 0, got nan"),
    (["--time", "-1"], "--time must be >= 0 seconds, got -1"),
])
def test_bad_ask_options_fail_before_the_encoder_loads(tmp_path, capsys, option, message):
    # a missing encoder path: had it been loaded first, its error would show instead
    assert main(["ask", str(tmp_path / "v.mp4"), "q", "--encoder", str(tmp_path / "none"), "--llm", "x", "--allow-untrained", *option]) == 1
    assert capsys.readouterr().err == f"longvid: error: {message}\n"
