import json
import subprocess
import sys

import pytest

from longvid.cli import build_parser, main


def test_every_command_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"info", "clips", "demo", "demo-video"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: longvid" in capsys.readouterr().out


def test_info_prints_the_facts(videos, capsys):
    assert main(["info", videos["cfr"], "-T", "4", "--tau", "3"]) == 0
    out = capsys.readouterr().out
    for expected in ["5.000 s", "30.000", "150 (header)", "64x48", "h264", "clips (T=4, tau=3, pad)  13"]:
        assert expected in out
    assert main(["info", videos["cfr"], "--json", "--count"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["num_frames"] == 150 and record["frames_counted"] and record["clips"] == 3


@pytest.mark.parametrize("name", ["missing", "folder", "text", "audio", "garbage"])
def test_bad_video_is_one_line_and_nonzero(videos, name, capsys):
    command = ["clips", videos[name]] if name == "garbage" else ["info", videos[name]]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert err.startswith("longvid: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_bad_option_value_is_one_line(videos, capsys):
    assert main(["clips", videos["cfr"], "-T", "0"]) == 1
    assert capsys.readouterr().err == "longvid: error: -T/--clip-frames must be >= 1, got 0\n"


def test_real_process_exit_code_and_no_traceback(videos):
    result = subprocess.run([sys.executable, "-m", "longvid", "info", videos["text"]], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("longvid: error:") and "Traceback" not in result.stderr


def test_truncated_video_warns_in_one_line(videos, capsys):
    assert main(["clips", videos["truncated"], "-T", "8", "--tau", "2", "--size", "32"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("clip ") >= 3
    warning_lines = [line for line in captured.err.splitlines() if "damaged video" in line]
    assert len(warning_lines) == 1 and warning_lines[0].startswith("longvid: warning:")


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--seconds", "3"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "clips (T=16, tau=4, pad)  2" in out
    assert out.count("frames (3, 16, 224, 224)") == 2


def test_mistyped_arguments_are_one_line(capsys):
    for argv in (["clips", "x.mp4", "-T", "abc"], ["info"], ["nosuch"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ": error: " in err and "--help" in err
