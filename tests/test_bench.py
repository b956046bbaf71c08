"""``longvid bench``: the quick run, typed as a user would (the installed script, no
--quiet, output piped to a file), writes a sane table, JSON, Markdown, plot and weights."""

import json
import subprocess

import pytest
import torch

import longvid.models.memvit
from conftest import longvid_script
from longvid.bench import run as bench
from longvid.checkpoints import load_model, read_metadata
from longvid.train.loop import evaluate

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    log = out / "output.txt"
    with open(log, "w") as f:
        command = [longvid_script(), "bench", "--quick", "--out", str(out), "--save-weights", str(out / "w.safetensors")]
        code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, timeout=600).returncode
    printed = log.read_text()
    assert code == 0, printed
    assert "Traceback" not in printed and "\r" not in printed  # piped: plain progress lines, no bar redraws
    return json.loads((out / "results.json").read_text()), out


def test_quick_run_writes_sane_results(quick):
    saved, out = quick
    for name in ("results.json", "results.md", "bench.png"):
        assert (out / name).stat().st_size > 0
    rows = {r["model"]: r for r in saved["rows"]}
    cfg = bench.MODES["quick"]
    assert list(rows) == [v.name for v in cfg.variants]
    short, base3, mem2 = rows["MViT short-term"], rows["MViT 3x frames"], rows["MeMViT M=2"]
    assert (short["reach_clips"], base3["reach_clips"], mem2["reach_clips"]) == (0, 2, 2)
    assert mem2["support_s"] == base3["support_s"] == 3 * cfg.spec.clip_seconds
    for d in map(str, cfg.distances):  # no memory, no reach: exactly chance on paired scenes
        assert short["accuracy"][d] == pytest.approx(saved["chance"])
    assert base3["gflops"] > 2.5 * short["gflops"]
    assert short["gflops"] <= mem2["gflops"] < 1.1 * short["gflops"]
    assert base3["train_mem_mb"] > mem2["train_mem_mb"] > 0
    for row in rows.values():
        assert all(0 <= a <= 100 for a in row["accuracy"].values())
        assert row["params"] > 0 and row["train_clips_per_s"] > 0 and row["infer_clips_per_s"] > 0
    table = (out / "results.md").read_text()
    assert "| MeMViT M=2 | 2 | 3 |" in table and "acc d=2 (%)" in table


def test_demo_weights_round_trip(quick):
    saved, out = quick
    path = str(out / "w.safetensors")
    model = load_model(path)
    assert model.config.memory_len == 2 and model.config.sampler == "consecutive"
    metadata = read_metadata(path)
    assert json.loads(metadata["labels"]) == ["red square", "green disk", "blue triangle", "yellow cross"]
    row = next(r for r in saved["rows"] if r["model"] == "MeMViT M=2")
    assert json.loads(metadata["accuracy"]) == row["accuracy"]
    cfg = bench.MODES["quick"]
    variant = next(v for v in cfg.variants if v.name == "MeMViT M=2")
    for d in cfg.distances:  # the saved weights score what the run measured
        source = bench.source_for(variant, *bench.eval_data(cfg, d))
        assert evaluate(model, source, cfg.batch_size, pooling="last")["top1"] == row["accuracy"][str(d)]


def test_baseline_sees_the_last_k_clips_end_to_end():
    clips = torch.arange(2 * 3 * 3 * 2 * 1 * 1, dtype=torch.uint8).view(2, 3, 3, 2, 1, 1)  # (V, N, C, T, H, W)
    labels = torch.tensor([1, 2])
    source = bench.source_for(bench.baseline(2), clips, labels)
    assert source.num_clips(0) == 1
    joined = source.videos[1][0]  # (C, 2T, H, W)
    assert torch.equal(joined[:, :2], clips[1, 1]) and torch.equal(joined[:, 2:], clips[1, 2])
    memory = bench.source_for(bench.memvit(1), clips, labels)
    assert memory.num_clips(0) == 3 and int(memory.targets(1)["label"]) == 2


def test_memvit_variants_use_the_shipped_recall_preset():
    spec = bench.MODES["default"].spec
    model = bench.memvit(4).build(spec)
    assert model.config == longvid.models.memvit.get_config("memvit_tiny_recall")
    assert model.config.reading_blocks == (model.config.depth - 1,)  # reach exactly M
    assert bench.memvit(2).reach == 2 and bench.baseline(5).reach == 4 and bench.short_term().reach == 0
