"""``longvid train`` / ``longvid eval`` on MA-LMM run presets, from MA-LMM's annotation layouts."""

from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np
import pytest
import torch

from longvid.malmm.datasets import read_dataset
from longvid.errors import LongvidError
from longvid.malmm import run as malmm_run
from longvid.video import write_video

LVU_TRAIN = {  # the layout of MA-LMM's data/lvu/annotation/train.json (short videos)
    "6ohgHjQvK5g": {"subset": "train", "duration": 6, "num_frames": 60, "director": "steven", "director_answer": "(a)",
                    "way_speaking": "confront", "way_speaking_answer": "(b)"},
    "8NaBHCuxqhA": {"subset": "train", "duration": 5, "num_frames": 50, "director": "steven", "director_answer": "(a)",
                    "writer": "david", "writer_answer": "(e)"},
}  # fmt: skip
LVU_VAL = {
    "9t8iEpdabms": {"subset": "val", "duration": 6, "num_frames": 60, "director": "steven", "director_answer": "(a)",
                    "writer": "david", "writer_answer": "(e)"},
    "AL7UDurxc3w": {"subset": "val", "duration": 6, "num_frames": 60, "genre": "drama", "genre_answer": "(a)"},
}  # fmt: skip


def make_videos(folder, names, seconds=6, fps=10):
    os.makedirs(folder, exist_ok=True)
    for k, name in enumerate(names):
        frames = (np.full((32, 48, 3), (40 * k + 4 * i) % 256, np.uint8) for i in range(int(seconds * fps)))
        write_video(os.path.join(folder, name + ".mp4"), frames, fps=fps)


@pytest.fixture
def lvu(tmp_path):
    make_videos(tmp_path / "videos", list(LVU_TRAIN) + list(LVU_VAL))
    (tmp_path / "train.json").write_text(json.dumps(LVU_TRAIN, indent=4))
    (tmp_path / "val.json").write_text(json.dumps(LVU_VAL, indent=4))
    return tmp_path


def naive_lvu_accuracy(annotation: dict, predictions: list[dict], history=4, stride=2) -> dict:
    """Per-task top-1 (%) by a plain loop over the annotation's windows and the predictions file."""
    by_id = {p["id"]: p["prediction"] for p in predictions}
    hits, counts = {}, {}
    for vid, entry in annotation.items():
        for task in ("director", "genre", "relationship", "scene", "way_speaking", "writer", "year"):
            if task not in entry:
                continue
            for start in [0] + list(range(stride, entry["duration"] - history + 1, stride)):
                prediction = by_id[f"{vid}_{start}_{task}"].strip().lower()
                hits[task] = hits.get(task, 0) + (prediction == entry[task])
                counts[task] = counts.get(task, 0) + 1
    result = {task: 100.0 * hits[task] / counts[task] for task in counts}
    result["mean"] = sum(result.values()) / len(result)
    return result


def test_cli_trains_and_evaluates_lvu(lvu, run_cli):
    out = lvu / "D"
    code, text = run_cli("train", "malmm_tiny_lvu", "data=train.json", "val_data=val.json", "video_root=videos", "max_steps=4",
                         f"out_dir={out}", cwd=lvu)  # fmt: skip
    assert code == 0, text
    assert "train.json: 2 videos found, 0 missing" in text and "step 4/4 loss" in text
    assert (out / "step_00000004.json").exists() and len((out / "log.jsonl").read_text().splitlines()) == 4
    trained = json.loads((out / "metrics.json").read_text())
    code, text = run_cli("eval", "malmm_tiny_lvu", "val_data=val.json", "video_root=videos", f"out_dir={out}",
                         "--predictions", str(out / "pred.jsonl"), cwd=lvu)  # fmt: skip
    assert code == 0, text
    assert "loaded" in text and "mean" in text
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (out / "pred.jsonl").read_text().splitlines()]
    naive = naive_lvu_accuracy(LVU_VAL, predictions)
    assert metrics["samples"] == len(predictions) == 6
    assert {k: metrics[k] for k in naive} == pytest.approx(naive)
    assert set(metrics) == {"dataset", "samples", "director", "writer", "genre", "mean", "director_top5", "writer_top5", "genre_top5",
                            "mean_top5"}
    # top-5: the label among the first five class names the predictions file ranks (the val file's labels)
    labels = {"director": ["steven"], "writer": ["david"], "genre": ["drama"]}
    for p in predictions:
        assert sorted(p["top5"]) == labels[p["group"]]
    assert metrics["mean_top5"] == 100.0
    assert trained == metrics  # the same checkpoint evaluated after training and from the CLI


def test_score_against_a_naive_loop():
    """Classification through the generated text: exact match after normalisation, per task and mean."""
    rng = random.Random(0)
    annotation = {f"v{i}": {"duration": rng.choice([4, 6, 8]), rng.choice(["genre", "scene"]): rng.choice(["drama", "the office"]),
                            "year": rng.choice(["1990", "2000"])} for i in range(20)}  # fmt: skip
    path = "/tmp/_lvu_score.json"
    with open(path, "w") as f:
        json.dump(annotation, f, indent=1)
    items = read_dataset("lvu", path, history=4, stride=2)
    choices = ["drama", "Drama.", "the office", "The Office!", "1990", "2000", "comedy"]
    predictions = [{"id": item.key, "prediction": rng.choice(choices)} for item in items]
    os.remove(path)
    metrics = malmm_run.score("lvu", items, [p["prediction"] for p in predictions])
    assert metrics == pytest.approx(naive_lvu_accuracy_normalised(annotation, predictions))
    assert 0 < metrics["mean"] < 100


def naive_lvu_accuracy_normalised(annotation, predictions):
    cleaned = [{"id": p["id"], "prediction": "".join(c for c in p["prediction"] if c not in '.!"()*#:;~')} for p in predictions]
    return naive_lvu_accuracy(annotation, cleaned)


def test_resume_continues_the_same_run(lvu, monkeypatch):
    """A run stopped after its step-2 checkpoint and resumed gives the uninterrupted run's losses and log."""
    monkeypatch.chdir(lvu)
    args = ["data=train.json", "video_root=videos", "max_steps=4", "checkpoint_every=2", "cache_dir=features"]
    whole = malmm_run.train("malmm_tiny_lvu", args + ["out_dir=A"], progress=False)
    shutil.copytree("A", "B")
    for ext in (".json", ".safetensors"):
        os.remove(f"B/step_00000004{ext}")
    resumed = malmm_run.train("malmm_tiny_lvu", args + ["out_dir=B"], resume=True, progress=False)
    assert [r["step"] for r in resumed] == [3, 4]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in whole[2:]], abs=1e-6)
    logged = [json.loads(line)["loss"] for line in open("B/log.jsonl")]
    assert logged == pytest.approx([r["loss"] for r in whole], abs=1e-6)
    import longvid
    from longvid.engine.checkpoint import load_latest

    model = longvid.build_model("malmm_tiny", checkpoint="A/weights.safetensors", num_frames=4, memory_bank_length=2)
    tensors, _, _ = load_latest("A")  # the final training checkpoint
    assert {k: v for k, v in model.trainable_state_dict().items()}.keys() == {k[6:] for k in tensors if k.startswith("model.")}
    assert all(torch.equal(v, tensors["model." + k]) for k, v in model.trainable_state_dict().items())


def test_bad_input_fails_before_compute_with_one_line(lvu, monkeypatch):
    monkeypatch.chdir(lvu)
    os.remove("videos/AL7UDurxc3w.mp4")
    with pytest.raises(LongvidError, match=r"val.json: 1 videos found, 1 missing \(AL7UDurxc3w\) under videos; set skip_missing"):
        malmm_run.evaluate("malmm_tiny_lvu", ["val_data=val.json", "video_root=videos", "out_dir=E"], progress=False)
    metrics = malmm_run.evaluate("malmm_tiny_lvu", ["val_data=val.json", "video_root=videos", "out_dir=E", "skip_missing=true"], progress=False)
    assert set(metrics) == {"director", "writer", "mean", "director_top5", "writer_top5", "mean_top5"}
    (lvu / "bad.json").write_text('{\n "x": {"duration": 6, "genre": "drama"},\n "y": {"genre": "drama"}\n}')
    with pytest.raises(LongvidError, match=r"bad.json:3: entry 'y' has no 'duration' field"):
        malmm_run.train("malmm_tiny_lvu", ["data=bad.json", "video_root=videos"], progress=False)
    with pytest.raises(LongvidError, match="unknown field 'lr_x'"):
        malmm_run.train("malmm_tiny_lvu", ["lr_x=1"], progress=False)
    with pytest.raises(LongvidError, match="config field augment expects bool, got 'maybe'"):
        malmm_run.load_run("malmm_tiny_lvu", ["augment=maybe"])
    with pytest.raises(LongvidError, match="config field max_steps expects int, got '1.5'"):
        malmm_run.load_run("malmm_tiny_lvu", ["max_steps=1.5"])
    run = malmm_run.load_run("malmm_tiny_lvu", ["pretrained=null", "max_steps=3", "lr=0.5", "augment=yes", "video_root=v 1"])
    assert (run.pretrained, run.max_steps, run.lr, run.augment, run.video_root) == (None, 3, 0.5, True, "v 1")
    with pytest.raises(LongvidError, match="config: lr must be a finite number > 0"):
        malmm_run.train("malmm_tiny_lvu", ["lr=nan"], progress=False)
    assert not os.path.exists("E/features") or not any(f.startswith("step_") for f in os.listdir("E"))


def test_nsa_preset_trains_its_gates_on_both_memories(lvu, monkeypatch):
    """malmm_tiny_nsa: the sparse Q-Former (query and visual memory) through the same train/eval path;
    the branch gates and block pooling of both kinds of layer learn."""
    import torch

    from longvid.engine.checkpoint import load_latest

    monkeypatch.chdir(lvu)
    malmm_run.train("malmm_tiny_nsa", ["data=train.json", "val_data=val.json", "video_root=videos", "max_steps=2",
                                       "out_dir=N", "lr=0.01"], progress=False)  # fmt: skip
    metrics = json.loads((lvu / "N" / "metrics.json").read_text())
    assert set(metrics) == {"dataset", "samples", "director", "writer", "genre", "mean", "director_top5", "writer_top5", "genre_top5",
                            "mean_top5"}
    tensors, _, _ = load_latest("N")
    for name in ("qformer.layers.0.attention.gate.bias", "qformer.layers.0.crossattention.gate.bias",
                 "qformer.layers.2.crossattention.block_pool"):
        start = torch.full_like(tensors[f"model.{name}"], -np.log(2.0) if name.endswith("bias") else 0.5)
        assert not torch.allclose(tensors[f"model.{name}"], start), name


def test_uncached_features_give_the_same_answers(lvu, monkeypatch):
    monkeypatch.chdir(lvu)
    args = ["val_data=val.json", "video_root=videos", "out_dir=U"]
    cached = malmm_run.evaluate("malmm_tiny_lvu", args, progress=False, predictions="a.jsonl")
    fresh = malmm_run.evaluate("malmm_tiny_lvu", args + ["feature_cache=false"], progress=False, predictions="b.jsonl")
    assert cached == fresh and open("a.jsonl").read() == open("b.jsonl").read()
    assert len(os.listdir("U/features")) == 4  # one file per (video, window), shared by the tasks: 2 videos x 2 windows


def test_random_training_draws_are_seeded(lvu, monkeypatch):
    """MA-LMM's training draw (a random frame per segment, random resized crop + flip) is fresh at every
    use, never cached, and the same for the same seed."""
    monkeypatch.chdir(lvu)
    args = ["data=train.json", "video_root=videos", "max_steps=3", "train_sampling=random", "augment=true"]
    a = malmm_run.train("malmm_tiny_lvu", args + ["out_dir=A"], progress=False)
    b = malmm_run.train("malmm_tiny_lvu", args + ["out_dir=B"], progress=False)
    c = malmm_run.train("malmm_tiny_lvu", args + ["out_dir=C", "seed=1"], progress=False)
    assert [r["loss"] for r in a] == [r["loss"] for r in b] != [r["loss"] for r in c]
    assert not os.path.exists("A/features")


def test_best_validation_epoch_is_kept_and_evaluated(lvu, monkeypatch, capsys):
    """eval_every_epoch: val after each epoch in log.jsonl, the best (first of equals) kept in
    best.safetensors / best.json, and ``evaluate`` uses it by default."""
    monkeypatch.chdir(lvu)
    malmm_run.train("malmm_tiny_lvu", ["data=train.json", "val_data=val.json", "video_root=videos", "batch_size=3", "epochs=2",
                                       "eval_every_epoch=true", "out_dir=V"], progress=False)  # fmt: skip
    records = [json.loads(line) for line in open("V/log.jsonl")]
    val = [r for r in records if "val" in r]
    assert [(r["step"], r["epoch"]) for r in val] == [(2, 1), (4, 2)]
    scores = [r["val"]["mean"] for r in val]
    best = json.load(open("V/best.json"))
    assert best["score"] == max(scores) and best["step"] == val[scores.index(max(scores))]["step"]
    capsys.readouterr()
    metrics = malmm_run.evaluate("malmm_tiny_lvu", ["val_data=val.json", "video_root=videos", "out_dir=V"], progress=False)
    assert "V/best.safetensors (the best validation epoch" in capsys.readouterr().out
    assert metrics == best["metrics"]


def test_lvu_task_the_file_does_not_label_is_named(tmp_path, capsys):
    """MA-LMM's released LVU train.json (entries copied unchanged) labels no year: ``lvu_tasks=year``
    names the task and what the file labels, from the reader and from ``longvid train``."""
    from longvid.cli import main
    from longvid.data.annotations import AnnotationError

    formats = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "formats")
    sample = os.path.join(formats if os.path.isdir(formats) else "/work/shared/reference/formats", "lvu_train.sample.json")
    path = tmp_path / "train.json"
    shutil.copyfile(sample, path)
    with pytest.raises(AnnotationError, match=r"train.json: no lvu samples for lvu_tasks=year in this file \(its entries label director, "):
        read_dataset("lvu", str(path), lvu_tasks=("year",))
    assert main(["train", "malmm_tiny_lvu", f"data={path}", "lvu_tasks=year", f"video_root={tmp_path}", "max_steps=1",
                 f"out_dir={tmp_path / 'out'}", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no lvu samples for lvu_tasks=year" in err, err
