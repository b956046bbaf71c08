"""EPIC-KITCHENS-100 from the official files (rows copied unchanged from the published CSVs)
on generated videos in the download layout: reading, windows, training and evaluation
through the installed ``longvid`` script, metrics and the challenge JSON."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from longvid.cli import main
from longvid.memvit.epic_files import find_video, load_epic_actions, load_video_info
from longvid.errors import LongvidError
from longvid.memvit.recipes import load_config
from longvid.memvit.tasks import anticipation_metrics, marginals
from longvid.memvit.windows import Window, WindowClips, anticipation_window, classification_window
from longvid.video import write_video

FORMATS = "/work/shared/reference/formats"
SAMPLE = os.path.join(FORMATS, "EPIC_100_validation.sample.csv")
FPS = 15


def _frames(count, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(count):
        yield np.full((24, 32, 3), (8 + 3 * i) % 250, np.uint8) + rng.integers(0, 4, (24, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def epic_root(tmp_path_factory):
    """``EPIC-KITCHENS/P03/videos/P03_21.MP4`` (31 s, the length of the real P03_21) and the annotation files."""
    root = tmp_path_factory.mktemp("epic")
    videos = root / "EPIC-KITCHENS" / "P03" / "videos"
    videos.mkdir(parents=True)
    write_video(str(videos / "P03_21.MP4"), _frames(31 * FPS), fps=FPS, options={"g": "8"})  # short GOPs: windows seek
    annotations = root / "annotations"
    annotations.mkdir()
    shutil.copy(SAMPLE, annotations / "EPIC_100_validation.csv")
    (annotations / "EPIC_100_video_info.csv").write_text(f"video_id,duration,fps,resolution\nP03_21,31.0,{FPS},32x24\n")
    (annotations / "EPIC_100_tail_verbs.csv").write_text("verb\n9\n4\n")
    (annotations / "EPIC_100_tail_nouns.csv").write_text("noun\n183\n")
    (annotations / "EPIC_100_unseen_participant_ids_validation.csv").write_text("participant_id\nP03\n")
    return root


def test_reader_finds_both_layouts_and_counts_missing_videos(epic_root, tmp_path):
    root = str(epic_root / "EPIC-KITCHENS")
    ann = load_epic_actions(SAMPLE, root)
    assert len(ann.segments) == 12 and ann.missing_videos == []
    assert ann.segments[0].verb == 3 and ann.segments[0].noun == 3 and ann.segments[0].start == pytest.approx(3.45)
    assert ann.summary() == "EPIC_100_validation.sample.csv: 12 segments in 1 videos"
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(os.path.join(root, "P03", "videos", "P03_21.MP4"), flat / "P03_21.MP4")
    assert find_video(str(flat), "P03", "P03_21") == str(flat / "P03_21.MP4")
    # a row of another video that is not there: skipped and counted, or an error naming the line
    extra = tmp_path / "more.csv"
    extra.write_text(open(SAMPLE).read() + "P01_11_0,P01,P01_11,00:00:01.00,00:00:00.50,00:00:02.00,30,120,take plate,take,0,plate,2,['plate'],[2]\n")
    ann = load_epic_actions(str(extra), root)
    assert len(ann.segments) == 12 and ann.missing_videos == ["P01_11"] and ann.skipped_segments == 1
    assert ann.summary().endswith("; 1 videos missing (1 segments skipped)")
    with pytest.raises(LongvidError, match=r"more.csv:14: video P01_11 not found"):
        load_epic_actions(str(extra), root, strict=True)


def test_reader_errors_name_file_and_line(tmp_path):
    rows = open(SAMPLE).read().splitlines()
    for bad, message in (
        (rows[3].replace(",1,juice,183,", ",1,juice,300,"), r"bad.csv:4: noun_class 300 is outside \[0, 300\)"),
        (rows[3].replace("00:00:26.25", "00:00:28.25"), r"bad.csv:4: stop_timestamp 00:00:27.50 is before"),
        (rows[3].replace("00:00:26.25", "26.25"), r"bad.csv:4: bad timestamp"),
        (rows[3].replace(",put,1,juice,", ",put,three,juice,"), r"bad.csv:4: verb_class must be a class id, got 'three'"),
    ):
        path = tmp_path / "bad.csv"
        path.write_text("\n".join(rows[:3] + [bad] + rows[4:]) + "\n")
        with pytest.raises(LongvidError, match=message):
            load_epic_actions(str(path), str(tmp_path), check_videos=False)
    (tmp_path / "not_epic.csv").write_text("video,label\na,b\n")
    with pytest.raises(LongvidError, match=r"not_epic.csv:1: not an EPIC-KITCHENS-100 action CSV: missing columns narration_id"):
        load_epic_actions(str(tmp_path / "not_epic.csv"), str(tmp_path), check_videos=False)
    info = load_video_info(os.path.join(FORMATS, "EPIC_100_video_info.sample.csv"))
    assert info["P03_21"] == pytest.approx(59.9400599400599)


def test_reader_takes_quoted_noun_lists_and_times_past_an_hour(tmp_path):
    """Rows of the official train file: several nouns make ``all_nouns`` a quoted list (commas
    inside the field), and long videos have timestamps past the first hour."""
    path = tmp_path / "EPIC_100_train.csv"
    path.write_text(open(SAMPLE).readline()
                    + "P01_01_2,P01,P01_01,00:01:05.000,01:00:05.50,01:00:07.25,1,2,put cup tap,put,1,cup,13,\"['cup', 'tap']\",\"[13, 8]\"\n")
    (segment,) = load_epic_actions(str(path), str(tmp_path), check_videos=False).segments
    assert (segment.start, segment.end) == pytest.approx((3605.5, 3607.25))
    assert (segment.narration_id, segment.video_id, segment.verb, segment.noun, segment.line) == ("P01_01_2", "P01_01", 1, 13, 2)


def test_windows_hold_context_then_segment_clips():
    window = classification_window("v.mp4", 10.0, 11.2, span=0.5, context=3, duration=60.0, targets={"verb": 1})
    assert (window.clips, window.context) == (5, 3)  # 2 clips inside the 1.2 s segment after 3 of memory
    assert window.start == pytest.approx(10.1 - 3 * 0.5) and window.end == pytest.approx(11.1)
    early = classification_window("v.mp4", 0.2, 0.6, span=0.5, context=3, duration=60.0, targets={})
    assert (early.clips, early.context) == (1, 0) and early.start == pytest.approx(0.15)  # nothing before the start
    ant = anticipation_window("v.mp4", 5.0, tau_a=1.0, span=0.5, context=2, targets={"action": 0})
    assert ant.end == 4.0 and ant.start == pytest.approx(3.5 - 1.0) and (ant.clips, ant.context) == (3, 2)
    assert anticipation_window("v.mp4", 0.8, tau_a=1.0, span=0.5, context=2, targets={}) is None
    source = WindowClips([Window("v.mp4", 0, 1, 3, 2, {"verb": 1})])
    assert [source.scored(0, c) for c in range(3)] == [False, False, True]


def test_marginals_and_recall_against_loops():
    torch.manual_seed(0)
    actions = [(0, 1), (0, 2), (1, 1), (2, 0)]
    scores = torch.randn(6, 4)
    verb, noun = marginals(scores, actions, 3, 3)
    probs = scores.softmax(1)
    for i in range(6):
        for v in range(3):
            assert verb[i, v] == pytest.approx(sum(float(probs[i, a]) for a, (av, _) in enumerate(actions) if av == v), abs=1e-6)
        for n in range(3):
            assert noun[i, n] == pytest.approx(sum(float(probs[i, a]) for a, (_, an) in enumerate(actions) if an == n), abs=1e-6)
    windows = [Window("v", 0, 1, 1, 0, {}, meta={"verb": actions[a][0], "noun": actions[a][1]}) for a in (0, 1, 2, 3, 0, 2)]
    items = [(i, {"action": scores[i]}, {"action": torch.tensor(a)}) for i, a in enumerate((0, 1, 2, 3, 0, 2))]
    metrics = anticipation_metrics(items, WindowClips(windows), actions)
    assert set(metrics) == {"verb_recall5", "noun_recall5", "action_recall5"}
    assert metrics["action_recall5"] == 100.0  # 4 actions: all in the top 5


def _naive_recall5(scores, labels, classes):
    """Class-mean recall@5 by loops over the classes in ``classes`` that have segments."""
    per_class = []
    for c in classes:
        rows = [i for i, label in enumerate(labels) if label == c]
        if rows:
            per_class.append(sum(c in sorted(range(len(scores[i])), key=lambda k: -scores[i][k])[:5] for i in rows) / len(rows))
    return 100.0 * sum(per_class) / len(per_class)


def test_anticipation_tail_and_unseen_metrics_against_loops(tmp_path):
    """tail_: the class mean over the tail verbs / tail nouns / actions with either; unseen_:
    over the unseen participants' segments; checked against loops over the classes."""
    gen = torch.Generator().manual_seed(3)
    actions = [(v, n) for v in range(8) for n in range(9) if (v + n) % 3 == 0]  # 24 actions over 8 verbs, 9 nouns
    count = 60
    picks = torch.randint(len(actions), (count,), generator=gen).tolist()
    pairs = [actions[a] for a in picks]
    pairs[5], pairs[9] = (7, 1), (2, 2)  # pairs that are no action class: verbs and nouns only
    labels = [actions.index(p) if p in actions else -1 for p in pairs]
    people = ["P01" if i % 3 else "P12" for i in range(count)]
    scores = torch.randn(count, len(actions), generator=gen)
    windows = [Window("v", 0, 1, 1, 0, {}, meta={"verb": v, "noun": n, "participant_id": p}) for (v, n), p in zip(pairs, people)]
    items = [(i, {"action": scores[i]}, {"action": torch.tensor(labels[i])}) for i in range(count)]
    (tmp_path / "tv.csv").write_text("verb\n1\n6\n7\n")
    (tmp_path / "tn.csv").write_text("noun\n0\n8\n")
    (tmp_path / "up.csv").write_text("participant_id\nP12\n")
    config = load_config("memvit_tiny_epic_anticipation", [f"tail_verbs={tmp_path / 'tv.csv'}", f"tail_nouns={tmp_path / 'tn.csv'}",
                                                            f"unseen_participants={tmp_path / 'up.csv'}"])  # fmt: skip
    metrics = anticipation_metrics(items, WindowClips(windows), actions, config)
    verb, noun = marginals(scores, actions, 8, 9)
    verbs, nouns = [v for v, _ in pairs], [n for _, n in pairs]
    tail_actions = [a for a, (v, n) in enumerate(actions) if v in (1, 6, 7) or n in (0, 8)]
    naive = {
        "verb_recall5": _naive_recall5(verb.tolist(), verbs, range(8)),
        "noun_recall5": _naive_recall5(noun.tolist(), nouns, range(9)),
        "action_recall5": _naive_recall5(scores.tolist(), labels, range(len(actions))),
        "tail_verb_recall5": _naive_recall5(verb.tolist(), verbs, (1, 6, 7)),
        "tail_noun_recall5": _naive_recall5(noun.tolist(), nouns, (0, 8)),
        "tail_action_recall5": _naive_recall5(scores.tolist(), labels, tail_actions),
    }
    unseen = [i for i, p in enumerate(people) if p == "P12"]
    naive["unseen_verb_recall5"] = _naive_recall5([verb[i].tolist() for i in unseen], [verbs[i] for i in unseen], range(8))
    naive["unseen_noun_recall5"] = _naive_recall5([noun[i].tolist() for i in unseen], [nouns[i] for i in unseen], range(9))
    naive["unseen_action_recall5"] = _naive_recall5([scores[i].tolist() for i in unseen], [labels[i] for i in unseen], range(len(actions)))
    assert set(metrics) == set(naive)
    for key, value in naive.items():
        assert metrics[key] == pytest.approx(value, abs=1e-4), key
    assert metrics["tail_verb_recall5"] != metrics["verb_recall5"] and metrics["unseen_action_recall5"] != metrics["action_recall5"]
    # without split files: the three overall recalls only
    assert set(anticipation_metrics(items, WindowClips(windows), actions)) == {"verb_recall5", "noun_recall5", "action_recall5"}


@pytest.fixture
def one_thread(monkeypatch):
    """Tiny models in the CLI processes: one thread each (threads only contend on a shared CPU)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_train_and_eval_tiny_epic_from_the_official_files(epic_root, run_cli, tmp_path, one_thread):
    ann = epic_root / "annotations"
    val = ann / "EPIC_100_validation.csv"
    root = epic_root / "EPIC-KITCHENS"
    out = tmp_path / "run"
    common = [f"val_data={val}", f"video_root={root}", f"video_info={ann / 'EPIC_100_video_info.csv'}", "stride=4", "context_clips=1"]
    code, text = run_cli("train", "memvit_tiny_epic", f"data={val}", *common, "max_steps=4", f"out_dir={out}")
    assert code == 0, text
    assert "EPIC_100_validation.csv: 12 segments in 1 videos" in text and "trained 4 steps; last loss " in text
    splits = [f"tail_verbs={ann / 'EPIC_100_tail_verbs.csv'}", f"tail_nouns={ann / 'EPIC_100_tail_nouns.csv'}",
              f"unseen_participants={ann / 'EPIC_100_unseen_participant_ids_validation.csv'}"]  # fmt: skip
    code, text = run_cli("eval", "memvit_tiny_epic", *common, *splits, f"out_dir={out}", "--predictions", tmp_path / "sub.json")
    assert code == 0, text
    metrics = json.loads((out / "metrics.json").read_text())
    for prefix in ("", "tail_", "unseen_"):
        for key in ("verb_top1", "verb_top5", "noun_top1", "noun_top5", "action_top1", "action_top5"):
            assert 0 <= metrics[prefix + key] <= 100, prefix + key
            assert f"{prefix + key} " in text  # the printed table
    submission = json.loads((tmp_path / "sub.json").read_text())
    assert submission["challenge"] == "action_recognition" and len(submission["results"]) == 12
    first = submission["results"]["P03_21_0"]
    assert len(first["verb"]) == 97 and len(first["noun"]) == 300
    assert sum(first["verb"].values()) == pytest.approx(1.0, abs=1e-3)


def test_train_and_eval_tiny_anticipation(epic_root, run_cli, tmp_path, one_thread):
    ann = epic_root / "annotations"
    val = ann / "EPIC_100_validation.csv"
    out = tmp_path / "run"
    common = [f"val_data={val}", f"video_root={epic_root / 'EPIC-KITCHENS'}", "stride=4", "context_clips=1", "--quiet"]
    code, text = run_cli("train", "memvit_tiny_epic_anticipation", f"data={val}", *common, "max_steps=3", f"out_dir={out}")
    assert code == 0, text
    assert json.loads((out / "actions.json").read_text())[0] == [0, 10]  # sorted (verb, noun) pairs of the training file
    splits = [f"tail_verbs={ann / 'EPIC_100_tail_verbs.csv'}", f"tail_nouns={ann / 'EPIC_100_tail_nouns.csv'}",
              f"unseen_participants={ann / 'EPIC_100_unseen_participant_ids_validation.csv'}"]  # fmt: skip
    code, text = run_cli("eval", "memvit_tiny_epic_anticipation", *common, *splits, f"out_dir={out}", "--predictions", tmp_path / "sub.json")
    assert code == 0, text
    metrics = json.loads((out / "metrics.json").read_text())
    keys = {"verb_recall5", "noun_recall5", "action_recall5"}
    assert set(metrics) == keys | {f"{p}{k}" for p in ("tail_", "unseen_") for k in keys}
    assert all(0 <= v <= 100 for v in metrics.values())
    assert {k: metrics[f"unseen_{k}"] for k in keys} == {k: metrics[k] for k in keys}  # every segment is P03's (unseen)
    submission = json.loads((tmp_path / "sub.json").read_text())
    assert submission["challenge"] == "action_anticipation"
    assert all(len(r["action"]) == 10 for r in submission["results"].values())  # 10 actions in the file


def test_bad_epic_input_is_one_line(epic_root, tmp_path, capsys):
    val = epic_root / "annotations" / "EPIC_100_validation.csv"
    assert main(["train", "memvit_tiny_epic", f"data={val}", f"video_root={tmp_path}", f"out_dir={tmp_path / 'r'}"]) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "none of the 1 videos was found" in err, err
    assert main(["train", "memvit_tiny_epic", "task=ava_or_what", f"out_dir={tmp_path / 'r'}"]) == 1
    assert "task must be one of" in capsys.readouterr().err
    assert main(["eval", "memvit_tiny_synthetic", f"out_dir={tmp_path / 'r'}", "--predictions", str(tmp_path / "x.json")]) == 1
    assert "has no submission format" in capsys.readouterr().err


TEST_COLUMNS = ("narration_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp", "start_frame", "stop_frame")


def _test_timestamps(path):
    """``EPIC_100_test_timestamps.csv``'s layout (its official columns, no labels) on the sample's rows."""
    import csv

    with open(SAMPLE, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, TEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return [r["narration_id"] for r in rows]


def test_test_split_submissions_for_classification_and_anticipation(epic_root, run_cli, tmp_path, one_thread):
    ann = epic_root / "annotations"
    val = ann / "EPIC_100_validation.csv"
    test = tmp_path / "EPIC_100_test_timestamps.csv"
    ids = _test_timestamps(test)
    common = [f"video_root={epic_root / 'EPIC-KITCHENS'}", "stride=4", "context_clips=1", "--quiet"]
    for preset, challenge in (("memvit_tiny_epic", "action_recognition"), ("memvit_tiny_epic_anticipation", "action_anticipation")):
        out = tmp_path / preset
        code, text = run_cli("train", preset, f"data={val}", *common, "max_steps=1", f"out_dir={out}")
        assert code == 0, text
        if challenge == "action_recognition":  # the refusals take the same path for both tasks: checked once
            # training on the test file is refused in one line
            code, text = run_cli("train", preset, f"data={test}", *common, "max_steps=1", f"out_dir={tmp_path / 'x'}")
            assert code == 1 and "no verb_class/noun_class columns" in text and text.strip().count("\n") == 0, text
            # evaluating it without --predictions: nothing to score, said before any compute
            code, text = run_cli("eval", preset, f"val_data={test}", *common, f"out_dir={out}")
            assert code == 1 and "has no labels to score: add --predictions FILE" in text, text
        before = (out / "metrics.json").read_text() if (out / "metrics.json").exists() else None
        sub = tmp_path / f"{preset}.json"
        code, text = run_cli("eval", preset, f"val_data={test}", *common, f"out_dir={out}", "--predictions", sub)
        assert code == 0, text
        assert "EPIC_100_test_timestamps.csv: 12 segments in 1 videos (no labels: the test split)" in text
        assert f"EPIC_100_test_timestamps.csv has no labels (the test split): no metrics computed; submission of 12 segments written to {sub}" in text
        assert "verb_top1" not in text and "recall5" not in text
        assert ((out / "metrics.json").read_text() if (out / "metrics.json").exists() else None) == before
        submission = json.loads(sub.read_text())
        assert submission["challenge"] == challenge and sorted(submission["results"]) == sorted(ids)
        first = submission["results"]["P03_21_0"]
        assert len(first["verb"]) == 97 and len(first["noun"]) == 300
        assert sum(first["verb"].values()) == pytest.approx(1.0, abs=1e-3)
        if challenge == "action_anticipation":
            assert len(first["action"]) == 10  # the 10 actions of the training file
