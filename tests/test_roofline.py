"""GEMM roofline: FLOP accounting and sane (positive, finite) rates at a tiny size."""

from __future__ import annotations

import math

import pytest
import torch

from longvid.bench import roofline


def test_gemm_flops_counts_two_per_multiply_add():
    # Naive count: each of n*n outputs takes n multiplies and n adds.
    for n in (1, 3, 64):
        naive = sum(2 * n for _row in range(n) for _col in range(n))
        assert roofline.gemm_flops(n) == naive


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_measure_gemm_rate_matches_its_own_time(dtype):
    rate = roofline.measure_gemm(dtype, n=64, repeats=2, min_seconds=0.001)
    assert rate.dtype == dtype and rate.n == 64 and rate.device == "cpu"
    assert rate.threads == torch.get_num_threads()
    assert rate.seconds > 0 and math.isfinite(rate.gflops_per_s) and rate.gflops_per_s > 0
    assert rate.gflops_per_s == pytest.approx(2 * 64**3 / rate.seconds / 1e9)


def test_roofline_fraction_of_model_rate():
    rates = roofline.gemm_roofline(n=64, repeats=1, min_seconds=0.001)
    assert set(rates) == {"float32", "bfloat16"}
    achieved = roofline.achieved_gflops_per_s(multiply_adds_g=3.0, seconds=2.0)
    assert achieved == 3.0  # 3 G multiply-adds = 6 GFLOP in 2 s
    fraction = roofline.roofline_fraction(achieved, rates["float32"])
    assert fraction == pytest.approx(3.0 / rates["float32"].gflops_per_s)
    assert "GEMM roofline (64^3 matmul, CPU" in roofline.describe(rates)


def test_faster_keeps_the_best_rate_per_dtype():
    slow = {"float32": roofline.GemmRate("float32", 8, "cpu", 1, 2.0, 1.0), "bfloat16": roofline.GemmRate("bfloat16", 8, "cpu", 1, 0.5, 4.0)}
    fast = {"float32": roofline.GemmRate("float32", 8, "cpu", 1, 1.0, 2.0), "bfloat16": roofline.GemmRate("bfloat16", 8, "cpu", 1, 1.0, 2.0)}
    best = roofline.faster(slow, fast)
    assert best["float32"] is fast["float32"] and best["bfloat16"] is slow["bfloat16"]
