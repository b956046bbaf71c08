"""One-command GPU check of MeMViT-16: eval and training speed, roofline, bf16 agreement.

On a CUDA device (about 3 minutes: each measurement is the median step over 10 s): MeMViT-16 (``memvit16_16x4``, 16x224x224)
eval clips/s at batch 1 and 16 in fp32 and bf16 autocast (each stream at steady state,
memory full), training clips/s and peak memory at batch 8 (fp32 and bf16 autocast,
AdamW, memory carried between steps without its graph), the GEMM roofline of the device
(fp32 and bf16 square matmuls) with each run's achieved GFLOP/s as a fraction of it
(eval: 2 x ``longvid.memvit.flops`` multiply-adds per clip; training: 3x that), and the
agreement of bf16 with fp32 (top-1 agreement, max |prob diff|) over the eval clips, and
the ``longvid stream`` pipeline on the device: decode-only, model-only and pipelined walls
over a generated 320x240 video of ``--stream-seconds`` (decoding in its own process, uint8
clips copied from pinned memory on a side stream and normalized on the GPU; see
:mod:`longvid.bench.stream_overlap`).

Without a GPU (or with ``--tiny``) it says "no GPU: CPU fallback" and runs the same
checks on CPU with the tiny preset ``memvit_tiny`` (16x64x64, batches 1/4, training
batch 2) on a budget of seconds.

    python benchmarks/gpu_check.py [--tiny] [--seconds 8] [--gemm-n 2048] [--stream-seconds 60] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from longvid.precision import cpu_bf16_support
from longvid.bench import roofline
from longvid.bench.stream_overlap import describe as describe_overlap
from longvid.bench.stream_overlap import measure_overlap
from longvid.data.synth import write_demo_video
from longvid.memvit.flops import model_cost
from longvid.memvit import build_model
from longvid.memvit.loop import peak_memory_mb

TRAIN_STEP_FACTOR = 3  # forward + backward ~ 3x forward multiply-adds


@dataclass(frozen=True)
class Setup:
    device: torch.device
    preset: str
    frames: int
    size: int
    eval_batches: tuple[int, ...]
    train_batch: int
    min_steps: int
    seconds: float  # time budget of one measurement (after warm-up)
    gemm_n: int


def pick_setup(args: argparse.Namespace) -> tuple[Setup, str]:
    if torch.cuda.is_available() and not args.tiny:
        device = torch.device("cuda")
        setup = Setup(device, "memvit16_16x4", 16, 224, (1, 16), 8, 5, args.seconds or 10.0, args.gemm_n or 2048)
        return setup, f"GPU: {torch.cuda.get_device_name(device)}"
    reason = "no GPU: CPU fallback" if not torch.cuda.is_available() else "--tiny: CPU fallback"
    setup = Setup(torch.device("cpu"), "memvit_tiny", 16, 64, (1, 4), 2, 2, args.seconds or 1.0, args.gemm_n or 1024)
    return setup, f"{reason} ({setup.preset}, {torch.get_num_threads()} thread(s))"


def precision(device: torch.device, dtype: str):
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bfloat16" else contextlib.nullcontext()


def median_step_seconds(step, setup: Setup) -> float:
    """Run ``step()`` at least ``min_steps`` times and until ``seconds`` pass; the median step time.

    Each step is timed alone (device synchronized), and the median is robust to the
    bursts of load of a shared machine.
    """
    times: list[float] = []
    roofline.sync(setup.device)
    while len(times) < setup.min_steps or sum(times) < setup.seconds:
        start = time.perf_counter()
        step()
        roofline.sync(setup.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def eval_check(setup: Setup, batch: int, gmacs: float, rates: dict) -> dict:
    """fp32 and bf16 streams of one model on the same clips: clips/s each, then agreement."""
    torch.manual_seed(0)
    model = build_model(setup.preset, num_frames=setup.frames, crop_size=setup.size).to(setup.device).eval()
    states = {d: model.init_state(batch, device=setup.device) for d in ("float32", "bfloat16")}
    probs = {"float32": [], "bfloat16": []}
    clip = torch.randn(batch, 3, setup.frames, setup.size, setup.size, device=setup.device)  # (B, 3, T, H, W)
    warmup = (model.memory_spec.cache_len if model.memory_spec else 0) + 1
    result = {"batch": batch}
    with torch.inference_mode():
        for dtype in ("float32", "bfloat16"):

            def step(dtype=dtype):
                clip.normal_()  # a fresh clip per step, same seed sequence for both dtypes
                with precision(setup.device, dtype):
                    logits, states[dtype] = model(clip, states[dtype])
                probs[dtype].append(logits.float().softmax(-1).cpu())

            torch.manual_seed(1)
            for _ in range(warmup):
                step()
            clips_per_s = batch / median_step_seconds(step, setup)
            achieved = roofline.achieved_gflops_per_s(gmacs * clips_per_s, 1.0)
            result[dtype] = {"clips_per_s": clips_per_s, "gflops_per_s": achieved, **{f"frac_{d}_gemm": roofline.roofline_fraction(achieved, r) for d, r in rates.items()}}
    pairs = list(zip(probs["float32"], probs["bfloat16"]))  # same clips: both ran the same seeded sequence
    result["agreement"] = {
        "clips": sum(a.shape[0] for a, _ in pairs),
        "top1_agreement": sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in pairs) / sum(a.shape[0] for a, _ in pairs),
        "max_abs_prob_diff": max(float((a - b).abs().max()) for a, b in pairs),
    }
    return result


def train_check(setup: Setup, dtype: str, gmacs: float, rates: dict) -> dict:
    """Training clips/s and peak memory at ``setup.train_batch`` in ``dtype``."""
    torch.manual_seed(0)
    model = build_model(setup.preset, num_frames=setup.frames, crop_size=setup.size).to(setup.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = setup.train_batch
    clip = torch.randn(batch, 3, setup.frames, setup.size, setup.size, device=setup.device)  # (B, 3, T, H, W)
    labels = torch.zeros(batch, dtype=torch.long, device=setup.device)
    num_classes = model.config.num_classes
    holder = {"state": model.init_state(batch, device=setup.device)}

    def step():
        clip.normal_()
        labels.random_(num_classes)
        with precision(setup.device, dtype):
            logits, state = model(clip, holder["state"])
            loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        holder["state"] = state.detach()

    if setup.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(setup.device)
    try:
        for _ in range(2):
            step()
        clips_per_s = batch / median_step_seconds(step, setup)
    except torch.OutOfMemoryError:
        return {"dtype": dtype, "batch": batch, "error": "out of memory"}
    achieved = roofline.achieved_gflops_per_s(TRAIN_STEP_FACTOR * gmacs * clips_per_s, 1.0)
    return {
        "dtype": dtype, "batch": batch, "clips_per_s": clips_per_s, "peak_mem_mb": peak_memory_mb(setup.device), "gflops_per_s": achieved,
        **{f"frac_{d}_gemm": roofline.roofline_fraction(achieved, r) for d, r in rates.items()},
    }  # fmt: skip


def stream_check(setup: Setup, seconds: float) -> dict:
    """The stream pipeline's overlap on the device (2 interleaved repeats on a GPU, 1 on CPU)."""
    from longvid.predict import settings_for

    torch.manual_seed(0)
    model = build_model(setup.preset).to(setup.device).eval()
    settings = settings_for(model, clip_frames=setup.frames, size=setup.size)
    with tempfile.TemporaryDirectory() as folder:
        video = os.path.join(folder, "stream.mp4")
        write_demo_video(video, seconds=seconds, width=320, height=240)
        return measure_overlap(model, video, settings, repeats=2 if setup.device.type == "cuda" else 1, device=setup.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="run the CPU fallback (memvit_tiny on CPU) even with a GPU")
    parser.add_argument("--seconds", type=float, default=None, help="time budget per measurement (GPU 10, CPU 1)")
    parser.add_argument("--gemm-n", type=int, default=None, help="roofline matmul size (GPU 2048, CPU 1024)")
    parser.add_argument("--stream-seconds", type=float, default=None, help="stream overlap video length (GPU 60, CPU 4)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    setup, where = pick_setup(args)
    print(where, flush=True)
    if setup.device.type == "cpu":
        native, reason = cpu_bf16_support()
        print(f"bf16: {'native' if native else 'NOT native on this CPU: bf16 autocast runs emulated and slow'} ({reason})", flush=True)
    if setup.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (roofline and model alike)
        torch.backends.cudnn.allow_tf32 = False
    short = {} if setup.device.type == "cuda" else {"repeats": 3, "min_seconds": 0.05}  # CPU fallback: a short budget
    rates = roofline.gemm_roofline(setup.gemm_n, setup.device, **short)
    print(roofline.describe(rates), flush=True)
    gmacs = model_cost(setup.preset, clip_frames=setup.frames, size=setup.size).gflops  # per clip
    print(f"{setup.preset} {setup.frames}x{setup.size}x{setup.size}: {2 * gmacs:.2f} GFLOP per clip (eval), x{TRAIN_STEP_FACTOR} per training clip", flush=True)

    evals = []
    for batch in setup.eval_batches:
        r = eval_check(setup, batch, gmacs, rates)
        evals.append(r)
        for dtype in ("float32", "bfloat16"):
            d = r[dtype]
            print(f"eval  batch {batch:>2} {dtype:<9} {d['clips_per_s']:8.2f} clips/s  {d['gflops_per_s']:8.1f} GFLOP/s = {100 * d['frac_float32_gemm']:.0f}% fp32 / {100 * d['frac_bfloat16_gemm']:.0f}% bf16 GEMM", flush=True)
        a = r["agreement"]
        print(f"eval  batch {batch:>2} bf16 vs fp32: top-1 agreement {100 * a['top1_agreement']:.1f}% over {a['clips']} clips, max |prob diff| {a['max_abs_prob_diff']:.2e}", flush=True)
    trains = []
    for dtype in ("float32", "bfloat16"):
        r = train_check(setup, dtype, gmacs, rates)
        trains.append(r)
        if "error" in r:
            print(f"train batch {r['batch']:>2} {dtype:<9} {r['error']}", flush=True)
            continue
        print(f"train batch {r['batch']:>2} {dtype:<9} {r['clips_per_s']:8.2f} clips/s  peak memory {r['peak_mem_mb']:.0f} MB  {r['gflops_per_s']:8.1f} GFLOP/s = {100 * r['frac_float32_gemm']:.0f}% fp32 / {100 * r['frac_bfloat16_gemm']:.0f}% bf16 GEMM", flush=True)
    stream_seconds = args.stream_seconds or (60.0 if setup.device.type == "cuda" else 4.0)
    stream = stream_check(setup, stream_seconds)
    print(f"stream {setup.preset} on {setup.device.type}, {stream_seconds:g} s 320x240 video: {describe_overlap(stream)}", flush=True)
    if args.json:
        print(json.dumps({"where": where, "preset": setup.preset, "gemm_gflops_per_s": {d: r.gflops_per_s for d, r in rates.items()},
                          "eval": evals, "train": trains, "stream": stream}))


if __name__ == "__main__":
    main()
