"""Annotation parsers on real-format rows, and the sequential stream sampler."""

import json
import os

import numpy as np
import pytest

from longvid.engine.sampler import StreamSampler
from longvid.video import write_video
from longvid.data.annotations import (
    AnnotationError,
    FileVideos,
    ava_boxes,
    load_annotations,
    load_ava,
    load_epic_kitchens,
    load_kinetics_folder,
    load_lvu,
    parse_timestamp,
)


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


# -- EPIC-Kitchens-100 -----------------------------------------------------------------------

EPIC_HEADER = (
    "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,"
    "stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n"
)


def test_epic_kitchens_rows(tmp_path):
    ann = write(
        tmp_path / "EPIC_100_train.csv",
        EPIC_HEADER
        + "P01_01_0,P01,P01_01,00:00:01.089,00:00:00.14,00:00:03.37,8,202,open door,open,3,door,3,['door'],[3]\n"
        + "P01_01_1,P01,P01_01,00:00:02.629,00:00:04.37,00:00:06.17,262,370,turn on light,turn-on,6,light,114,['light'],[114]\n"
        + "P01_01_2,P01,P01_01,00:01:05.000,01:00:05.50,01:00:07.25,1,2,put cup tap,put,1,cup,13,\"['cup', 'tap']\",\"[13, 8]\"\n",
    )
    result = load_epic_kitchens(ann, "/data/EPIC")
    first, second, third = result.samples
    assert first.video == "/data/EPIC/P01/videos/P01_01.MP4"
    assert first.labels == {"verb": (3,), "noun": (3,)}
    assert (first.start, first.end) == pytest.approx((0.14, 3.37))
    assert second.labels == {"verb": (6,), "noun": (114,)} and second.meta["narration"] == "turn on light"
    assert (third.start, third.end) == pytest.approx((3605.5, 3607.25))
    assert third.meta["all_noun_classes"] == "[13, 8]"
    assert parse_timestamp("00:10:01.5") == pytest.approx(601.5)


def test_epic_kitchens_bad_rows(tmp_path):
    bad_time = write(tmp_path / "a.csv", EPIC_HEADER + "P01_01_0,P01,P01_01,x,00:00:0.14,00:00:03.37,8,202,o,open,3,door,3,[],[]\n")
    with pytest.raises(AnnotationError, match=r"a.csv:2: bad timestamp '00:00:0.14'"):
        load_epic_kitchens(bad_time, "/d")
    bad_class = write(tmp_path / "b.csv", EPIC_HEADER + "P01_01_0,P01,P01_01,x,00:00:00.14,00:00:03.37,8,202,o,open,three,door,3,[],[]\n")
    with pytest.raises(AnnotationError, match="b.csv:2: invalid literal"):
        load_epic_kitchens(bad_class, "/d")
    not_epic = write(tmp_path / "c.csv", "video,label\na,b\n")
    with pytest.raises(AnnotationError, match="missing columns participant_id"):
        load_epic_kitchens(not_epic, "/d")


# -- AVA -------------------------------------------------------------------------------------


def test_ava_groups_keyframes_and_boxes(tmp_path):
    ann = write(
        tmp_path / "ava_val_v2.2.csv",
        "-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,80,1\n"
        "-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,12,1\n"
        "-5KQ66BBWC4,0902,0.332,0.194,0.481,0.891,17,0\n"
        "-5KQ66BBWC4,0903,0.061,0.065,0.279,0.808,11,1\n",
    )
    frames = load_ava(ann, "/ava/videos", ext=".mkv")
    assert [(f.video_id, f.timestamp) for f in frames] == [("-5KQ66BBWC4", 902), ("-5KQ66BBWC4", 903)]
    kf = frames[0]
    assert kf.video == "/ava/videos/-5KQ66BBWC4.mkv"
    assert kf.boxes.shape == (2, 4) and kf.boxes[1].tolist() == pytest.approx([0.332, 0.194, 0.481, 0.891])
    assert kf.actions == [[80, 12], [17]] and kf.person_ids == [1, 0] and kf.lines == [1, 2, 3]
    assert len(ava_boxes(frames)) == 4


def test_ava_predictions_and_bad_rows(tmp_path):
    pred = write(tmp_path / "pred.csv", "vid,0902,0.1,0.1,0.5,0.9,80,0.75\n")
    kf = load_ava(pred, predictions=True)[0]
    assert kf.scores == [[0.75]] and kf.person_ids == [-1]
    assert ava_boxes([kf])[0].score == 0.75
    for row, message in [
        ("vid,0902,0.1,0.1,0.5\n", "bad.csv:2: expected 7 or 8 fields"),
        ("vid,0902,0.6,0.1,0.5,0.9,80,1\n", "bad.csv:2: box .* is not normalized"),
        ("vid,0902,0.1,0.1,0.5,0.9,0,1\n", "bad.csv:2: action_id must be >= 1"),
        ("vid,09x2,0.1,0.1,0.5,0.9,3,1\n", "bad.csv:2: invalid literal"),
    ]:
        bad = write(tmp_path / "bad.csv", "vid,0902,0.1,0.1,0.5,0.9,80,1\n" + row)
        with pytest.raises(AnnotationError, match=message):
            load_ava(bad)


# -- Kinetics folders and LVU ------------------------------------------------------------------


def test_kinetics_folder(tmp_path):
    touch_videos(tmp_path, "dancing/b.mp4", "dancing/a.mkv", "abseiling/x.mp4", "abseiling/notes.txt")
    result = load_kinetics_folder(tmp_path)
    assert result.classes == {"label": ["abseiling", "dancing"]}
    assert [(os.path.relpath(s.video, tmp_path), s.label) for s in result.samples] == [
        ("abseiling/x.mp4", (0,)), ("dancing/a.mkv", (1,)), ("dancing/b.mp4", (1,))
    ]  # fmt: skip
    with pytest.raises(AnnotationError, match="no videos found"):
        load_kinetics_folder(tmp_path / "abseiling")


def test_lvu_rows(tmp_path):
    ann = write(
        tmp_path / "train.csv",
        "relationship_idx relationship youtube_id imdb_id\n2 friends l8uK3AmCAjA tt0113497\n0 wife_husband Wf3-4XG1rGM tt0114369\n",
    )
    result = load_lvu(ann, "/lvu/videos")
    assert result.classes == {"label": ["wife_husband", "1", "friends"]}
    assert result[0].video == "/lvu/videos/l8uK3AmCAjA.mp4" and result[0].label == (2,) and result[0].line == 2
    bad = write(tmp_path / "bad.csv", "header\n0.73 x y z\n")
    with pytest.raises(AnnotationError, match="bad.csv:2: expected"):
        load_lvu(bad, "/v")


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
