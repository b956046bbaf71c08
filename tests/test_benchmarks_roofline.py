"""The roofline benchmarks run end to end on tiny presets (subprocess, no timing assertions)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import torch

from longvid.memvit import build_model


def warmup_clips() -> int:
    """Clips a benchmark runs before timing memvit_tiny: cache_len + 1 (memory full)."""
    return build_model("memvit_tiny").memory_spec.cache_len + 1

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(name: str, *args: str) -> str:
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", name), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def check_agreement(agreement: dict, clips: int) -> None:
    assert agreement["clips"] == clips
    assert 0.0 <= agreement["top1_agreement"] <= 1.0
    assert 0.0 <= agreement["max_abs_prob_diff"] < 0.1  # bf16 autocast stays close to fp32


def test_gpu_check_cpu_fallback():
    out = run_script("gpu_check.py", "--tiny", "--seconds", "0.01", "--gemm-n", "64", "--json")
    lines = out.strip().splitlines()
    assert "CPU fallback" in lines[0] and ("no GPU" in lines[0]) == (not torch.cuda.is_available())
    assert lines[1].startswith("bf16: ") and "CPU capability" in lines[1]
    assert lines[2].startswith("GEMM roofline (64^3 matmul, CPU")
    report = json.loads(lines[-1])
    assert report["preset"] == "memvit_tiny" and set(report["gemm_gflops_per_s"]) == {"float32", "bfloat16"}
    assert [e["batch"] for e in report["eval"]] == [1, 4]
    for entry in report["eval"]:
        for dtype in ("float32", "bfloat16"):
            assert entry[dtype]["clips_per_s"] > 0 and math.isfinite(entry[dtype]["frac_bfloat16_gemm"])
        # warm-up clips, then at least 2 timed steps, each of `batch` clips
        assert entry["agreement"]["clips"] >= entry["batch"] * (warmup_clips() + 2)
        check_agreement(entry["agreement"], entry["agreement"]["clips"])
    assert [t["dtype"] for t in report["train"]] == ["float32", "bfloat16"]
    for entry in report["train"]:
        assert entry["batch"] == 2 and entry["clips_per_s"] > 0 and entry["peak_mem_mb"] > 0
    stream = report["stream"]  # 4 s at 30 fps: 2 clips of 16x4
    assert stream["identical"] and {m["clips"] for m in stream["modes"].values()} == {2}
    assert stream["ratio"] == stream["modes"]["pipelined"]["wall"] / max(stream["modes"]["decode"]["wall"], stream["modes"]["model"]["wall"])
    assert lines[-2].startswith("stream memvit_tiny on cpu, 4 s 320x240 video: 2 clips: decode-only ")


def test_memvit_speed_bf16_on_tiny_presets():
    out = run_script(
        "memvit_speed.py", "--presets", "mvit_tiny", "memvit_tiny", "--frames", "16", "--size", "64",
        "--rounds", "1", "--dtype", "bfloat16", "--gemm-n", "64", "--json",
    )  # fmt: skip
    report = json.loads(out.strip().splitlines()[-1])
    assert set(report["results"]) == {f"{p}/{d}" for p in ("mvit_tiny", "memvit_tiny") for d in ("float32", "bfloat16")}
    for r in report["results"].values():
        # achieved rate = 2 FLOPs per multiply-add over the best wall time
        assert math.isclose(r["achieved_gflops_per_s"], 2 * r["gmacs_per_clip"] / r["wall_min_s"])
        assert math.isclose(r["roofline_fraction"]["float32"], r["achieved_gflops_per_s"] / report["gemm_gflops_per_s"]["float32"])
    for compare in report["bf16_vs_fp32"].values():
        check_agreement(compare, warmup_clips() + 1)  # warm-up + 1 timed round
