"""``longvid bench``: the quick run writes a sane table, JSON, Markdown and plot."""

import json

import pytest
import torch

from longvid.bench import run as bench
from longvid.checkpoints import load_model, read_metadata

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return bench.run_bench(bench.MODES["quick"], out_dir=str(out), log=None, progress=False), out


def test_quick_run_writes_sane_results(quick):
    results, out = quick
    for name in ("results.json", "results.md", "bench.png"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())
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


def test_demo_weights_round_trip(quick, tmp_path):
    results, _ = quick
    path = bench.save_demo_weights(results, str(tmp_path / "w.safetensors"))
    model = load_model(path)
    assert model.config.memory_len == 2 and model.config.sampler == "consecutive"
    assert json.loads(read_metadata(path)["labels"]) == ["red square", "green disk", "blue triangle", "yellow cross"]
    reference = results["models"]["MeMViT M=2"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_baseline_sees_the_last_k_clips_end_to_end():
    clips = torch.arange(2 * 3 * 3 * 2 * 1 * 1, dtype=torch.uint8).view(2, 3, 3, 2, 1, 1)  # (V, N, C, T, H, W)
    labels = torch.tensor([1, 2])
    source = bench.source_for(bench.baseline(2), clips, labels)
    assert source.num_clips(0) == 1
    joined = source.videos[1][0]  # (C, 2T, H, W)
    assert torch.equal(joined[:, :2], clips[1, 1]) and torch.equal(joined[:, 2:], clips[1, 2])
    memory = bench.source_for(bench.memvit(1), clips, labels)
    assert memory.num_clips(0) == 3 and int(memory.targets(1)["label"]) == 2
