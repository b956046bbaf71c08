"""Params and GFLOPs per clip against the published MeMViT figures (fvcore conventions)."""

import json

import pytest
import torch

from longvid.cli import main
from longvid.memvit.flops import count_gflops, model_cost
from longvid.memvit import build_model

torch.set_num_threads(1)  # the test machines are shared: avoid thread oversubscription


@pytest.mark.parametrize(
    "preset, overrides, params, gflops, tolerance",
    [
        ("mvit16_16x4", {}, 34_525_216, 57.40, 0.005),
        ("memvit16_16x4", {}, 35_388_832, 58.70, 0.005),
        ("memvit16_16x4", {"memory_len": 1}, 35_376_544, 58.08, 0.005),
        ("memvit16_16x4", {"memory_len": 4}, 35_413_408, 59.95, 0.005),
        ("mvit24_32x3", {}, 51_217_600, 205.8, 0.01),
        ("memvit24_32x3", {}, 52_601_344, 213.1, 0.01),
    ],
)
def test_published_cost(preset, overrides, params, gflops, tolerance):
    cost = model_cost(preset, **overrides)
    assert cost.params == params
    assert abs(cost.gflops - gflops) / gflops < tolerance, cost.gflops


def test_memory_in_every_block_costs_more():
    cost = model_cost("memvit16_16x4", memory_blocks=tuple(range(16)))
    assert abs(cost.gflops - 60.15) / 60.15 < 0.005


def test_meta_count_equals_count_on_real_tensors():
    torch.manual_seed(0)
    model = build_model("memvit_tiny", num_frames=8, crop_size=32)
    with torch.device("meta"):
        meta_model = build_model("memvit_tiny", num_frames=8, crop_size=32)
    assert count_gflops(model, 8, 32) == count_gflops(meta_model, 8, 32) > 0


def test_cli_flops_json(capsys):
    assert main(["flops", "mvit_tiny", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["params"] > 0 and record["gflops"] > 0 and record["memory_len"] == 0
    assert main(["flops", "memvit_tiny", "--memory-blocks", "all"]) == 0
    assert "4 blocks" in capsys.readouterr().out
    assert main(["flops", "memvit_tiny", "--memory-blocks", "x"]) == 1


def test_flops_as_a_user_types_it(run_cli):
    code, printed = run_cli("flops", "memvit_tiny")
    assert code == 0, printed
    assert "params  104,858" in printed and "GFLOPs  0.05" in printed
    code, printed = run_cli("flops", "no_such_preset")
    assert code == 1 and printed.count("\n") == 1 and printed.startswith("longvid: error: ")
