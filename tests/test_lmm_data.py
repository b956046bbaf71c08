"""MA-LMM data sets: the released annotation layouts (samples in shared/reference/formats), frame sampling."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from longvid.malmm.datasets import find_videos, read_dataset
from longvid.malmm.frames import read_uniform_frames
from longvid.malmm.datasets import LVU_TASKS, json_entries, process_caption, process_question
from longvid.errors import LongvidError
from longvid.video import write_video

FORMATS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "formats")
SHARED = FORMATS if os.path.isdir(FORMATS) else "/work/shared/reference/formats"


def sample(name: str) -> str:
    path = os.path.join(SHARED, name)
    if not os.path.exists(path):
        pytest.skip(f"reference sample {name} not available")
    return path


def test_json_entries_give_each_key_its_line(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{\n  "x": {"a": 1},\n\n  "y{\\"}": [1,\n 2],\n  "z": 3\n}\n')
    assert json_entries(str(path)) == [("x", {"a": 1}, 2), ('y{"}', [1, 2], 4), ("z", 3, 6)]
    path.write_text('{\n "x": 1,\n "y" 2}')
    with pytest.raises(LongvidError, match=r"a.json:3: expected ':'"):
        json_entries(str(path))
    path.write_text("[1, 2]")
    with pytest.raises(LongvidError, match=r"a.json:1: expected a JSON object"):
        json_entries(str(path))


def test_lvu_released_file_windows_match_malmm():
    """Each (video, labelled task) gives windows starting at 0, stride, 2*stride ... while a whole
    window fits (MA-LMM's LVUCLSDataset), computed here by a plain loop."""
    path = sample("lvu_train.sample.json")
    items = read_dataset("lvu", path, history=100, stride=20)
    with open(path) as f:
        raw = json.load(f)
    expected = []
    for vid, entry in raw.items():
        for task in LVU_TASKS:
            if task in entry:
                starts = [0] + list(range(20, entry["duration"] - 100 + 1, 20))
                expected += [(vid, task, s, min(s + 99, entry["duration"]), entry[task]) for s in starts]
    got = [(i.video, i.group, i.start, i.end, i.answer) for i in items]
    assert sorted(got) == sorted(expected) and len(got) == len(expected)
    assert {i.prompt for i in items if i.group == "way_speaking"} == {"what is the way_speaking of the movie?"}


@pytest.mark.parametrize(
    "dataset, name, prompt",
    [
        ("breakfast", "breakfast_val.sample.json", "what type of breakfast is shown in the video?"),
        ("msvd_qa", "msvd_qa_test.sample.json", None),
        ("activitynet_qa", "activitynet_qa_test.sample.json", None),
        ("youcook2", "youcook2_cap_test.sample.json", "what does the video describe?"),
    ],
)
def test_released_samples_read(dataset, name, prompt):
    path = sample(name)
    with open(path) as f:
        raw = json.load(f)
    items = read_dataset(dataset, path)
    assert [i.key for i in items] == list(raw)
    for item, entry in zip(items, raw.values()):
        if prompt is not None:
            assert item.prompt == prompt
        if dataset.endswith("_qa"):
            assert item.prompt == f"Question: {process_question(entry['question'])} Short answer:"
            assert item.answer == process_question(entry["answer"])
            assert item.video == entry["video"]
        if dataset == "breakfast":
            assert item.answer == entry["class_name"]
        if dataset == "youcook2":
            assert (item.video, item.start, item.end) == (entry["video"], entry["start_time"], entry["end_time"])


def test_coin_reads_the_chosen_subset(tmp_path):
    path = tmp_path / "COIN.json"
    path.write_text(json.dumps({
        "a1": {"subset": "training", "duration": 10, "target": "Make Coffee"},
        "b2": {"subset": "val", "duration": 10, "target": "Change Tire"},
        "AfiVmAjfTNs": {"subset": "val", "duration": 10, "target": "skipped by MA-LMM"},
    }, indent=1))  # fmt: skip
    assert [(i.key, i.answer) for i in read_dataset("coin", str(path), split="val")] == [("b2", "change tire")]
    path.write_text('{\n "a": {"subset": "val"}\n}')
    with pytest.raises(LongvidError, match=r"COIN.json:2: entry 'a' has no 'target' field"):
        read_dataset("coin", str(path), split="val")


def test_breakfast_leaves_out_the_videos_malmm_skips(tmp_path):
    path = tmp_path / "val.json"
    path.write_text(json.dumps({"P28-cam01-P28_cereals": {"class_name": "cereal"}, "P03-cam01-P03_tea": {"class_name": "tea"}}))
    assert [i.key for i in read_dataset("breakfast", str(path))] == ["P03-cam01-P03_tea"]


def test_normalisation_is_lavis():
    assert process_question('What is "it" (here)?!  Now.') == "what is it here? now"  # LAVIS keeps "?"
    assert process_caption("Add the Salt; stir!") == "add the salt stir"


def test_find_videos_summary(tmp_path):
    items = read_dataset("msvd_qa", sample("msvd_qa_test.sample.json"))
    (tmp_path / "jfrrO5K_vKM_55_65.avi").write_bytes(b"x")
    summary = find_videos(items, str(tmp_path))
    assert summary.found == {"jfrrO5K_vKM_55_65": str(tmp_path / "jfrrO5K_vKM_55_65.avi")} and summary.missing == ()
    shutil.rmtree(tmp_path)
    os.makedirs(tmp_path)
    summary = find_videos(items, str(tmp_path))
    assert summary.line("qa.json") == "qa.json: 0 videos found, 1 missing (jfrrO5K_vKM_55_65)"


def test_uniform_frames_are_the_nearest_to_linspace(tmp_path):
    """Frame k of a 10 fps video has gray level 3k; the picked frames are round(linspace(first, last, T))."""
    path = str(tmp_path / "v.mp4")
    write_video(path, (np.full((32, 48, 3), 3 * i, np.uint8) for i in range(60)), fps=10, codec="ffv1", pix_fmt="yuv444p")
    for start, end, count in ((None, None, 7), (1.0, 3.5, 5), (2.0, 100.0, 4)):
        frames = read_uniform_frames(path, count, 16, start, end)
        first = 0 if start is None else int(start * 10)
        last = 59 if end is None else min(int(end * 10), 59)
        expected = np.rint(np.linspace(first, last, count)).astype(int)
        got = [int(round(float(f.float().mean()) / 3)) for f in frames]
        assert frames.shape == (count, 3, 16, 16)
        assert np.abs(np.array(got) - expected).max() <= 1 and got[0] == first and got[-1] == last


def test_segment_times_draw_one_time_per_segment():
    import torch

    from longvid.malmm.frames import segment_times

    times = segment_times(2.0, 12.0, 5, torch.Generator().manual_seed(0))
    assert all(2.0 + 2 * i <= float(t) < 2.0 + 2 * (i + 1) for i, t in enumerate(times))
    assert torch.equal(times, segment_times(2.0, 12.0, 5, torch.Generator().manual_seed(0)))
    assert not torch.equal(times, segment_times(2.0, 12.0, 5, torch.Generator().manual_seed(1)))


def test_random_resized_crop_is_one_crop_for_all_frames():
    """Frame t = a pattern + 10 t: every output frame must be the first one + 10 t (same crop and flip)."""
    import torch

    from longvid.malmm.frames import random_resized_crop

    pattern = torch.arange(36 * 64).view(36, 64) % 97
    frames = torch.stack([(pattern + 10 * t).expand(3, 36, 64) for t in range(3)]).to(torch.uint8)
    outputs = []
    for seed in range(8):
        out = random_resized_crop(frames, 16, generator=torch.Generator().manual_seed(seed))
        assert out.shape == (3, 3, 16, 16)
        assert all(torch.equal(out[t].int() - out[0].int(), torch.full((3, 16, 16), 10 * t)) for t in range(3))
        assert torch.equal(out, random_resized_crop(frames, 16, generator=torch.Generator().manual_seed(seed)))
        outputs.append(out)
    assert len({tuple(o.flatten().tolist()) for o in outputs}) >= 4  # the crops differ between draws
