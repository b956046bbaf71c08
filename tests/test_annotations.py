"""Annotation parsers on real-format rows, and the sequential stream sampler."""

import json
import os

import numpy as np
import pytest

from longvid.data.annotations import AnnotationError, load_annotations, load_kinetics_folder, parse_timestamp
from longvid.data.sources import FileVideos
from longvid.engine.sampler import StreamSampler
from longvid.video import write_video


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def touch_videos(folder, *names):
    for name in names:
        write(folder / name, "x")


# -- generic format ----------------------------------------------------------------------


def test_generic_csv_names_multilabel_and_metadata(tmp_path):
    touch_videos(tmp_path / "v", "a.mp4", "b.mp4")
    ann = write(
        tmp_path / "ann.csv",
        "video,label,start,end,question,answer,source\n"
        "v/a.mp4,cook;eat,1.5,4,what?,soup,yt\n"
        "v/b.mp4,cook,,,,,\n",
    )
    result = load_annotations(ann)
    assert result.classes == {"label": ["cook", "eat"]}
    a, b = result.samples
    assert a.video == str(tmp_path / "v" / "a.mp4")
    assert a.label == (0, 1) and (a.start, a.end) == (1.5, 4.0)
    assert a.meta == {"question": "what?", "answer": "soup", "source": "yt"} and a.line == 2
    assert b.label == (0,) and b.start is None and b.meta == {} and b.line == 3


def test_generic_json_and_jsonl_with_indices_and_grounding(tmp_path):
    touch_videos(tmp_path, "a.mp4")
    items = [{"video": "a.mp4", "label": [3, 1]}, {"video": "a.mp4", "query": "door opens", "target_start": "2", "target_end": 5}]
    write(tmp_path / "ann.json", json.dumps(items))
    write(tmp_path / "ann.jsonl", "\n".join(json.dumps(i) for i in items) + "\n")
    for name in ("ann.json", "ann.jsonl"):
        result = load_annotations(tmp_path / name)
        assert result.classes == {}
        assert result[0].label == (3, 1)
        assert result[1].labels == {} and result[1].meta == {"query": "door opens", "target_start": 2.0, "target_end": 5.0}


@pytest.mark.parametrize(
    "rows, message",
    [
        ("a.mp4,x,abc,\n", "ann.csv:3: start must be a number"),
        ("a.mp4,x,5,2\n", "ann.csv:3: end 2 must be after start 5"),
        ("missing.mp4,x,,\n", "ann.csv:3: video not found"),
        (",x,,\n", "ann.csv:3: missing 'video'"),
        ("a.mp4,x;,,\n", "ann.csv:3: empty label"),
        ("a.mp4,x,,,extra\n", "ann.csv:3: more fields than the header"),
    ],
)
def test_generic_bad_rows_name_their_line(tmp_path, rows, message):
    touch_videos(tmp_path, "a.mp4")
    ann = write(tmp_path / "ann.csv", "video,label,start,end\na.mp4,x,,\n" + rows)
    with pytest.raises(AnnotationError, match=message.replace("(", r"\(")):
        load_annotations(ann)


def test_generic_unknown_class_and_bad_files(tmp_path):
    touch_videos(tmp_path, "a.mp4")
    ann = write(tmp_path / "ann.csv", "video,label\na.mp4,cook\na.mp4,fly\n")
    with pytest.raises(AnnotationError, match="ann.csv:3: unknown class 'fly'"):
        load_annotations(ann, classes=["cook"])
    with pytest.raises(AnnotationError, match="no such annotation file"):
        load_annotations(tmp_path / "nope.csv")
    write(tmp_path / "bad.jsonl", '{"video": "a.mp4"}\n{oops\n')
    with pytest.raises(AnnotationError, match="bad.jsonl:2: invalid JSON"):
        load_annotations(tmp_path / "bad.jsonl")
    write(tmp_path / "ann.txt", "")
    with pytest.raises(AnnotationError, match="unknown annotation format"):
        load_annotations(tmp_path / "ann.txt")


# -- timestamps ------------------------------------------------------------------------------


def test_parse_timestamp():
    assert parse_timestamp("00:10:01.5") == pytest.approx(601.5)
    assert parse_timestamp("01:00:05.50") == pytest.approx(3605.5)
    with pytest.raises(ValueError, match=r"bad timestamp '00:00:0.14'"):
        parse_timestamp("00:00:0.14")


# -- Kinetics folders ------------------------------------------------------------------------


def test_kinetics_folder(tmp_path):
    touch_videos(tmp_path, "dancing/b.mp4", "dancing/a.mkv", "abseiling/x.mp4", "abseiling/notes.txt")
    result = load_kinetics_folder(tmp_path)
    assert result.classes == {"label": ["abseiling", "dancing"]}
    assert [(os.path.relpath(s.video, tmp_path), s.label) for s in result.samples] == [
        ("abseiling/x.mp4", (0,)), ("dancing/a.mkv", (1,)), ("dancing/b.mp4", (1,))
    ]  # fmt: skip
    with pytest.raises(AnnotationError, match="no videos found"):
        load_kinetics_folder(tmp_path / "abseiling")


def test_file_videos_stream_real_clips(tmp_path):
    frames = [np.full((32, 32, 3), 10 * i, dtype=np.uint8) for i in range(12)]
    write_video(tmp_path / "a.mp4", frames, fps=10)
    touch = write(tmp_path / "ann.csv", "video,label,start\na.mp4,1,\na.mp4,0,0.4\n")
    ann = load_annotations(touch)
    source = FileVideos(ann.samples, clip_frames=2, stride=2, short_side=None, crop=None, mean=None, std=None)
    assert [source.num_clips(0), source.num_clips(1)] == [3, 2]
    steps = list(StreamSampler(source, batch_size=1, shuffle=False, clips_per_video=2))
    assert [b.is_first.item() for b in steps] == [True, False, True, True, False]
    assert steps[0].clips.shape == (1, 3, 2, 32, 32)
    # clip 2 of video 0 (frames 8, 10) starts its own segment: read from the file's clip 2
    assert steps[2].clips[0, 0, :, 0, 0].mul(255).round().tolist() == pytest.approx([80, 100], abs=3)
    assert steps[3].clips[0, 0, 0, 0, 0].mul(255).round().item() == pytest.approx(40, abs=3)
    assert [b.targets["label"].item() for b in steps] == [1, 1, 1, 0, 0]
