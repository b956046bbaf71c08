"""``longvid bench scaling``: the paper's Figure 3 (a-e) cost study for a real preset.

No training. For a full-size preset (default ``memvit16_16x4``) it compares two ways
to see further back, by temporal support (seconds of video a prediction can use):

* baseline scaling: the short-term MViT (no memory) on longer clips,
  ``T = 16, 32, 64, 128`` frames at the preset's sampling stride;
* MeMViT: the ``T``-frame clip plus ``M`` cached clips (memory in the preset's
  blocks): consecutive sampler, ``M = 1..4``, with pipelined compression (the
  preset's ``compress_stride``) and without (stride 1); and ``M = 2`` clips taken
  every ``G``-th clip (``gapG`` sampler, ``G = 2, 4, 8``: 5x, 9x and 17x the support).

Per row: parameters, GFLOPs per clip at the preset's crop size (fvcore convention,
steady state), and at ``size`` (the spatial size the CPU measurements use): inference
peak memory and time per clip (batch 1, memory full) and the peak memory of one
training step (batch 1, AdamW). Temporal support is ``(reach + 1) x T x stride / fps``
with reach ``M`` clips (consecutive) or ``M x G`` clips (``gapG``): the span the cached
clips come from.

The paper's Figure 4 (``compression`` rows): training memory and time of one step vs the
memory length ``M`` (consecutive sampler, full memory) for pipelined compression (each
past clip compressed once, when it is first read; the training graph holds one
compression per layer) and naive compression (every past clip kept raw and the whole
memory re-compressed, with gradient, every step).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from typing import Callable
from unittest import mock

import torch

from longvid.core import measure
from longvid.errors import LongvidError
from longvid.progress import progress as progress_bar
from longvid.memvit.flops import count_gflops
from longvid.memvit import MeMViT, get_config
from longvid.memvit import attention as memvit_attention
from longvid.memvit.memory import KVMemorySpec, LayerCache

FPS = 30.0  # Kinetics-style source frame rate
STRIDE = 4  # sampling stride of the 16x4 presets (frames)
BASELINE_FRAMES = (16, 32, 64, 128)
MEMORY_LENGTHS = (1, 2, 3, 4)
GAPS = (2, 4, 8)  # M = 2 clips every G-th clip: reach 2G
COMPRESSION_LENGTHS = (1, 2, 4, 8)  # Figure 4: memory lengths M


@dataclass(frozen=True)
class ScalingRow:
    """One configuration: ``frames`` per clip, ``memory_len`` clips, ``compressed`` memory."""

    family: str  # "baseline scaling" or "MeMViT" ("short-term" for the shared start)
    frames: int
    memory_len: int = 0
    compressed: bool = True
    gap: int = 1  # 1: consecutive sampler, else gapN

    @property
    def name(self) -> str:
        if not self.memory_len:
            return f"MViT T={self.frames}"
        gap = f" gap{self.gap}" if self.gap > 1 else ""
        return f"MeMViT M={self.memory_len}{gap}" + ("" if self.compressed else " (no compression)")

    @property
    def sampler(self) -> str:
        return f"gap{self.gap}" if self.gap > 1 else "consecutive"

    def support_s(self) -> float:
        return (self.memory_len * self.gap + 1) * self.frames * STRIDE / FPS


def scaling_rows(clip_frames: int = 16) -> list[ScalingRow]:
    """The study's configurations, the short-term model first."""
    rows = [ScalingRow("short-term", clip_frames)]
    rows += [ScalingRow("baseline scaling", t) for t in BASELINE_FRAMES if t != clip_frames]
    for compressed in (True, False):
        rows += [ScalingRow("MeMViT", clip_frames, m, compressed) for m in MEMORY_LENGTHS]
    rows += [ScalingRow("MeMViT", clip_frames, 2, True, gap) for gap in GAPS]
    return rows


def build(preset: str, row: ScalingRow, size: int, device: str = "cpu") -> MeMViT:
    """``preset`` with the row's clip length, memory and compression, at ``size``."""
    base = get_config(preset)
    overrides = dict(num_frames=row.frames, crop_size=size, memory_len=row.memory_len, sampler=row.sampler, drop_path_rate=0.0)
    if row.memory_len and base.memory_blocks is None and not base.memory_len:
        overrides["memory_blocks"] = tuple(range(0, base.depth, 2))
    if not row.compressed:
        overrides["compress_stride"] = (1, 1, 1)
    with torch.device(device):
        return MeMViT(get_config(preset, **overrides))


def measure_row(preset: str, row: ScalingRow, size: int) -> dict:
    """Params, GFLOPs (full crop and ``size``), inference memory/time and training memory."""
    full = build(preset, row, get_config(preset).crop_size, device="meta")
    model = build(preset, row, size)  # random weights: the costs do not depend on them
    clip = torch.randn(1, 3, row.frames, size, size, generator=torch.Generator().manual_seed(0))
    return {
        "model": row.name,
        "family": row.family,
        "frames": row.frames,
        "memory_len": row.memory_len,
        "compressed": row.compressed,
        "sampler": row.sampler if row.memory_len else None,
        "support_s": row.support_s(),
        "params": measure.num_params(model),
        "gflops": count_gflops(full, row.frames, full.config.crop_size),
        "gflops_at_size": count_gflops(model, row.frames, size),
        "infer_mem_mb": measure.inference_peak_mb(model, clip),
        "infer_ms": 1000.0 * measure.inference_seconds(model, clip, repeats=2),
        "train_mem_mb": measure.train_peak_mb(model, clip, model.config.num_classes),
    }


# -- Figure 4: naive vs pipelined compression ---------------------------------------------------


@dataclass(frozen=True)
class NaiveSpec(KVMemorySpec):
    """Naive compression's cache: every past clip raw, nothing stored compressed."""

    @property
    def raw_len(self) -> int:
        return self.cache_len

    @property
    def compressed_len(self) -> int:
        return 0


def naive_memory_step(cache: LayerCache, current: torch.Tensor, spec: KVMemorySpec, compress) -> tuple[torch.Tensor, LayerCache]:
    """``memory_step`` of naive compression: compress every read clip from its raw tokens,
    with gradient, every step (same values as pipelined compression, M compressions in the graph)."""
    b, n, c = current.shape
    raw = cache.raw.view(b, spec.cache_len, n, c)  # (B, M, N, C): clips t-M .. t-1
    read = torch.stack([compress(raw[:, spec.cache_len - d]) for d in spec.read_distances], dim=1)  # (B, M, Nc, C)
    new_raw = torch.cat([raw[:, 1:], current[:, None]], dim=1).flatten(1, 2)
    return read, LayerCache(new_raw.detach(), cache.compressed)


@contextlib.contextmanager
def compression_mode(model: MeMViT, naive: bool):
    """Run ``model`` with naive compression inside the block (pipelined: unchanged)."""
    if not naive:
        yield model
        return
    pipelined = model.memory_spec
    model.memory_spec = NaiveSpec(pipelined.memory_len, pipelined.sampler)
    try:
        with mock.patch.object(memvit_attention, "memory_step", naive_memory_step):
            yield model
    finally:
        model.memory_spec = pipelined


def train_step_cost(model: MeMViT, clip: torch.Tensor, naive: bool, repeats: int = 2) -> tuple[float, float]:
    """(peak MB, median seconds) of one training step (forward, backward, AdamW) with full
    memory: parameters, memory state, activations, gradients and optimizer state alive at once
    (the memory is filled beforehand, outside the count)."""
    with compression_mode(model, naive):
        model.train()
        labels = torch.zeros(clip.shape[0], dtype=torch.long)
        with torch.no_grad():
            state = model.init_state(clip.shape[0])
            for _ in range(model.memory_spec.cache_len):
                _, state = model(clip, state)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> None:
            logits, _ = model(clip, state)
            torch.nn.functional.cross_entropy(logits, labels).backward()

        tracker = measure.PeakMemory()
        tracker.track([*model.parameters(), *model.buffers(), *state.state_dict().values()])
        with tracker:
            step()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        times = []
        for _ in range(repeats + 1):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        model.zero_grad(set_to_none=True)
    return tracker.peak / 2**20, sorted(times[1:])[len(times[1:]) // 2]


def measure_compression(preset: str, size: int, lengths=COMPRESSION_LENGTHS) -> list[dict]:
    """Figure 4 rows: training peak memory and step time, pipelined vs naive, per ``M``."""
    rows = []
    frames = get_config(preset).num_frames
    clip = torch.randn(1, 3, frames, size, size, generator=torch.Generator().manual_seed(0))
    for m in lengths:
        model = build(preset, ScalingRow("MeMViT", frames, m), size)
        row = {"memory_len": m}
        for kind in ("pipelined", "naive"):
            row[f"{kind}_train_mem_mb"], seconds = train_step_cost(model, clip, naive=kind == "naive")
            row[f"{kind}_train_ms"] = 1000.0 * seconds
        rows.append(row)
    return rows


def format_compression(results: dict) -> str:
    s = results["size"]
    head = ["M", f"pipelined train mem@{s} (MB)", f"naive train mem@{s} (MB)", f"pipelined train ms@{s}", f"naive train ms@{s}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["compression"]:
        lines.append(f"| {r['memory_len']} | {r['pipelined_train_mem_mb']:.1f} | {r['naive_train_mem_mb']:.1f} | "
                     f"{r['pipelined_train_ms']:.0f} | {r['naive_train_ms']:.0f} |")  # fmt: skip
    return "\n".join(lines) + (f"\n\nFigure 4: one training step (batch 1, AdamW, memory full, consecutive sampler) of "
                               f"{results['preset']} at {s}x{s}; naive re-compresses the whole memory with gradient every step.")


def run_scaling(preset: str = "memvit16_16x4", size: int | None = None, out_dir: str = "bench-results", log: Callable[[str], None] | None = print, progress: bool = True) -> dict:
    """Measure every :func:`scaling_rows` configuration of ``preset``; write
    ``scaling.json``, ``scaling.md`` and ``scaling.png`` under ``out_dir``."""
    size = size or 96
    if size < 32 or size % 32:
        raise LongvidError(f"--size must be a multiple of 32 (>= 32), got {size}")
    base = get_config(preset)
    if base.head != "linear":
        raise LongvidError(f"scaling needs a classification preset (linear head), {preset!r} has {base.head!r}")
    os.makedirs(out_dir, exist_ok=True)
    rows = scaling_rows(base.num_frames)
    bar = progress_bar(len(rows), desc=f"scaling {preset}", unit="config", enabled=progress, leave=False)
    measured = []
    for row in rows:
        if bar is not None:
            bar.set_postfix_str(row.name)
        measured.append(measure_row(preset, row, size))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    results = {"preset": preset, "crop_size": base.crop_size, "size": size, "fps": FPS, "stride": STRIDE, "threads": torch.get_num_threads(), "rows": measured}
    results["compression"] = measure_compression(preset, size)
    write_scaling(results, out_dir)
    if log:
        log(format_scaling(results))
        log("\n" + format_compression(results))
        log(f"\nwrote {os.path.join(out_dir, 'scaling.json')}, {os.path.join(out_dir, 'scaling.md')}, {os.path.join(out_dir, 'scaling.png')}")
    return results


def format_scaling(results: dict) -> str:
    rows = results["rows"]
    short = rows[0]
    s, c = results["size"], results["crop_size"]
    head = ["model", "support (s)", "x support", f"GFLOPs@{c}", "x GFLOPs", "params (M)",
            f"infer mem@{s} (MB)", f"infer ms@{s}", f"train mem@{s} (MB)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], f"{r['support_s']:.1f}", f"{r['support_s'] / short['support_s']:.0f}x", f"{r['gflops']:.1f}",
                 f"{r['gflops'] / short['gflops']:.3f}", f"{r['params'] / 1e6:.1f}", f"{r['infer_mem_mb']:.0f}",
                 f"{r['infer_ms']:.0f}", f"{r['train_mem_mb']:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\n\n{results['preset']}: GFLOPs per clip at {c}x{c} (steady state); memory and time on this CPU, batch 1, "
            f"{results['threads']} thread(s), at {s}x{s}; support = (reach + 1) x T x {results['stride']} / {results['fps']:g} fps, reach = M (consecutive) or M x G (gapG).")  # fmt: skip
    return "\n".join(lines) + note


def write_scaling(results: dict, out_dir: str) -> None:
    with open(os.path.join(out_dir, "scaling.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out_dir, "scaling.md"), "w", encoding="utf-8") as f:
        f.write(f"# longvid bench scaling: {results['preset']}\n\n" + format_scaling(results) + "\n\n![Figure 3](scaling.png)\n")
        if results.get("compression"):
            f.write("\n## Naive vs pipelined compression (Figure 4)\n\n" + format_compression(results) + "\n")
    plot_scaling(results, os.path.join(out_dir, "scaling.png"))


def plot_scaling(results: dict, path: str) -> None:
    """GFLOPs, inference memory, inference time and training memory vs temporal support."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["size"]
    panels = [
        (f"GFLOPs per clip ({results['crop_size']}px)", "gflops"),
        (f"inference peak memory (MB, {s}px)", "infer_mem_mb"),
        (f"inference time per clip (ms, {s}px)", "infer_ms"),
        (f"training peak memory (MB, {s}px)", "train_mem_mb"),
    ]
    series = {
        "baseline scaling": lambda r: r["family"] in ("short-term", "baseline scaling"),
        "MeMViT": lambda r: r["family"] == "short-term" or (r["family"] == "MeMViT" and r["compressed"] and r["sampler"] == "consecutive"),
        "MeMViT M=2, gap sampler": lambda r: r["family"] == "short-term" or (r["sampler"] or "").startswith("gap"),
        "MeMViT, no compression": lambda r: r["family"] == "short-term" or (r["family"] == "MeMViT" and not r["compressed"]),
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (title, key) in zip(axes, panels):
        for (label, keep), style in zip(series.items(), ("o--", "s-", "^:", "d-.")):
            rows = sorted((r for r in results["rows"] if keep(r)), key=lambda r: r["support_s"])
            ax.plot([r["support_s"] for r in rows], [r[key] for r in rows], style, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("temporal support (s)")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{results['preset']}: cost vs temporal support", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
