"""Every MA-LMM data set through ``train`` then ``evaluate``: real-format annotation entries, videos named
and laid out as each data set ships them, metrics.json checked against a plain computation."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from longvid.malmm import run as malmm_run
from longvid.video import write_video


def video(path, seconds=3, fps=10, shade=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_video(path, (np.full((32, 48, 3), (shade + 5 * i) % 256, np.uint8) for i in range(int(seconds * fps))), fps=fps)


def qa_entry(qid, vid, question, answer, dataset):
    return {"answer": answer, "question": question, "answer_type": "what", "question_id": qid, "dataset": dataset,
            "video": vid, "frame_length": 30}  # fmt: skip


def breakfast(root):
    train = {"P03-cam01-P03_cereals": {"duration": 3, "frame_length": 30, "class_name": "cereal", "class_label": 0},
             "P04-webcam02-P04_coffee": {"duration": 3, "frame_length": 30, "class_name": "coffee", "class_label": 1}}
    val = {"P47-cam01-P47_friedegg": {"duration": 3, "frame_length": 30, "class_name": "fried egg", "class_label": 4}}
    for i, key in enumerate(list(train) + list(val)):  # the download's layout: P03/cam01/P03_cereals.avi
        video(os.path.join(root, "videos", key.replace("-", "/", 2) + ".avi"), shade=40 * i)
    return train, val, {k: v["class_name"] for k, v in val.items()}


def coin(root):
    data = {"-0ZDdc8G8Bk": {"subset": "training", "duration": 3, "target": "Replace A Bulb", "num_frames_actual": 30},
            "a1b2c3d4e5f": {"subset": "training", "duration": 3, "target": "Make Coffee", "num_frames_actual": 30},
            "zz9yy8xx7ww": {"subset": "val", "duration": 3, "target": "Change Tire", "num_frames_actual": 30}}
    for i, key in enumerate(data):  # COIN's download: videos/<class>/<id>.mp4
        video(os.path.join(root, "videos", str(i), key + ".mp4"), shade=40 * i)
    return data, data, {"zz9yy8xx7ww": "change tire"}


def qa(dataset, prefix="", ext=".mp4"):
    def make(root):
        train = {"0000000": qa_entry("0000000", "vidA", "Who opened the box?", "man", dataset),
                 "0000001": qa_entry("0000001", "vidB", "What is in the box?", "rifle", dataset)}
        val = {"0000002": qa_entry("0000002", "vidA", "who is opening a box", "man", dataset),
               "0000003": qa_entry("0000003", "vidB", "what is it", "gun", dataset)}
        for i, vid in enumerate(("vidA", "vidB")):
            video(os.path.join(root, "videos", prefix + vid + ext), shade=60 * i)
        return train, val, {k: v["answer"] for k, v in val.items()}
    return make


def youcook2(root):
    def segment(vid, i, start, end, caption):
        key = f"{vid}_{start:04d}_{end:04d}"
        return key, {"video": vid, "segment": key, "id": i, "duration": 6.0, "start_time": start, "end_time": end,
                     "frame_length": 60, "recipe": "indian lamb curry", "caption": caption}
    train = dict([segment("zBNvyUEvjtY", 0, 0, 2, "add oil to a pan"), segment("zBNvyUEvjtY", 1, 3, 5, "add the lamb")])
    val = dict([segment("xHr8X2Wpmno", 0, 1, 3, ""), segment("xHr8X2Wpmno", 1, 4, 5, "")])  # test files keep no captions
    video(os.path.join(root, "videos", "zBNvyUEvjtY.mp4"), seconds=6)
    video(os.path.join(root, "videos", "xHr8X2Wpmno.mkv"), seconds=6, shade=90)
    refs = {"annotations": [{"image_id": k, "caption": c, "id": j} for j, (k, c) in enumerate(
        [(list(val)[0], "heat oil in a pan"), (list(val)[0], "pour oil"), (list(val)[1], "add the onions")])],
        "images": [{"id": k} for k in val]}
    (root / "cap_test.json").write_text(json.dumps(refs))
    return train, val, {k: [a["caption"] for a in refs["annotations"] if a["image_id"] == k] for k in val}


SETS = {
    "breakfast": (breakfast, []),
    "coin": (coin, ["split=training", "val_split=val"]),
    "msrvtt_qa": (qa("msrvtt_qa"), []),
    "msvd_qa": (qa("msvd_qa", ext=".avi"), []),
    "activitynet_qa": (qa("activitynet_qa", prefix="v_"), []),
    "youcook2": (youcook2, ["references=cap_test.json", "meteor=false"]),  # METEOR: a slow Java start
}


def naive_metrics(dataset, truth, predictions):
    """Accuracy by a plain loop (lower case, MA-LMM's punctuation removed, first word for MSRVTT/MSVD),
    or CIDEr straight from pycocoevalcap for captions."""
    by_id = {p["id"]: p["prediction"] for p in predictions}
    if dataset == "youcook2":
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tok = PTBTokenizer()
        gts = tok.tokenize({k: [{"caption": c} for c in caps] for k, caps in truth.items()})
        res = tok.tokenize({k: [{"caption": by_id[k]}] for k in truth})
        return {"CIDEr": 100 * Cider().compute_score(gts, res)[0]}
    hits = 0
    for key, answer in truth.items():
        text = " ".join("".join(c for c in by_id[key].lower() if c not in '.!"()*#:;~').split())
        if dataset in ("msrvtt_qa", "msvd_qa"):
            text = (text.split() or [""])[0]
        hits += text == answer
    return {"top1" if dataset in ("breakfast", "coin") else "accuracy": 100.0 * hits / len(truth)}


@pytest.mark.parametrize("dataset", list(SETS))
def test_train_and_evaluate(dataset, tmp_path, monkeypatch):
    if dataset == "youcook2" and (shutil.which("java") is None or pytest.importorskip("pycocoevalcap") is None):
        pytest.skip("caption metrics need pycocoevalcap and Java")
    monkeypatch.chdir(tmp_path)
    make, extra = SETS[dataset]
    train, val, truth = make(tmp_path)
    (tmp_path / "train.json").write_text(json.dumps(train, indent=4))
    (tmp_path / "val.json").write_text(json.dumps(val, indent=4))
    history = malmm_run.train(f"malmm_tiny_{dataset}", ["data=train.json", "val_data=val.json", "video_root=videos",
                                                        "max_steps=2", "out_dir=D", *extra], progress=False)  # fmt: skip
    assert [r["step"] for r in history] == [1, 2]
    metrics = json.loads((tmp_path / "D" / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (tmp_path / "D" / "predictions.jsonl").read_text().splitlines()]
    assert metrics["dataset"] == dataset and metrics["samples"] == len(truth) == len(predictions)
    naive = naive_metrics(dataset, truth, predictions)
    assert {k: metrics[k] for k in naive} == pytest.approx(naive)


def test_scores_on_known_answers():
    """Accuracy rules on crafted predictions (not the tiny model's): first word for MSRVTT/MSVD only."""
    from longvid.malmm.datasets import LMMItem

    items = [LMMItem(str(i), "v", "q", answer, "g", 1) for i, answer in enumerate(["man", "two dogs", "red", "yes"])]
    predictions = ["Man is", "two dogs", "Red.", "no"]
    assert malmm_run.score("msvd_qa", items, predictions) == {"accuracy": 50.0}  # "man", "two" (!= "two dogs"), "red"
    assert malmm_run.score("activitynet_qa", items, predictions) == {"accuracy": 50.0}  # "two dogs", "red"
    assert malmm_run.score("breakfast", items, predictions) == {"top1": 50.0}


def test_captions_need_references(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, val, _ = youcook2(tmp_path)
    (tmp_path / "val.json").write_text(json.dumps(val, indent=4))
    with pytest.raises(Exception, match=r"val.json:2: segment 'xHr8X2Wpmno_0001_0003' has an empty caption .* give references=FILE"):
        malmm_run.evaluate("malmm_tiny_youcook2", ["val_data=val.json", "video_root=videos", "out_dir=D"], progress=False)
