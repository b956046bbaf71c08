"""The machine's GEMM throughput (the roofline a model is measured against).

``gemm_roofline`` times square ``n x n @ n x n`` matrix multiplies (``2 * n**3`` FLOPs each)
in fp32 and bf16 on a CPU (with the caller's thread count) or a CUDA device, and reports
the best rate over a few repeats (other processes only ever slow a run down). A model's
achieved rate is ``2 * multiply-adds / seconds`` (``longvid.memvit.flops`` counts multiply-adds,
fvcore's convention), and ``roofline_fraction`` puts it against that GEMM rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class GemmRate:
    """Best measured rate of one dtype's square matmul."""

    dtype: str
    n: int
    device: str
    threads: int
    seconds: float  # best wall time of one matmul
    gflops_per_s: float


def gemm_flops(n: int) -> int:
    """FLOPs of one ``n x n @ n x n`` matmul: n^2 outputs, each n multiplies and n adds."""
    return 2 * n**3


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA; nothing to wait for on CPU), before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_gemm(dtype: str = "float32", n: int = 2048, device: str | torch.device = "cpu", repeats: int = 5, min_seconds: float = 0.2) -> GemmRate:
    """Best GFLOP/s of ``n^3`` matmuls in ``dtype`` on ``device`` (CPU: the current torch thread count).

    Each repeat runs enough matmuls to last about ``min_seconds`` (sized from a warm-up
    call); the best repeat's per-matmul time gives the rate.
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=DTYPES[dtype])  # (n, n)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=DTYPES[dtype])  # (n, n)
    out = torch.empty(n, n, device=device, dtype=DTYPES[dtype])
    torch.matmul(a, b, out=out)  # warm-up: kernel selection, page faults
    sync(device)
    start = time.perf_counter()
    torch.matmul(a, b, out=out)
    sync(device)
    calls = max(1, int(min_seconds / max(time.perf_counter() - start, 1e-9)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            torch.matmul(a, b, out=out)
        sync(device)
        best = min(best, (time.perf_counter() - start) / calls)
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    return GemmRate(dtype, n, str(device), threads, best, gemm_flops(n) / best / 1e9)


def gemm_roofline(n: int = 2048, device: str | torch.device = "cpu", dtypes: tuple[str, ...] = ("float32", "bfloat16"), **kwargs) -> dict[str, GemmRate]:
    """dtype name -> measured rate, for each of ``dtypes``."""
    return {dtype: measure_gemm(dtype, n, device, **kwargs) for dtype in dtypes}


def faster(rates: dict[str, GemmRate], more: dict[str, GemmRate]) -> dict[str, GemmRate]:
    """Per dtype, the faster of two measurements (load only ever slows a run down)."""
    return {dtype: max(rate, more[dtype], key=lambda r: r.gflops_per_s) for dtype, rate in rates.items()}


def achieved_gflops_per_s(multiply_adds_g: float, seconds: float) -> float:
    """GFLOP/s of work worth ``multiply_adds_g`` G multiply-adds (2 FLOPs each) done in ``seconds``."""
    return 2 * multiply_adds_g / seconds


def roofline_fraction(achieved: float, rate: GemmRate) -> float:
    """``achieved`` GFLOP/s as a fraction of the GEMM rate."""
    return achieved / rate.gflops_per_s


def describe(rates: dict[str, GemmRate]) -> str:
    """One line: the GEMM roofline per dtype."""
    first = next(iter(rates.values()))
    where = first.device if first.device != "cpu" else f"CPU {first.threads} thread(s)"
    parts = ", ".join(f"{r.dtype} {r.gflops_per_s:.0f}" for r in rates.values())
    return f"GEMM roofline ({first.n}^3 matmul, {where}): {parts} GFLOP/s"
