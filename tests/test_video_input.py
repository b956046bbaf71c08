"""The video commands as a new user types them: the installed ``longvid`` script, bad
input as one-line errors, and the stream's record of a damaged video."""

import json

import pytest
import torch

import longvid
from longvid.predict import StreamSettings, stream_predictions


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
