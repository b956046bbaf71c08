"""What a batch of streams costs on CPU: one batched step vs single-stream steps, and why.

For each batch size (default 1, 4, 16) on one torch thread, after warm-up, taking turns
over --rounds rounds (mean and worst):
  - ms per step and per clip (medians) of the engine (``BatchedStepper.step``: clip
    stacking, the model, write-back, softmax) and of the bare model forward on the same
    batch, called in turn, so the engine's own overhead shows as the difference;
  - the model's FLOPs per clip (convolutions, matmuls, counted by torch's FlopCounterMode,
    plus attention: 4 * Nq * Nk * d per head, from the shapes it is called with) and the
    FLOP/s reached, as a fraction of this core's measured peak (a large float32 matmul);
  - where the time goes (torch.profiler self CPU time per clip by kind of kernel: GEMM-like
    kernels, attention, element-wise and copies, the rest), so one can tell whether a
    bigger batch could help more (per-call overhead shrinks with the batch; per-element
    work does not), and the element-wise kernels' memory traffic per clip (their inputs
    plus an output the size of the largest input) against this core's measured bandwidth
    (a + b of 64 MB tensors): their memory roofline.

    python benchmarks/serve_batch_cost.py                  # memvit_tiny, batches 1,4,16, 3 rounds
    python benchmarks/serve_batch_cost.py --batches 1,16 --rounds 5
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

import longvid
from longvid.serve.engine import BatchedStepper, live_settings_for
from longvid.video.live import LiveClip

GEMM = ("addmm", "mm", "bmm", "convolution", "conv3d", "linear", "matmul", "einsum")
ATTENTION = ("scaled_dot_product", "flash_attention")
ELEMENTWISE = ("add", "mul", "sub", "div", "gelu", "layer_norm", "copy_", "cat", "softmax", "where", "masked_fill",
               "index", "clone", "contiguous", "fill_", "zero_", "neg", "exp", "max_pool", "sum", "mean", "pad", "repeat")


def kind_of(name: str) -> str:
    op = name.split("::")[-1]
    if any(a in op for a in ATTENTION):
        return "attention"
    if any(op == g or op.startswith(g) or op.endswith(g) for g in GEMM) or "mkldnn_convolution" in op:
        return "gemm/conv"
    if any(op == e or op.startswith(e) or op.endswith(e) for e in ELEMENTWISE):
        return "element-wise/copy"
    return "other"


def attention_flops(model, clip: torch.Tensor, state) -> int:
    """FLOPs of every scaled_dot_product_attention call of one forward (4 * Nq * Nk * d per head)."""
    total = 0
    original = F.scaled_dot_product_attention

    def counting(q, k, v, *args, **kwargs):
        nonlocal total
        total += 4 * q.shape[:-2].numel() * q.shape[-2] * k.shape[-2] * q.shape[-1]
        return original(q, k, v, *args, **kwargs)

    F.scaled_dot_product_attention = counting
    try:
        model(clip, state)
    finally:
        F.scaled_dot_product_attention = original
    return total


def peak_gflops(seconds: float = 1.0) -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        runs += 1
    return 2 * 1024**3 * runs / (time.perf_counter() - started) / 1e9


def bandwidth_gbs(seconds: float = 1.0) -> float:
    """Bytes per second of ``c = a + b`` on 16 M floats (12 bytes per element moved)."""
    a, b = torch.randn(16 << 20), torch.randn(16 << 20)
    c = torch.empty_like(a)
    torch.add(a, b, out=c)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.add(a, b, out=c)
        runs += 1
    return 12 * a.numel() * runs / (time.perf_counter() - started) / 1e9


def shape_bytes(shapes) -> int:
    """Bytes of an element-wise call: its tensor inputs plus an output as large as the largest (float32)."""
    sizes = [int(np.prod(s)) for s in shapes if isinstance(s, (list, tuple)) and s and all(isinstance(d, int) for d in s)]
    return 4 * (sum(sizes) + max(sizes, default=0))


def timed_pair(first, second, seconds: float) -> tuple[float, float]:
    """Median seconds per call of ``first`` and ``second``, called in turn, each first every
    other time (so load changes and what a call leaves in the caches hit both alike)."""
    calls = ((first, []), (second, []))
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or len(calls[0][1]) < 4:
        for fn, found in calls if len(calls[0][1]) % 2 == 0 else calls[::-1]:
            t = time.perf_counter()
            fn()
            found.append(time.perf_counter() - t)
    return float(np.median(calls[0][1])), float(np.median(calls[1][1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="memvit_tiny")
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per batch size and round (default 3)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    batches = [int(b) for b in args.batches.split(",")]
    model = longvid.build_model(args.model).eval()
    settings = live_settings_for(model)
    frames = torch.randn(3, settings.clip_frames, settings.size, settings.size)
    clip = LiveClip(frames, 0, 0.0, 1.0, torch.zeros(settings.clip_frames, dtype=torch.float64), settings.clip_frames)

    setups = {}
    for b in batches:
        stepper = BatchedStepper(model, b)
        for _ in range(model.memory_spec.cache_len + 1 if getattr(model, "memory_spec", None) else 2):
            stepper.step({row: clip for row in range(b)})  # memory full of entries, as in a running stream
        inputs = frames.expand(b, *frames.shape).contiguous()
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(inputs, stepper.state)
        with torch.inference_mode():
            flops = counter.get_total_flops() + attention_flops(model, inputs, stepper.state)
        setups[b] = (stepper, inputs, flops)

    def bare(b):  # the model alone on the stepper's inputs and memory (the stepper's state is not changed)
        stepper, inputs, _ = setups[b]
        with torch.inference_mode():
            model(inputs, stepper.state)

    engine_ms, model_ms, peaks, bandwidths = defaultdict(list), defaultdict(list), [], []
    for _ in range(args.rounds):
        peaks.append(peak_gflops())
        bandwidths.append(bandwidth_gbs())
        for b in batches:
            stepper = setups[b][0]
            engine, alone = timed_pair(lambda: stepper.step({row: clip for row in range(b)}), lambda: bare(b), args.seconds)
            engine_ms[b].append(1e3 * engine)
            model_ms[b].append(1e3 * alone)
    peak = float(np.mean(peaks))
    bandwidth = float(np.mean(bandwidths))
    print(f"# {args.model}, 1 torch thread, {args.rounds} rounds taking turns; mean (worst); "
          f"this core's float32 matmul peak {peak:.1f} GFLOP/s (1024^3, worst {min(peaks):.1f}), "
          f"memory bandwidth {bandwidth:.1f} GB/s (a + b, 64 MB each, worst {min(bandwidths):.1f})")
    print(f"{'batch':>5} {'engine ms/step':>16} {'model ms/step':>15} {'engine ms/clip':>15} {'overhead':>9} "
          f"{'GFLOP/clip':>10} {'GFLOP/s':>8} {'of peak':>8}")
    one = None
    for b in batches:
        flops = setups[b][2]
        e, m = float(np.mean(engine_ms[b])), float(np.mean(model_ms[b]))
        one = one or e / b
        print(f"{b:>5} {e:9.1f} ({max(engine_ms[b]):5.1f}) {m:8.1f} ({max(model_ms[b]):5.1f}) {e / b:15.2f} "
              f"{(e - m) / e:8.1%} {flops / b / 1e9:10.4f} {flops / (m / 1e3) / 1e9:8.1f} {flops / (m / 1e3) / 1e9 / peak:8.1%}")
    print(f"# a clip in a batch of {batches[-1]} costs {float(np.mean(engine_ms[batches[-1]])) / batches[-1] / one:.2f} "
          f"of a clip stepped alone ({one * batches[-1] / float(np.mean(engine_ms[batches[-1]])):.2f}x the clips/s per core)")

    print("# self CPU time per clip by kind of kernel (torch.profiler; it adds its own cost per call)")
    kinds = ("gemm/conv", "attention", "element-wise/copy", "other")
    print(f"{'batch':>5} " + " ".join(f"{k:>20}" for k in kinds) + f" {'calls/step':>11} {'element-wise MB/clip':>21} "
          f"{'their GB/s':>10} {'of bandwidth':>12}")
    for b in batches:
        steps = max(3, 48 // b)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(steps):
                bare(b)
        per_kind, calls, moved = defaultdict(float), 0, 0
        for event in prof.key_averages(group_by_input_shape=True):
            if event.key.startswith("aten::"):
                kind = kind_of(event.key)
                per_kind[kind] += event.self_cpu_time_total / 1e3
                calls += event.count
                if kind == "element-wise/copy":
                    moved += shape_bytes(event.input_shapes) * event.count
        total = sum(per_kind.values())
        seconds = per_kind["element-wise/copy"] / 1e3
        print(f"{b:>5} " + " ".join(f"{per_kind[k] / steps / b:8.2f} ms ({per_kind[k] / total:5.1%})" for k in kinds)
              + f" {calls / steps:11.0f} {moved / steps / b / 1e6:21.1f} {moved / seconds / 1e9:10.1f} "
              f"{moved / seconds / 1e9 / bandwidth:12.1%}")


if __name__ == "__main__":
    main()
