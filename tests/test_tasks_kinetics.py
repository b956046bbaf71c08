"""Kinetics from its official CSV layout (videos ``<id>_<start:06d>_<end:06d>.mp4`` flat or in
class folders) through the installed ``longvid`` script; fine-tuning from a saved checkpoint
into a head of another class count."""

import json
import os

import numpy as np
import pytest
import torch

from longvid.memvit.kinetics_files import load_kinetics_csv
from longvid.errors import LongvidError
from longvid.memvit.recipes import load_config
from longvid.engine.checkpoint import load_latest
from longvid.memvit.run import train
from longvid.video import write_video

HEADER = "label,youtube_id,time_start,time_end,split,is_cc\n"  # Kinetics-400's train.csv header
CLASSES = ("abseiling", "air drumming", "zumba")


def _write(path, level):
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = (np.full((24, 32, 3), level, np.uint8) for _ in range(16))
    write_video(str(path), frames, fps=8)


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory):
    root = tmp_path_factory.mktemp("k400")
    train_rows, val_rows = [], []
    for c, label in enumerate(CLASSES):
        for i in range(2):
            yid, start = f"yt{c}x{i}abcde", 10 * i
            name = f"{yid}_{start:06d}_{start + 10:06d}.mp4"
            _write(root / "train" / label.replace(" ", "_") / name, 40 + 80 * c)  # class folders
            train_rows.append(f'"{label}",{yid},{start},{start + 10},train,0\n')
        yid = f"val{c}abcdefg"
        _write(root / "val" / f"{yid}_000005_000015.mp4", 40 + 80 * c)  # one folder
        val_rows.append(f"{label},{yid},5,15,val,1\n")
    train_rows.append("zumba,gone_video_,0,10,train,0\n")  # deleted from YouTube: not downloaded
    (root / "train.csv").write_text(HEADER + "".join(train_rows))
    (root / "validate.csv").write_text(HEADER + "".join(val_rows))
    return root


def test_reader_maps_names_and_counts_missing(kinetics):
    annotations, summary = load_kinetics_csv(str(kinetics / "train.csv"), str(kinetics / "train"))
    assert annotations.classes["label"] == list(CLASSES)
    assert [s.label for s in annotations.samples] == [(0,), (0,), (1,), (1,), (2,), (2,)]
    assert summary == "train.csv: 6 videos of 3 classes; 1 videos missing (skipped)"
    with pytest.raises(LongvidError, match=r"train.csv:8: video gone_video__000000_000010.mp4 not found"):
        load_kinetics_csv(str(kinetics / "train.csv"), str(kinetics / "train"), strict=True)
    with pytest.raises(LongvidError, match=r"validate.csv:4: label 'zumba' is not in the class list"):
        load_kinetics_csv(str(kinetics / "validate.csv"), str(kinetics / "val"), classes=CLASSES[:2])


def test_train_and_eval_tiny_k400_from_the_official_csv(kinetics, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny model: threads only contend
    out = tmp_path / "run"
    code, text = run_cli("train", "memvit_tiny_k400", f"data={kinetics / 'train.csv'}", f"video_root={kinetics / 'train'}",
                         "max_steps=3", f"out_dir={out}")  # fmt: skip
    assert code == 0, text
    assert "train.csv: 6 videos of 3 classes; 1 videos missing (skipped)" in text
    code, text = run_cli("eval", "memvit_tiny_k400", f"val_data={kinetics / 'validate.csv'}", f"video_root={kinetics / 'val'}", f"out_dir={out}")
    assert code == 0, text
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"top1", "top5"} and "top1 " in text


def test_train_and_val_videos_in_separate_split_folders(kinetics, run_cli, tmp_path, monkeypatch):
    """The download layout ``train/<label>/`` and ``val/<label>/``: ``val_video_root`` is where
    ``val_data``'s videos are (``video_root`` stays the training videos' folder)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for video in (kinetics / "val").glob("*.mp4"):  # val/<label>/ as the download scripts save it
        label = CLASSES[int(video.name[3])]
        (tmp_path / "val" / label.replace(" ", "_")).mkdir(parents=True, exist_ok=True)
        os.link(video, tmp_path / "val" / label.replace(" ", "_") / video.name)
    files = [f"data={kinetics / 'train.csv'}", f"val_data={kinetics / 'validate.csv'}", f"video_root={kinetics / 'train'}"]
    code, text = run_cli("train", "memvit_tiny_k400", *files, f"val_video_root={tmp_path / 'val'}", "max_steps=2", "epochs=1",
                         f"out_dir={tmp_path / 'a'}")  # fmt: skip
    assert code == 0, text
    assert "train.csv: 6 videos of 3 classes; 1 videos missing (skipped)" in text and "validate.csv: 3 videos of 3 classes" in text
    # a whole epoch (2 steps of 6 streams) ends with the evaluation of the validation videos
    code, text = run_cli("train", "memvit_tiny_k400", *files, f"val_video_root={tmp_path / 'val'}", "epochs=1", "batch_size=6",
                         f"out_dir={tmp_path / 'b'}")  # fmt: skip
    assert code == 0, text
    assert "epoch 0 eval top1 " in text
    evals = [json.loads(line) for line in open(tmp_path / "b" / "log.jsonl") if '"eval"' in line]
    assert len(evals) == 1 and set(evals[0]["eval"]) == {"top1", "top5"}
    code, text = run_cli("train", "memvit_tiny_k400", *files, "max_steps=2", f"out_dir={tmp_path / 'c'}")  # val/ not given
    assert code == 1 and "validate.csv: none of the 3 videos was found under" in text, text


def test_finetune_from_a_checkpoint_with_another_class_count(kinetics, tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fields = [f"data={kinetics / 'train.csv'}", f"video_root={kinetics / 'train'}", "progressive=[]", "epochs=1"]
        pre = load_config("memvit_tiny_k400", [*fields, "max_steps=2", f"out_dir={tmp_path / 'pre'}"])
        train(pre, progress=False)
        saved, _, _ = load_latest(str(tmp_path / "pre"))
        tuned = load_config("memvit_tiny_k400", [*fields, "num_classes=5", "max_steps=2", "freeze=backbone",
                                                 f"init_from={tmp_path / 'pre'}", f"out_dir={tmp_path / 'tuned'}"])  # fmt: skip
        train(tuned, progress=False)
    finally:
        torch.set_num_threads(threads)
    said = capsys.readouterr().out
    assert "re-initialized heads: head.projection.bias (400,)->(5,), head.projection.weight (400, 64)->(5, 64)" in said
    assert "freeze=backbone: training the heads only (325 parameters)" in said
    after, _, _ = load_latest(str(tmp_path / "tuned"))
    backbone = [k for k in after if k.startswith("model.blocks.") and k.endswith("attn.q.weight")]
    assert backbone and all(torch.equal(after[k], saved[k]) for k in backbone)  # loaded, then frozen
    assert after["model.head.projection.weight"].shape == (5, 64)
    assert not torch.equal(after["model.head.projection.bias"], torch.zeros(5))  # the new head trained


def test_init_from_an_official_pyth_keeps_the_backbone(tmp_path):
    import longvid
    from longvid.memvit.finetune import init_from

    source = longvid.build_model("memvit_tiny", num_classes=400)
    torch.save({"model_state": source.state_dict(), "epoch": 30, "cfg": "..."}, tmp_path / "K400.pyth")  # PySlowFast layout
    target = longvid.build_model("memvit_tiny", head="verb_noun", num_classes=(97, 300))
    line = init_from(target, str(tmp_path / "K400.pyth"))
    assert "re-initialized heads: head.projection.0.bias (not in the checkpoint)" in line
    assert "2 checkpoint tensors the model has no place for" in line  # the 400-class head
    assert torch.equal(target.blocks[2].attn.compress_k.weight, source.blocks[2].attn.compress_k.weight)
    with pytest.raises(LongvidError, match="backbone tensors of another shape"):
        init_from(longvid.build_model("memvit_tiny", embed_dim=32), str(tmp_path / "K400.pyth"))
