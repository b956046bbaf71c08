"""ReWind's data sets read from their official layouts (entries written as the publishers ship them)."""

from __future__ import annotations

import json

import pytest

from longvid.data.jsonfiles import read_json
from longvid.rewind.data import read_data
from longvid.data.annotations import AnnotationError

# charades_sta_train.txt as released (Gao et al., TALL): "<video> <start> <end>##<sentence>"
CHARADES = "AO8RW 0.0 6.9##a person is putting a book on a shelf.\n3MSZA 24.3 30.4##person turn a light on.\n"

# LocalizingMoments data/train_data.json (Hendricks et al.): 5-second segment indices per annotator
DIDEMO = """[{"description": "the man in striped shirt looks away.", "reference_description": null,
  "times": [[0, 0], [3, 3], [0, 0], [0, 1]], "video": "12090392@N02_13482799053_87ef417396.mov",
  "annotation_id": 20931, "num_segments": 6, "dl_link": "https://www.flickr.com/video_download.gne?id=13482799053"},
 {"description": "baby close-up", "reference_description": null, "times": [[1, 2], [1, 2], [1, 1], [2, 2]],
  "video": "21574226@N00_2952305418_f51d7c8b2a.mov", "annotation_id": 30105, "num_segments": 6,
  "dl_link": "https://www.flickr.com/video_download.gne?id=2952305418"}]
"""

# ActivityNet Captions train.json (Krishna et al.)
ACTIVITYNET = """{"v_QOlSCBRmfWY": {"duration": 82.73,
  "timestamps": [[0.83, 19.86], [17.37, 60.81], [56.26, 85.0]],
  "sentences": ["A young woman is seen standing in a room and leads into her dancing.",
                " The girl dances around the room while the camera captures her movements.",
                " She continues dancing around the room and ends by laying on the floor."]}}
"""

# MovieChat-1K test annotation: one JSON per video; breakpoint "time" is a frame index at info.fps
MOVIECHAT = {"info": {"video_path": "1.mp4", "url": "https://www.youtube.com/watch?v=abc", "class": "documentary",
                      "num_frame": 9000, "fps": 30, "w": 1280, "h": 720},
             "global": [{"question": "How many people appear in the video?", "answer": "Two."},
                        {"question": "Is it day or night?", "answer": "Day."}],
             "breakpoint": [{"time": 1500, "question": "What is the man holding?", "answer": "A cup."}],
             "caption": "Two people talk at a table."}

# Video-ChatGPT VideoInstruct_Dataset.json (ActivityNet videos)
VIDEOCHATGPT = """[{"q": "What are the main activities that take place in the video?",
  "a": "The main activities that take place in the video are the preparation of camera equipment by a man.",
  "video_id": "v_k_ZXmr8pmrs"}]
"""


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_each_official_layout_reads_with_its_times_and_lines(tmp_path):
    charades = read_data(write(tmp_path / "charades_sta_train.txt", CHARADES), "V")
    assert charades.format == "charades_sta" and charades.kind == "grounding"
    assert [(i.video, i.interval, i.text, i.where) for i in charades.items] == [
        ("V/AO8RW.mp4", (0.0, 6.9), "a person is putting a book on a shelf.", f"{tmp_path}/charades_sta_train.txt:1"),
        ("V/3MSZA.mp4", (24.3, 30.4), "person turn a light on.", f"{tmp_path}/charades_sta_train.txt:2")]

    didemo = read_data(write(tmp_path / "train_data.json", DIDEMO), "V")
    assert didemo.format == "didemo"
    # the most common annotator pair, segments of 5 s: [0, 0] -> 0-5 s, [1, 2] -> 5-15 s
    assert [(i.interval, i.where.rsplit(":", 1)[1]) for i in didemo.items] == [((0.0, 5.0), "1"), ((5.0, 15.0), "4")]
    assert didemo.items[0].video == "V/12090392@N02_13482799053_87ef417396.mov"

    anet = read_data(write(tmp_path / "train.json", ACTIVITYNET), "V")
    assert anet.format == "activitynet" and len(anet.items) == 3
    assert anet.items[2].interval == (56.26, 82.73)  # the end is cut to the duration
    assert anet.items[1].text.startswith("The girl") and anet.items[0].video == "V/v_QOlSCBRmfWY.mp4"

    folder = tmp_path / "moviechat"
    folder.mkdir()
    (folder / "1.json").write_text(json.dumps(MOVIECHAT, indent=1))
    movie = read_data(str(folder), "V")
    assert movie.format == "moviechat" and movie.kind == "qa"
    assert [(i.group, i.until, i.answer) for i in movie.items] == [("global", None, "Two."), ("global", None, "Day."),
                                                                   ("breakpoint", 50.0, "A cup.")]
    assert read_data(str(folder / "1.json"), "V").items == movie.items  # one video's file alone too

    chat = read_data(write(tmp_path / "VideoInstruct_Dataset.json", VIDEOCHATGPT), "V")
    assert chat.format == "videochatgpt" and chat.items[0].video == "V/v_k_ZXmr8pmrs.mp4"
    assert chat.items[0].answer.startswith("The main activities")

    captions = read_data(write(tmp_path / "captions.json", '[{"video": "a.mp4", "caption": "a dog", "start": 1, "end": 4}]'))
    assert captions.format == "captions" and captions.items[0].interval == (1.0, 4.0)
    assert captions.items[0].video == str(tmp_path / "a.mp4")  # videos default to the annotation's folder


@pytest.mark.parametrize("name, text, message", [
    ("charades_sta_train.txt", "AO8RW 0.0 6.9##ok\nAO8RW 1.0 a##bad\n", "charades_sta_train.txt:2: start and end must be seconds"),
    ("charades_sta_train.txt", "AO8RW 0.0 6.9 no separator\n", "charades_sta_train.txt:1: expected '<video> <start> <end>##<sentence>'"),
    ("train_data.json", '[{"video": "a.mov", "description": "x", "times": [[0, 0]]},\n {"video": "b.mov", "times": [[1, 1]]}]',
     "train_data.json:2: missing field 'description'"),
    ("train_data.json", '[{"video": "a.mov",\n "description": "x",\n "times": [[0, 0]],}]', "train_data.json:3: invalid JSON"),
    ("VideoInstruct_Dataset.json", '[{"q": "a?", "a": "b"}]', "cannot tell its format"),
])
def test_bad_rows_are_named_by_file_and_line(tmp_path, name, text, message):
    with pytest.raises(AnnotationError, match=message.replace("?", r"\?").replace("(", r"\(").replace("[", r"\[")):
        read_data(write(tmp_path / name, text))


def test_moviechat_without_fps_is_named(tmp_path):
    bad = {**MOVIECHAT, "info": {"video_path": "1.mp4", "fps": 0}}
    with pytest.raises(AnnotationError, match=r"1.json:2: info.fps must be > 0"):
        read_data(write(tmp_path / "1.json", json.dumps(bad, indent=1)))


def test_json_lines_match_plain_json(tmp_path):
    text = json.dumps([{"a": [1, 2.5, {"b": None}], "c": "x\ny"}, [], {}, True], indent=2)
    parsed = read_json(write(tmp_path / "f.json", text))
    assert parsed == json.loads(text)
    assert parsed.line == 1 and parsed[0].line == 2 and parsed[0]["a"][2].line == 6


# Issue 29: the released files hold rows no loader can use. charades_sta_train.txt's line 8252 is
# "LEOL6 8.0 7.0##..." (start >= end; its sentence is not reproduced here), ActivityNet Captions'
# train.json has sentences with start >= end (v_N7ppHQNikv8, ...) and is written on one line.
QUIRKY_CHARADES = CHARADES + "LEOL6 8.0 7.0##a person is sitting in a chair.\n"
ONE_LINE_ACTIVITYNET = json.dumps({
    "v_QOlSCBRmfWY": json.loads(ACTIVITYNET)["v_QOlSCBRmfWY"],
    "v_N7ppHQNikv8": {"duration": 20.0, "timestamps": [[0.0, 5.5], [12.3, 12.3]],
                      "sentences": ["A man is seen speaking to the camera.", " He then holds up a tool."]}})


def test_rows_that_cannot_be_used_are_skipped_and_listed_or_refused_with_strict(tmp_path):
    path = write(tmp_path / "charades_sta_train.txt", QUIRKY_CHARADES)
    data = read_data(path, "V")
    assert [i.video for i in data.items] == ["V/AO8RW.mp4", "V/3MSZA.mp4"]
    assert data.skipped == ((f"{path}:3", "start 8 >= end 7"),)
    summary = data.summary()
    assert "\n" not in summary and "skipped 1 row that cannot be used" in summary
    assert "charades_sta_train.txt:3 (start 8 >= end 7)" in summary
    with pytest.raises(AnnotationError, match=r"charades_sta_train.txt:3: the interval must have start < end, got 8 7"):
        read_data(path, "V", strict=True)
    with pytest.raises(AnnotationError, match=r"no grounding rows .*1 rows that cannot be used were skipped.*:1: start 8 >= end 7"):
        read_data(write(tmp_path / "only.txt", "LEOL6 8.0 7.0##a person is sitting in a chair.\n"), "V")


def test_one_line_json_names_the_video_and_sentence(tmp_path):
    path = write(tmp_path / "train.json", ONE_LINE_ACTIVITYNET)
    assert "\n" not in ONE_LINE_ACTIVITYNET
    data = read_data(path, "V")
    assert [i.where for i in data.items] == [f"{path}: v_QOlSCBRmfWY sentence {k}" for k in (1, 2, 3)] + [
        f"{path}: v_N7ppHQNikv8 sentence 1"]
    assert data.skipped == ((f"{path}: v_N7ppHQNikv8 sentence 2", "start 12.3 >= end 12.3"),)
    assert "train.json: v_N7ppHQNikv8 sentence 2 (start 12.3 >= end 12.3)" in data.summary()
    with pytest.raises(AnnotationError, match=r"train.json: v_N7ppHQNikv8 sentence 2: the interval must have start < end"):
        read_data(path, "V", strict=True)
    # an error names the video, not the useless line 1
    broken = json.loads(ONE_LINE_ACTIVITYNET)
    del broken["v_N7ppHQNikv8"]["duration"]
    with pytest.raises(AnnotationError, match=r"train.json: v_N7ppHQNikv8: missing field 'duration'"):
        read_data(write(tmp_path / "train.json", json.dumps(broken)), "V")
    # a file over several lines keeps file:line, and its skips still name the sentence
    pretty = write(tmp_path / "val_1.json", json.dumps(json.loads(ONE_LINE_ACTIVITYNET), indent=1))
    data = read_data(pretty, "V")
    assert data.items[0].where == f"{pretty}:2"
    line = open(pretty).read().split("\n").index(' "v_N7ppHQNikv8": {') + 1
    assert data.skipped[0][0] == f"{pretty}:{line}: v_N7ppHQNikv8 sentence 2"

    didemo = write(tmp_path / "train_data.json", json.dumps(json.loads(DIDEMO)))  # released on one line
    assert [i.where for i in read_data(didemo, "V").items] == [
        f"{didemo}: moment 1 (12090392@N02_13482799053_87ef417396.mov)", f"{didemo}: moment 2 (21574226@N00_2952305418_f51d7c8b2a.mov)"]


def test_intervals_are_cut_to_the_video_and_rows_past_its_end_skipped(tmp_path):
    # 3MSZA's query ends past a 28-s video (as 1,805 Charades-STA train queries do); AO8RW's starts after a 5-s one.
    path = write(tmp_path / "charades_sta_train.txt", CHARADES)
    data = read_data(path, "V").clamped_to({"V/AO8RW.mp4": 5.0, "V/3MSZA.mp4": 28.0})
    assert [(i.video, i.interval) for i in data.items] == [("V/AO8RW.mp4", (0.0, 5.0)), ("V/3MSZA.mp4", (24.3, 28.0))]
    data = read_data(path, "V").clamped_to({"V/AO8RW.mp4": 0.0, "V/3MSZA.mp4": 24.0})  # 0: unknown, left as it is
    assert [i.interval for i in data.items] == [(0.0, 6.9)] and data.clamped == 0
    assert data.skipped == ((f"{path}:2", "starts at 24.3 s, at or after the video's end (24 s)"),)
    with pytest.raises(AnnotationError, match=r"charades_sta_train.txt:2: the interval 24.3-30.4 starts at 24.3 s"):
        read_data(path, "V").clamped_to({"V/3MSZA.mp4": 24.0}, strict=True)
    # DiDeMo's last 5-s segment on a shorter video
    didemo = read_data(write(tmp_path / "train_data.json", DIDEMO), "V")
    clamped = didemo.clamped_to({didemo.items[1].video: 12.5})
    assert [i.interval for i in clamped.items] == [(0.0, 5.0), (5.0, 12.5)]
    assert clamped.summary() == "1 interval cut to the video's duration"
