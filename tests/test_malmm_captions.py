"""MA-LMM's MSRVTT / MSVD captioning presets from the CLI, and LVU top-5 by ranking class names.

Caption annotations are in the layout MA-LMM's ``MSRVTTCapDataset`` / ``MSVDCapDataset`` read
(``data/<set>/annotation/cap_<split>.json``: ``{id: {video, caption, frame_length}}``, one entry per
caption); videos in the data sets' download layouts (``MSRVTT/videos/all/video7010.mp4``,
``YouTubeClips/<id>_<start>_<end>.avi``)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from longvid.malmm import run as malmm_run
from longvid.malmm.datasets import LMMItem, one_per_video, read_dataset
from longvid.video import write_video


def video(path, seconds=3, fps=10, shade=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_video(path, (np.full((32, 48, 3), (shade + 5 * i) % 256, np.uint8) for i in range(int(seconds * fps))), fps=fps)


def caption_files(root, dataset):
    if dataset == "msrvtt_caption":
        names, folder, ext = ["video7010", "video7011", "video7012"], "MSRVTT/videos/all", ".mp4"
    else:
        names, folder, ext = ["-4wsuPCjDBc_5_15", "0lh_UWF9ZP4_62_69", "5HAf_INrFy0_3_25"], "YouTubeClips", ".avi"
    for i, name in enumerate(names):
        video(os.path.join(root, folder, name + ext), shade=70 * i)
    train = {"0": {"video": names[0], "caption": "A man is driving a car.", "frame_length": 30},
             "1": {"video": names[0], "caption": "a man drives down the road", "frame_length": 30},
             "2": {"video": names[1], "caption": "Someone is cooking pasta in a kitchen!", "frame_length": 30}}
    val = {"100": {"video": names[2], "caption": "a cat plays with a ball", "frame_length": 30},
           "101": {"video": names[2], "caption": "a kitten is playing", "frame_length": 30},
           "102": {"video": names[1], "caption": "a person cooks food", "frame_length": 30}}
    (root / "cap_train.json").write_text(json.dumps(train, indent=4))
    (root / "cap_val.json").write_text(json.dumps(val, indent=4))
    return {names[2]: ["a cat plays with a ball", "a kitten is playing"], names[1]: ["a person cooks food"]}


def test_caption_reader_keeps_every_entry_and_scores_per_video(tmp_path):
    caption_files(tmp_path, "msrvtt_caption")
    items = read_dataset("msrvtt_caption", str(tmp_path / "cap_train.json"))
    assert [(i.key, i.video, i.answer, i.line) for i in items] == [
        ("0", "video7010", "a man is driving a car", 2), ("1", "video7010", "a man drives down the road", 7),
        ("2", "video7011", "someone is cooking pasta in a kitchen", 12)]
    assert {i.prompt for i in items} == {"what does the video describe?"}
    merged = one_per_video(read_dataset("msrvtt_caption", str(tmp_path / "cap_val.json")))
    assert [(i.key, i.references) for i in merged] == [("video7012", ("a cat plays with a ball", "a kitten is playing")),
                                                       ("video7011", ("a person cooks food",))]


@pytest.mark.parametrize("dataset", ["msrvtt_caption", "msvd_caption"])
def test_cli_trains_and_evaluates_captions(dataset, tmp_path, run_cli):
    if shutil.which("java") is None:
        pytest.skip("caption metrics need Java (pycocoevalcap's tokenizer)")
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    truth = caption_files(tmp_path, dataset)
    root = "MSRVTT" if dataset == "msrvtt_caption" else "YouTubeClips"
    preset = f"malmm_tiny_{dataset}"
    code, text = run_cli("train", preset, "data=cap_train.json", f"video_root={root}", "max_steps=2", "out_dir=D", cwd=tmp_path)
    assert code == 0, text
    assert "cap_train.json: 2 videos found, 0 missing" in text and "step 2/2 loss" in text
    meteor = dataset == "msvd_caption"  # METEOR (a slow Java start) once
    code, text = run_cli("eval", preset, "val_data=cap_val.json", f"video_root={root}", "out_dir=D", f"meteor={meteor}", cwd=tmp_path)
    assert code == 0, text
    assert "CIDEr" in text and "unclosed file" not in text  # METEOR's Java pipes are closed
    metrics = json.loads((tmp_path / "D" / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (tmp_path / "D" / "predictions.jsonl").read_text().splitlines()]
    assert metrics["dataset"] == dataset and metrics["samples"] == 2 == len(predictions)  # one caption per video
    assert set(metrics) == {"dataset", "samples", "CIDEr", "BLEU-4", "ROUGE-L"} | ({"METEOR"} if meteor else set())
    by_id = {p["id"]: p["prediction"] for p in predictions}
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in caps] for k, caps in truth.items()})
    res = tok.tokenize({k: [{"caption": by_id[k]}] for k in truth})
    assert metrics["CIDEr"] == pytest.approx(100 * Cider().compute_score(gts, res)[0])


def test_caption_presets_follow_the_released_scripts():
    for name in ("malmm_msrvtt_caption", "malmm_msvd_caption"):
        run = malmm_run.PRESETS[name]
        assert (run.model, run.lr, run.epochs, run.batch_size, run.max_new_tokens, run.min_new_tokens) == ("malmm_caption", 1e-5, 10, 16, 50, 1)
    from longvid.malmm.config import get_config

    c = get_config("malmm_caption")
    assert (c.num_frames, c.qformer.memory_bank_length, c.num_beams, c.max_txt_len) == (80, 40, 5, 128)


def test_empty_val_captions_need_references(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    caption_files(tmp_path, "msvd_caption")
    (tmp_path / "cap_test.json").write_text(json.dumps({"7": {"video": "0lh_UWF9ZP4_62_69", "caption": "", "frame_length": 30}}, indent=4))
    with pytest.raises(Exception, match=r"cap_test.json:2: video '0lh_UWF9ZP4_62_69' has an empty caption .* give references=FILE"):
        malmm_run.evaluate("malmm_tiny_msvd_caption", ["val_data=cap_test.json", "video_root=YouTubeClips", "out_dir=D"], progress=False)


# -- LVU top-5 --------------------------------------------------------------------------------


def test_top5_on_hand_ranked_classes():
    """Top-5 counts the label among the first five ranked names; top-1 stays the generated text's."""
    items = [LMMItem(f"k{i}", "v", "what is the scene of the movie?", label, "scene", 1) for i, label in enumerate("abc")]
    items.append(LMMItem("k3", "v", "what is the year of the movie?", "1990", "year", 1))
    rankings = [["a", "b", "c", "d", "e", "f"],  # label first
                ["a", "c", "d", "e", "b", "f"],  # label fifth: a top-5 hit
                ["a", "b", "d", "e", "f", "c"],  # label sixth: a miss
                ["2000", "1990"]]
    metrics = malmm_run.score("lvu", items, ["a", "x", "c", "1990"], rankings=rankings)
    assert metrics == pytest.approx({"scene": 200 / 3, "year": 100.0, "mean": (200 / 3 + 100) / 2,
                                     "scene_top5": 200 / 3, "year_top5": 100.0, "mean_top5": (200 / 3 + 100) / 2})
    assert malmm_run.score("coin", items[:3], ["a", "b", "c"], rankings=rankings[:3]) == pytest.approx({"top1": 100.0, "top5": 200 / 3})


def test_class_ranking_is_the_llm_likelihood_of_each_name():
    """The ranking of :func:`rank_classes` is the order of each name's log-likelihood computed one by one."""
    from longvid.malmm import build_model

    model = build_model("malmm_tiny", num_frames=3, memory_bank_length=2).eval()
    prompts = ["what is the genre of the movie?", "what is the scene of the movie?", "what is the genre of the movie?"]
    state = model.init_state(3, instructions=prompts)
    _, state = model.step_tokens(torch.randn(3, 3, 5, 48, generator=torch.Generator().manual_seed(0)), state)
    classes = {"genre": ["action", "comedy", "drama", "horror", "romance", "thriller"], "scene": ["office", "road"]}
    ranked = malmm_run.rank_classes(model, state, prompts, ["genre", "scene", "genre"], classes)
    prefixes = model.visual_prefixes(state)
    for b, group in enumerate(["genre", "scene", "genre"]):
        one = [model.llm.log_likelihood([prefixes[b]], [prompts[b]], [name]).item() for name in classes[group]]
        assert ranked[b] == [classes[group][k] for k in np.argsort(-np.array(one), kind="stable")]


def test_captions_without_java_fail_before_compute(tmp_path, monkeypatch):
    import shutil as shutil_module

    monkeypatch.chdir(tmp_path)
    caption_files(tmp_path, "msrvtt_caption")
    real_which = shutil_module.which
    monkeypatch.setattr(shutil_module, "which", lambda name, *a, **k: None if name == "java" else real_which(name, *a, **k))
    with pytest.raises(Exception, match=r"caption metrics need Java .*: install a JRE"):
        malmm_run.train("malmm_tiny_msrvtt_caption", ["data=cap_train.json", "val_data=cap_val.json", "video_root=MSRVTT",
                                                      "out_dir=D"], progress=False)  # fmt: skip
    assert not os.path.exists("D")  # nothing encoded or trained
