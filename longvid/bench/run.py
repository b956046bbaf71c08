"""``longvid bench``: what memory buys on ``recall``, trained from scratch on a CPU.

Every model is a tiny MViT (``memvit_tiny`` layout) trained with the training engine
(:class:`longvid.train.Trainer`, loss on each video's last clip) on generated recall
videos of ``max(distances) + 1`` clips (see :mod:`longvid.bench.synth`), then
evaluated on held-out scene seeds. Three families, each with a known *reach* (how many
clips back a cue can be seen):

* short-term MViT: the last clip only (reach 0);
* baseline scaling: one clip of ``k x T`` frames, the last ``k`` clips (reach ``k - 1``);
* MeMViT: ``M`` cached clips (consecutive sampler), read by the last block only, so
  information can enter from exactly the ``M`` previous clips (reach ``M``).

Evaluation is paired: every held-out scene is shown once per cue class, so a model
that cannot see the cue scores exactly ``1 / K``. Temporal support is
``(reach + 1) x clip seconds``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

import longvid
from longvid.bench import measure
from longvid.bench.synth import SynthSpec, normalize_frames, recall_sample, scene_clips
from longvid.errors import LongvidError
from longvid.progress import progress as progress_bar
from longvid.train import Trainer, TrainConfig, seed_everything
from longvid.train.loop import evaluate
from longvid.video.datasets import TensorVideos

EVAL_SEED_OFFSET = 1_000_000  # held-out scene seeds start here (training seeds are below)


@dataclass(frozen=True)
class Variant:
    """One model of the table: ``clips`` x T frames per input clip, ``memory_len`` cached clips."""

    name: str
    family: str  # "short-term", "baseline scaling" or "MeMViT"
    clips: int = 1
    memory_len: int = 0

    @property
    def reach(self) -> int:
        """How many clips before the current one a cue can be seen from."""
        return self.clips - 1 + self.memory_len

    def build(self, spec: SynthSpec) -> torch.nn.Module:
        """The tiny model at ``spec``'s clip size: ``mvit_tiny``, or for memory the
        ``memvit_tiny_recall`` layout (memory read by the last block only, so its reach
        is exactly ``M`` clips) with ``M = memory_len``."""
        overrides = dict(num_classes=spec.num_classes, num_frames=self.clips * spec.clip_frames, crop_size=spec.size, head_dropout=0.0)
        if self.memory_len:
            return longvid.build_model("memvit_tiny_recall", memory_len=self.memory_len, **overrides)
        return longvid.build_model("mvit_tiny", **overrides)


def short_term() -> Variant:
    return Variant("MViT short-term", "short-term")


def baseline(k: int) -> Variant:
    return Variant(f"MViT {k}x frames", "baseline scaling", clips=k)


def memvit(m: int) -> Variant:
    return Variant(f"MeMViT M={m}", "MeMViT", memory_len=m)


@dataclass(frozen=True)
class BenchConfig:
    """A benchmark run: data sizes, training recipe and the models compared."""

    distances: tuple[int, ...] = (1, 2, 4)
    train_scenes: int = 2048
    eval_scenes: int = 48  # each shown once per class and distance
    cue_in_view: float = 0.5  # share of training videos asked at d = 0
    epochs: int = 8
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 20
    variants: tuple[Variant, ...] = (short_term(), baseline(3), baseline(5), memvit(1), memvit(2), memvit(4))
    spec: SynthSpec = field(default_factory=SynthSpec)
    seed: int = 0

    @property
    def num_clips(self) -> int:
        return max(self.distances) + 1


MODES: dict[str, BenchConfig] = {
    "quick": BenchConfig(
        distances=(1, 2), train_scenes=256, eval_scenes=8, epochs=1, warmup_steps=4,
        variants=(short_term(), baseline(3), memvit(1), memvit(2)),
    ),
    "default": BenchConfig(),
    "full": BenchConfig(
        distances=(1, 2, 4, 8), train_scenes=4096, eval_scenes=128, epochs=3,
        variants=(short_term(), baseline(3), baseline(5), baseline(9), memvit(1), memvit(2), memvit(4), memvit(8)),
    ),
}  # fmt: skip


class UInt8Videos(TensorVideos):
    """:class:`TensorVideos` kept as uint8 (4x less memory), Kinetics-normalized per clip."""

    def clips(self, video: int, first: int = 0):
        return (normalize_frames(clip) for clip in self.videos[video][first:])


# -- data ------------------------------------------------------------------------------------


def train_distance(cfg: BenchConfig, seed: int) -> int:
    """A training video's distance: 0 (the cue in the asked clip, which teaches what a
    cue looks like) with probability ``cue_in_view``, else one of ``distances``."""
    rng = np.random.default_rng([cfg.seed, seed, 4])
    return 0 if rng.random() < cfg.cue_in_view else int(rng.choice(cfg.distances))


def train_data(cfg: BenchConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 clips ``(V, N, C, T, H, W)`` and labels ``(V,)`` of the training scenes."""
    samples = [recall_sample(s, cfg.spec, cfg.num_clips, train_distance(cfg, s)) for s in range(cfg.train_scenes)]
    return _render(samples, cfg.spec)


def eval_data(cfg: BenchConfig, distance: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out scenes at one ``distance``, each shown with every cue class."""
    samples = [
        recall_sample(EVAL_SEED_OFFSET + s, cfg.spec, cfg.num_clips, distance, cls=c)
        for s in range(cfg.eval_scenes)
        for c in range(cfg.spec.num_classes)
    ]
    return _render(samples, cfg.spec)


def _render(samples, spec: SynthSpec) -> tuple[torch.Tensor, torch.Tensor]:
    clips = torch.stack([scene_clips(s.scene, spec, normalize=False) for s in samples])
    return clips, torch.tensor([s.label for s in samples])


def source_for(variant: Variant, clips: torch.Tensor, labels: torch.Tensor, crop: bool = False) -> UInt8Videos:
    """What ``variant`` watches of each video: every clip (memory models) or one clip
    of the last ``variant.clips`` clips laid end to end ``(1, C, k*T, H, W)``.

    ``crop`` keeps only the last ``reach + 1`` clips of a memory model's videos: the
    last clip's output does not depend on earlier ones (memory is reset at a video's
    start and holds exactly ``reach`` clips), so training gives the same result for
    less compute."""
    targets = [{"label": int(y)} for y in labels]
    if variant.memory_len:
        return UInt8Videos(list(clips[:, -(variant.reach + 1) :] if crop else clips), targets)
    last = clips[:, -variant.clips :]  # (V, k, C, T, H, W)
    joined = last.permute(0, 2, 1, 3, 4, 5).flatten(2, 3)  # (V, C, k*T, H, W)
    return UInt8Videos(list(joined.unsqueeze(1)), targets)


# -- one variant -----------------------------------------------------------------------------


def train_config(cfg: BenchConfig, variant: Variant, out_dir: str) -> TrainConfig:
    return TrainConfig(
        model="memvit_tiny" if variant.memory_len else "mvit_tiny", num_classes=cfg.spec.num_classes,
        clip_frames=variant.clips * cfg.spec.clip_frames, size=cfg.spec.size, batch_size=cfg.batch_size,
        epochs=cfg.epochs, lr=cfg.lr, warmup_steps=cfg.warmup_steps, memory_drop=False, loss_clips="last",
        eval_every=0, log_every=10**9, checkpoint_every=10**9, seed=cfg.seed, out_dir=out_dir,
    )  # fmt: skip


def run_variant(cfg: BenchConfig, variant: Variant, train, evals: dict, out_dir: str, progress=None) -> tuple[dict, torch.nn.Module]:
    """Train, evaluate and measure one variant; returns its table row and the model."""
    seed_everything(cfg.seed)
    model = variant.build(cfg.spec)
    tcfg = train_config(cfg, variant, os.path.join(out_dir, "runs", variant.name.replace(" ", "_").replace("=", "")))
    source = source_for(variant, *train, crop=True)
    trainer = Trainer(model, tcfg, source, log=None, on_step=progress)
    started = time.perf_counter()
    trainer.fit()
    train_seconds = time.perf_counter() - started
    train_clips = cfg.epochs * sum(source.num_clips(v) for v in range(len(source)))
    accuracy = {
        d: evaluate(model, source_for(variant, *data), cfg.batch_size, pooling="last")["top1"] for d, data in evals.items()
    }
    clip = torch.zeros(1, 3, variant.clips * cfg.spec.clip_frames, cfg.spec.size, cfg.spec.size)
    batch = clip.expand(cfg.batch_size, -1, -1, -1, -1).contiguous()
    row = {
        "model": variant.name,
        "family": variant.family,
        "reach_clips": variant.reach,
        "support_s": (variant.reach + 1) * cfg.spec.clip_seconds,
        "accuracy": {str(d): a for d, a in accuracy.items()},
        "gflops": measure.gflops_per_clip(model),
        "params": measure.num_params(model),
        "train_mem_mb": measure.train_peak_mb(model, batch, cfg.spec.num_classes),
        "infer_mem_mb": measure.inference_peak_mb(model, clip),
        "train_clips_per_s": train_clips / train_seconds,
        "infer_clips_per_s": cfg.batch_size / measure.inference_seconds(model, batch),
    }
    return row, model


# -- the whole run ---------------------------------------------------------------------------


def run_bench(cfg: BenchConfig, out_dir: str = "bench-results", log: Callable[[str], None] | None = print, progress: bool = True) -> dict:
    """Run every variant of ``cfg``; write ``results.json``, ``results.md`` and
    ``bench.png`` under ``out_dir``; returns the results (also holding the models'
    weights under ``"models"`` as modules)."""
    if not cfg.distances or min(cfg.distances) < 1:
        raise LongvidError(f"distances must be >= 1, got {cfg.distances}")
    os.makedirs(out_dir, exist_ok=True)
    say = log or (lambda text: None)
    say(f"generating {cfg.train_scenes} training videos and {cfg.eval_scenes} held-out scenes "
        f"x {cfg.spec.num_classes} classes x {len(cfg.distances)} distances ({cfg.num_clips} clips of {cfg.spec.clip_seconds:g} s)")  # fmt: skip
    train = train_data(cfg)
    evals = {d: eval_data(cfg, d) for d in cfg.distances}
    rows, models = [], {}
    for variant in cfg.variants:
        bar = progress_bar(_train_steps(cfg, train[0].shape[0], variant), desc=f"train {variant.name}", unit="step",
                           enabled=progress, leave=False)
        row, models[variant.name] = run_variant(cfg, variant, train, evals, out_dir, None if bar is None else lambda record: bar.update(1))
        if bar is not None:
            bar.close()
        rows.append(row)
    results = {"config": _config_json(cfg), "chance": 100.0 / cfg.spec.num_classes, "rows": rows}
    write_results(results, out_dir)
    say(format_table(results))
    say(f"\nwrote {os.path.join(out_dir, 'results.json')}, {os.path.join(out_dir, 'results.md')}, {os.path.join(out_dir, 'bench.png')}")
    return {**results, "models": models}


def _train_steps(cfg: BenchConfig, videos: int, variant: Variant) -> int:
    """Training steps of one variant (its progress total)."""
    clips = videos * (min(cfg.num_clips, variant.reach + 1) if variant.memory_len else 1)
    return cfg.epochs * -(-clips // cfg.batch_size)


def _config_json(cfg: BenchConfig) -> dict:
    out = dataclasses.asdict(cfg)
    out["variants"] = [dict(dataclasses.asdict(v), reach=v.reach) for v in cfg.variants]
    return out


# -- output ------------------------------------------------------------------------------------


def format_table(results: dict) -> str:
    """The Markdown table of ``results["rows"]``."""
    rows = results["rows"]
    distances = list(rows[0]["accuracy"])
    head = ["model", "reach", "support (s)"] + [f"acc d={d} (%)" for d in distances]
    head += ["GFLOPs/clip", "params", "train mem (MB)", "infer mem (MB)", "train clips/s", "infer clips/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], str(r["reach_clips"]), f"{r['support_s']:g}"] + [f"{r['accuracy'][d]:.1f}" for d in distances]
        cells += [f"{r['gflops']:.4f}", f"{r['params'] / 1e3:.1f}K", f"{r['train_mem_mb']:.1f}", f"{r['infer_mem_mb']:.2f}",
                  f"{r['train_clips_per_s']:.0f}", f"{r['infer_clips_per_s']:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nchance: {results['chance']:.1f}%  (recall, paired held-out scenes)"


def write_results(results: dict, out_dir: str) -> None:
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write("# longvid bench: recall\n\n" + format_table(results) + "\n\n![Figure 3](bench.png)\n")
    plot_results(results["rows"], os.path.join(out_dir, "bench.png"), chance=results["chance"])


def plot_results(rows: Sequence[dict], path: str, chance: float | None = None) -> None:
    """Paper Figure 3 style: accuracy (largest d), GFLOPs, peak memory and time per clip
    vs temporal support, one line per family (both start at the short-term model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = list(rows[0]["accuracy"])[-1]
    panels = [
        (f"recall accuracy, d={d} (%)", lambda r: r["accuracy"][d]),
        ("GFLOPs per clip", lambda r: r["gflops"]),
        ("training peak memory (MB)", lambda r: r["train_mem_mb"]),
        ("inference time per clip (ms, batch 16)", lambda r: 1000.0 / r["infer_clips_per_s"]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (title, value) in zip(axes, panels):
        for family, style in (("baseline scaling", "o--"), ("MeMViT", "s-")):
            series = sorted((r for r in rows if r["family"] in (family, "short-term")), key=lambda r: r["support_s"])
            ax.plot([r["support_s"] for r in series], [value(r) for r in series], style, label=family)
        if chance is not None and "accuracy" in title:
            ax.axhline(chance, color="grey", lw=0.8, ls=":", label="chance")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("temporal support (s)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_demo_weights(results: dict, path: str) -> str:
    """Save the MeMViT of ``results`` with the longest reach (the package's demo
    weights) with :func:`longvid.checkpoints.save_checkpoint`; the metadata holds the
    class names, the clip timing and the row's accuracy. Returns ``path``."""
    from longvid.bench.synth import class_name
    from longvid.checkpoints import save_checkpoint

    rows = [r for r in results["rows"] if r["family"] == "MeMViT"]
    if not rows:
        raise LongvidError("this benchmark run trained no MeMViT to save")
    row = max(rows, key=lambda r: r["reach_clips"])
    spec = results["config"]["spec"]
    metadata = {
        "task": "longvid bench recall",
        "labels": json.dumps([class_name(i) for i in range(spec["num_classes"])]),
        "clip_frames": str(spec["clip_frames"]),
        "sample_fps": str(spec["sample_fps"]),
        "accuracy": json.dumps(row["accuracy"]),
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_checkpoint(results["models"][row["model"]], path, metadata)
    return path
