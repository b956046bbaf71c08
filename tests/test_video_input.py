"""The video commands as a new user types them: the installed ``longvid`` script, bad
input as one-line errors, and the stream's record of a damaged video."""

import json

import pytest
import torch

import longvid
import video_files
from longvid.cli import main
from longvid.predict import StreamSettings, stream_predictions


@pytest.fixture(scope="module")
def phone_video(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("phone") / "portrait.mp4")
    video_files.write_rotated(path, -90, count=30)
    return path


# -- the installed script ----------------------------------------------------------------------


def test_script_info(run_cli, videos, phone_video):
    code, printed = run_cli("info", videos["cfr"], "-T", "4", "--tau", "3")
    assert code == 0 and "longvid:" not in printed
    for expected in ["5.000 s", "150 (header)", "64x48", "h264", "clips (T=4, tau=3, pad)  13"]:
        assert expected in printed
    code, printed = run_cli("info", phone_video, "--count")
    assert code == 0 and "longvid:" not in printed
    assert "48x64 (as displayed; coded 64x48, rotation -90)" in printed and "30 (counted)" in printed


def test_script_clips(run_cli, videos):
    code, printed = run_cli("clips", videos["cfr"], "-T", "4", "--tau", "1", "--start", "2", "--end", "3", "--size", "32")
    lines = printed.splitlines()
    assert code == 0 and len(lines) == 8  # frames 60..89 in clips of 4, the last one padded
    assert lines[0].startswith("clip    0     2.000-   2.133 s  frames (3, 4, 32, 32)  valid  4")
    assert lines[-1].startswith("clip    7     2.933-   3.000 s") and "valid  2" in lines[-1]


def test_script_clips_of_a_damaged_video_warns_in_one_line(run_cli, videos):
    code, printed = run_cli("clips", videos["truncated"], "-T", "8", "--tau", "2", "--size", "32")
    lines = printed.splitlines()
    assert code == 0 and sum(line.startswith("clip ") for line in lines) >= 3
    assert [line for line in lines if not line.startswith("clip ")] == [lines[-1]]
    assert lines[-1].startswith("longvid: warning: ") and "damaged video" in lines[-1]


def test_script_demo_video(run_cli):
    code, printed = run_cli("demo-video", "recall.mp4", "--seconds", "4")
    assert code == 0 and printed.startswith("wrote recall.mp4: 64 frames, 160x120 at 16 fps\ncue: the ")
    code, printed = run_cli("info", "recall.mp4", "--count")
    assert code == 0 and "64 (counted)" in printed


def test_script_demo(run_cli, tmp_path):
    code, printed = run_cli("demo", "--seconds", "3")
    assert code == 0 and "longvid:" not in printed
    assert (tmp_path / "longvid-demo" / "demo.mp4").exists()
    assert "clips (T=16, tau=4, pad)  2" in printed and printed.count("frames (3, 16, 224, 224)") == 2


def test_script_bad_input_is_one_line_and_exit_1(run_cli, tmp_path):
    assert run_cli("clips", "no-such-video.mp4") == (1, "longvid: error: no-such-video.mp4: no such file\n")
    assert run_cli("info", tmp_path, "-T", "0") == (1, "longvid: error: -T/--clip-frames must be >= 1, got 0\n")


# -- bad input: one line, exit 1, never a traceback ---------------------------------------------


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, videos):
    folder = tmp_path_factory.mktemp("bad")
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    return {**videos, "empty": str(empty)}


BAD_INPUTS = [
    (["info", "{missing}"], "{missing}: no such file"),
    (["info", "{folder}"], "{folder}: is a directory, not a video file"),
    (["info", "{text}"], "{text}: not a readable video file (Invalid data found when processing input)"),
    (["info", "{empty}"], "{empty}: not a readable video file (Invalid data found when processing input)"),
    (["info", "{audio}"], "{audio}: audio-only file: it has no video stream"),
    (["info", "{cfr}", "-T", "0"], "-T/--clip-frames must be >= 1, got 0"),
    (["info", "{cfr}", "--tau", "0"], "--tau must be >= 1, got 0"),
    (["info", "{cfr}", "--fps", "0"], "--fps must be a number > 0, got 0"),
    (["info", "{cfr}", "--fps", "nan"], "--fps must be a number > 0, got nan"),
    (["clips", "{missing}"], "{missing}: no such file"),
    (["clips", "{text}"], "{text}: not a readable video file (Invalid data found when processing input)"),
    (["clips", "{garbage}"], "{garbage}: no decodable video frames (Invalid data found when processing input)"),
    (["clips", "{cfr}", "-T", "0"], "-T/--clip-frames must be >= 1, got 0"),
    (["clips", "{cfr}", "--tau", "-1"], "--tau must be >= 1, got -1"),
    (["clips", "{cfr}", "--fps", "-2"], "--fps must be a number > 0, got -2"),
    (["clips", "{cfr}", "--size", "0"], "--size must be >= 1, got 0"),
    (["clips", "{cfr}", "--start", "-1"], "--start must be a time >= 0 seconds, got -1"),
    (["clips", "{cfr}", "--start", "inf"], "--start must be a time >= 0 seconds, got inf"),
    (["clips", "{cfr}", "--start", "3", "--end", "2"], "--end must be a time after --start (3 s), got 2"),
    (["clips", "{cfr}", "--end", "0"], "--end must be a time after --start (0 s), got 0"),
    (["clips", "{cfr}", "--start", "60"], "{cfr}: start 60 s is past the end of the video (5.00 s)"),
    (["clips", "{cfr}", "--start", "4.99"], "{cfr}: no video frames at or after 4.99 s (the video ends at 5.00 s)"),
    (["clips", "{cfr}", "--start", "2.001", "--end", "2.02"], "{cfr}: no video frames between 2.001 s and 2.02 s"),
    (["clips", "{cfr}", "--tail", "drop", "-T", "64"], "{cfr}: not one whole clip of T=64 (tau=4) in the video; --tail pad yields the partial one"),
]


@pytest.mark.parametrize("argv,message", BAD_INPUTS, ids=[" ".join(a).replace("{", "").replace("}", "") for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_1(bad_files, argv, message, capsys):
    assert main([arg.format(**bad_files) for arg in argv]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"longvid: error: {message.format(**bad_files)}\n"
    assert "clip " not in captured.out


# -- the stream's record of a damaged video -----------------------------------------------------


def test_stream_marks_a_partly_decoded_video_in_its_done_record(videos):
    torch.manual_seed(0)
    model = longvid.build_model("memvit_tiny").eval()
    settings = StreamSettings(clip_frames=8, stride=2, size=32, topk=1, background=False)
    with pytest.warns(UserWarning, match="damaged video"):
        records = list(stream_predictions(model, [videos["truncated"], videos["cfr"]], settings))
    damaged, clean = [r for r in records if r.get("status") == "done"]
    last_clip = [r for r in records if r["video"] == videos["truncated"] and "clip" in r][-1]
    assert damaged["damaged"] is True and last_clip["start"] <= damaged["decoded_until"] < last_clip["end"]
    assert "damaged" not in clean and "decoded_until" not in clean
    json.dumps(damaged)  # a JSON line as written
