"""``longvid bench scaling``: the cost study's rows, outputs and the paper's Figure 3 shape."""

import json

import pytest
import torch

from longvid.memvit import scaling
from longvid.errors import LongvidError
from longvid.memvit.flops import count_gflops

torch.set_num_threads(1)


def test_rows_and_temporal_support():
    rows = {r.name: r for r in scaling.scaling_rows(16)}
    assert rows["MViT T=16"].family == "short-term"
    assert rows["MViT T=128"].support_s() == pytest.approx(8 * rows["MViT T=16"].support_s())
    assert rows["MeMViT M=4"].support_s() == pytest.approx(5 * rows["MViT T=16"].support_s())
    assert rows["MeMViT M=2 gap8"].support_s() == pytest.approx(17 * rows["MViT T=16"].support_s())
    assert rows["MeMViT M=3 (no compression)"].sampler == "consecutive"


def test_memvit16_gflops_at_16x_support_stay_within_3_percent():
    rows = {r.name: r for r in scaling.scaling_rows(16)}
    gflops = {}
    for name in ("MViT T=16", "MeMViT M=2 gap8"):
        model = scaling.build("memvit16_16x4", rows[name], 224, device="meta")
        gflops[name] = count_gflops(model, 16, 224)
    assert gflops["MViT T=16"] == pytest.approx(57.4, rel=0.01)
    assert gflops["MeMViT M=2 gap8"] <= 1.03 * gflops["MViT T=16"]


def test_tiny_preset_run_writes_table_and_plot(tmp_path, run_cli):
    code, printed = run_cli("bench", "scaling", "--preset", "memvit_tiny", "--size", "32", "--out", tmp_path)
    assert code == 0, printed
    assert "Traceback" not in printed and "\r" not in printed and "| MeMViT M=2 gap8 | " in printed
    for name in ("scaling.json", "scaling.md", "scaling.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = {r["model"]: r for r in json.loads((tmp_path / "scaling.json").read_text())["rows"]}
    assert len(rows) == len(scaling.scaling_rows(16))
    short, long, mem = rows["MViT T=16"], rows["MViT T=128"], rows["MeMViT M=4"]
    assert long["gflops"] > 7 * short["gflops"] and long["train_mem_mb"] > 4 * short["train_mem_mb"]
    assert short["gflops"] < mem["gflops"] < rows["MeMViT M=4 (no compression)"]["gflops"]
    assert mem["infer_mem_mb"] > short["infer_mem_mb"] > 0 and mem["infer_ms"] > 0
    assert "| MeMViT M=2 gap8 | " in (tmp_path / "scaling.md").read_text()
    compression = json.loads((tmp_path / "scaling.json").read_text())["compression"]  # Figure 4
    assert [r["memory_len"] for r in compression] == list(scaling.COMPRESSION_LENGTHS)
    assert compression[-1]["naive_train_mem_mb"] > compression[-1]["pipelined_train_mem_mb"]
    assert "naive re-compresses the whole memory" in printed


def test_bad_size_is_one_line_error(tmp_path):
    with pytest.raises(LongvidError, match="multiple of 32"):
        scaling.run_scaling("memvit_tiny", size=50, out_dir=str(tmp_path), log=None, progress=False)


def test_naive_compression_reads_the_same_memory_and_costs_more_to_train():
    row = scaling.ScalingRow("MeMViT", 8, 4)
    model = scaling.build("memvit_tiny", row, 32).eval()
    clips = [torch.randn(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    outs = {}
    for naive in (False, True):
        with scaling.compression_mode(model, naive), torch.no_grad():
            state = model.init_state(1)
            for clip in clips:
                out, state = model(clip, state)
        outs[naive] = out
    torch.testing.assert_close(outs[True], outs[False], rtol=1e-5, atol=1e-5)  # same values read
    pipelined = scaling.train_step_cost(model, clips[0], naive=False, repeats=1)[0]
    naive = scaling.train_step_cost(model, clips[0], naive=True, repeats=1)[0]
    assert naive > pipelined  # every raw clip and its compression stay in the graph
    assert model.memory_spec.raw_len == 1  # the model is left as it was
