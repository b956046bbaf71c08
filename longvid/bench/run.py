"""``longvid bench``: what memory buys on ``recall``, trained from scratch on a CPU.

Every row is trained here on generated recall videos of ``max(distances) + 1`` clips (see
:mod:`longvid.data.synth`) and evaluated on held-out scene seeds. Each row has a known
*reach* (how many clips back a cue can be seen):

* short-term MViT: the last clip only (reach 0);
* baseline scaling: one clip of ``k x T`` frames, the last ``k`` clips (reach ``k - 1``);
* MeMViT: ``M`` cached clips (consecutive sampler), read by the last block only, so
  information can enter from exactly the ``M`` previous clips (reach ``M``);
* MA-LMM and ReWind (:mod:`longvid.bench.recall_lmm`): a memory of the whole video, answered
  through an LLM (reach: every clip of the video).

The MViT rows are tiny MViTs (``memvit_tiny`` layout) trained with the training engine
(:class:`longvid.memvit.loop.Trainer`, loss on each video's last clip). Evaluation is paired:
every held-out scene is shown once per cue class, so a model that cannot see the cue
scores exactly ``1 / K``. Temporal support is ``(reach + 1) x clip seconds``.

A run trains every row for each seed (``seeds``): the seed draws the training videos, the
weights and the data order; the held-out scenes are the same for every seed. Rows run in
``workers`` processes (one thread each; a row's figures do not depend on the worker count).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from longvid.core import measure
from longvid.bench import recall_lmm
from longvid.bench.recall_lmm import LMMRow
from longvid.data.synth import SynthSpec, normalize_frames, recall_sample, scene_clips
from longvid.errors import LongvidError
from longvid.progress import is_terminal
from longvid.progress import progress as progress_bar
from longvid.core.seeding import seed_everything
from longvid.memvit.loop import Trainer
from longvid.registry import build_model
from longvid.memvit.run_config import MeMViTRunConfig
from longvid.memvit.loop import evaluate
from longvid.memvit.flops import gflops_per_clip
from longvid.data.sources import TensorVideos

EVAL_SEED_OFFSET = 1_000_000  # held-out scene seeds start here
TRAIN_SEEDS_PER_RUN = 100_000  # run seed s trains on scene seeds s * 100_000 + i
BEYOND_REACH_TOLERANCE = 5.0  # points around chance a row may score beyond its reach
WITHIN_REACH_MIN = 95.0  # accuracy a row must reach at every distance within its reach


@dataclass(frozen=True)
class Variant:
    """One MViT row: ``clips`` x T frames per input clip, ``memory_len`` cached clips."""

    name: str
    family: str  # "short-term", "baseline scaling" or "MeMViT"
    clips: int = 1
    memory_len: int = 0
    linear_init: str = "fan_in"  # Linear layers' initial std (MeMViTConfig.linear_init)

    @property
    def reach(self) -> int:
        """How many clips before the current one a cue can be seen from."""
        return self.clips - 1 + self.memory_len

    def build(self, spec: SynthSpec) -> torch.nn.Module:
        """The tiny model at ``spec``'s clip size: ``mvit_tiny``, or for memory the
        ``memvit_tiny_recall`` layout (memory read by the last block only, so its reach
        is exactly ``M`` clips) with ``M = memory_len``. Every row starts its Linear layers at
        ``1 / sqrt(fan_in)`` (ViT's 0.02 left some seeds on a plateau at these widths)."""
        overrides = dict(num_classes=spec.num_classes, num_frames=self.clips * spec.clip_frames, crop_size=spec.size,
                         head_dropout=0.0, linear_init=self.linear_init)  # fmt: skip
        if self.memory_len:
            return build_model("memvit_tiny_recall", memory_len=self.memory_len, **overrides)
        return build_model("mvit_tiny", **overrides)


def short_term() -> Variant:
    return Variant("MViT short-term", "short-term")


def baseline(k: int) -> Variant:
    return Variant(f"MViT {k}x frames", "baseline scaling", clips=k)


def memvit(m: int) -> Variant:
    return Variant(f"MeMViT M={m}", "MeMViT", memory_len=m)


@dataclass(frozen=True)
class BenchConfig:
    """A benchmark run: data sizes, the MViT training recipe and the rows compared.

    The recipe: batches of 32 videos, AdamW at ``lr`` with a linear warm-up and a cosine decay
    over ``epochs``; 512 updates per MViT row by default. Fewer updates leave some seeds on a
    plateau where two cue colours are still confused (75% within reach)."""

    distances: tuple[int, ...] = (1, 2, 4)
    train_scenes: int = 1024
    eval_scenes: int = 32  # each shown once per class and distance
    cue_in_view: float = 0.5  # share of training videos asked at d = 0
    epochs: int = 16
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 40  # steps of the schedule (memory-only steps count too)
    variants: tuple[Variant, ...] = (short_term(), baseline(5), memvit(2), memvit(4))
    lmm_rows: tuple[LMMRow, ...] = (recall_lmm.malmm(), recall_lmm.rewind())
    spec: SynthSpec = field(default_factory=SynthSpec)
    seed: int = 0

    @property
    def num_clips(self) -> int:
        return max(self.distances) + 1


MODES: dict[str, BenchConfig] = {
    "quick": BenchConfig(
        distances=(1, 2), train_scenes=512, eval_scenes=8, epochs=12,
        variants=(short_term(), baseline(3), memvit(2)),
        lmm_rows=(recall_lmm.malmm().with_(train_videos=256, epochs=6), recall_lmm.rewind().with_(train_videos=512, epochs=5, stage1_steps=50)),
    ),
    "default": BenchConfig(),
    "full": BenchConfig(
        distances=(1, 2, 4, 8), train_scenes=2048, eval_scenes=64, epochs=10,
        variants=(short_term(), baseline(3), baseline(5), baseline(9), memvit(1), memvit(2), memvit(4), memvit(8)),
    ),
}  # fmt: skip


class UInt8Videos(TensorVideos):
    """:class:`TensorVideos` kept as uint8 (4x less memory), Kinetics-normalized per clip."""

    def clips(self, video: int, first: int = 0):
        return (normalize_frames(clip) for clip in self.videos[video][first:])


# -- data ------------------------------------------------------------------------------------


def train_distance(cfg: BenchConfig, scene: int) -> int:
    """A training video's distance: 0 (the cue in the asked clip, which teaches what a
    cue looks like) with probability ``cue_in_view``, else one of ``distances``."""
    rng = np.random.default_rng([cfg.seed, scene, 4])
    return 0 if rng.random() < cfg.cue_in_view else int(rng.choice(cfg.distances))


def train_data(cfg: BenchConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 clips ``(V, N, C, T, H, W)`` and labels ``(V,)`` of the run's training scenes."""
    first = cfg.seed * TRAIN_SEEDS_PER_RUN
    scenes = range(first, first + cfg.train_scenes)
    return _render([recall_sample(s, cfg.spec, cfg.num_clips, train_distance(cfg, s)) for s in scenes], cfg.spec)


def train_cue_clips(cfg: BenchConfig) -> torch.Tensor:
    """``(V,)`` the clip in which each of :func:`train_data`'s videos shows its cue."""
    first = cfg.seed * TRAIN_SEEDS_PER_RUN
    return torch.tensor([cfg.num_clips - 1 - train_distance(cfg, s) for s in range(first, first + cfg.train_scenes)])


def answerable(cfg: BenchConfig, variant: Variant, clips: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The training videos whose cue lies within ``variant``'s reach. A video with its cue
    further back has a label the model cannot see: trained on it, a model memorizes noise
    (MeMViT M=2 on its d = 4 videos: training loss below the floor those labels set, and
    1-6% errors within reach on held-out videos)."""
    distances = cfg.num_clips - 1 - train_cue_clips(cfg)  # (V,)
    keep = distances <= variant.reach
    return clips[keep], labels[keep]


def eval_data(cfg: BenchConfig, distance: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out scenes at one ``distance``, each shown with every cue class (the same for every seed)."""
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


@dataclass
class RunData:
    """One seed's videos: training clips and labels, and the held-out set per distance."""

    train: tuple[torch.Tensor, torch.Tensor]
    evals: dict[int, tuple[torch.Tensor, torch.Tensor]]
    seconds: float  # CPU seconds spent generating them

    @classmethod
    def generate(cls, cfg: BenchConfig) -> "RunData":
        started = time.process_time()
        train = train_data(cfg)
        evals = {d: eval_data(cfg, d) for d in cfg.distances}
        return cls(train, evals, time.process_time() - started)


# -- one MViT row -----------------------------------------------------------------------------


def train_config(cfg: BenchConfig, variant: Variant, out_dir: str) -> MeMViTRunConfig:
    return MeMViTRunConfig(
        model="memvit_tiny" if variant.memory_len else "mvit_tiny", num_classes=cfg.spec.num_classes,
        clip_frames=variant.clips * cfg.spec.clip_frames, size=cfg.spec.size, batch_size=cfg.batch_size,
        epochs=cfg.epochs, lr=cfg.lr, warmup_steps=cfg.warmup_steps, memory_drop=False, loss_clips="last",
        eval_every=0, log_every=10**9, checkpoint_every=10**9, seed=cfg.seed, out_dir=out_dir,
    )  # fmt: skip


def run_variant(cfg: BenchConfig, variant: Variant, data: RunData, out_dir: str) -> tuple[dict, torch.nn.Module]:
    """Train, evaluate and measure one MViT row; returns its table row and the model."""
    clock = Clock()
    seed_everything(cfg.seed)
    model = variant.build(cfg.spec)
    tcfg = train_config(cfg, variant, os.path.join(out_dir, "runs", f"seed{cfg.seed}", _slug(variant.name)))
    source = source_for(variant, *answerable(cfg, variant, *data.train), crop=True)
    trainer = Trainer(model, tcfg, source, log=None)
    started = time.perf_counter()
    trainer.fit()
    train_seconds = time.perf_counter() - started
    clock.lap("train")
    train_clips = cfg.epochs * sum(source.num_clips(v) for v in range(len(source)))
    accuracy = {
        d: evaluate(model, source_for(variant, *clips), cfg.batch_size, pooling="last")["top1"] for d, clips in data.evals.items()
    }
    clock.lap("eval")
    clip = torch.zeros(1, 3, variant.clips * cfg.spec.clip_frames, cfg.spec.size, cfg.spec.size)
    batch = clip.expand(cfg.batch_size, -1, -1, -1, -1).contiguous()
    row = {
        "model": variant.name,
        "family": variant.family,
        "reach_clips": variant.reach,
        "support_s": (variant.reach + 1) * cfg.spec.clip_seconds,
        "accuracy": {str(d): a for d, a in accuracy.items()},
        "gflops": gflops_per_clip(model),
        "params": measure.num_params(model),
        "state_bytes": measure.stream_state_bytes(model, clip, variant.clips),
        "train_mem_mb": measure.train_peak_mb(model, batch, cfg.spec.num_classes),
        "infer_mem_mb": measure.inference_peak_mb(model, clip),
        "train_clips_per_s": train_clips / train_seconds,
        "infer_clips_per_s": cfg.batch_size / measure.inference_seconds(model, batch),
    }
    clock.lap("measure")
    return {**row, "cpu_seconds": clock.laps}, model


# -- one LMM row ------------------------------------------------------------------------------


def run_lmm(cfg: BenchConfig, row: LMMRow, data: RunData) -> tuple[dict, None]:
    """Train, evaluate and measure an MA-LMM or ReWind row on the run's videos (the first
    ``row.train_videos`` training videos)."""
    clock = Clock()
    model = recall_lmm.build(row, cfg.seed)
    clips, labels = (t[: row.train_videos] for t in data.train)
    frames = recall_lmm.as_frames(clips, cfg.spec, row.frame_stride)
    shown = recall_lmm.cue_frames(train_cue_clips(cfg)[: len(labels)], cfg.num_clips, cfg.spec, row.frame_stride)
    started = time.perf_counter()
    train_clips = recall_lmm.train(row, model, frames, labels, cfg.spec, cfg.seed, shown)
    train_seconds = time.perf_counter() - started
    clock.lap("train")
    accuracy = {
        str(d): recall_lmm.accuracy(row, model, recall_lmm.as_frames(c, cfg.spec, row.frame_stride), y, cfg.spec)
        for d, (c, y) in data.evals.items()
    }
    clock.lap("eval")
    costs = recall_lmm.costs(row, model, frames, cfg.spec, cfg.batch_size)
    clock.lap("measure")
    result = {
        "model": row.name,
        "family": row.family,
        "reach_clips": None,  # the whole video
        "support_s": cfg.num_clips * cfg.spec.clip_seconds,
        "accuracy": accuracy,
        **costs,
        "train_clips_per_s": train_clips / train_seconds,
        "cpu_seconds": clock.laps,
    }
    return result, None


class Clock:
    """CPU seconds of this process between :meth:`lap` calls, by name."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self.last = time.process_time()

    def lap(self, name: str) -> None:
        now = time.process_time()
        self.laps[name] = self.laps.get(name, 0.0) + now - self.last
        self.last = now


def _slug(name: str) -> str:
    return name.replace(" ", "_").replace("=", "")


# -- the whole run ---------------------------------------------------------------------------

_JOB_DATA: dict = {}  # what forked workers read: the seed's config, data and output folder


def _run_job(job: Variant | LMMRow) -> tuple[dict, dict | None]:
    """One row in a worker (one thread; it inherits the run's data when forked)."""
    torch.set_num_threads(1)
    cfg, data, out_dir = _JOB_DATA["cfg"], _JOB_DATA["data"], _JOB_DATA["out_dir"]
    if isinstance(job, LMMRow):
        row, _ = run_lmm(cfg, job, data)
        return row, None
    row, model = run_variant(cfg, job, data, out_dir)
    return row, {k: v.detach().clone() for k, v in model.state_dict().items()}


def default_workers() -> int:
    """Worker processes: one per CPU this process may use, at most 2 (rows are single-threaded)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


def run_bench(cfg: BenchConfig, seeds: Sequence[int] | None = None, out_dir: str = "bench-results",
              log: Callable[[str], None] | None = print, progress: bool = True, workers: int | None = None) -> dict:
    """Run every row of ``cfg`` for each seed of ``seeds`` (default ``(cfg.seed,)``); write
    ``results.json``, ``results.md`` and ``bench.png`` under ``out_dir``; returns the results
    (``"runs"``: each seed's rows; ``"rows"``: mean and min over seeds; ``"models"``: the
    first seed's MViT weights as state dicts)."""
    seeds = tuple(seeds) if seeds is not None else (cfg.seed,)
    if not cfg.distances or min(cfg.distances) < 1:
        raise LongvidError(f"distances must be >= 1, got {cfg.distances}")
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise LongvidError(f"seeds must be distinct integers >= 0, got {','.join(map(str, seeds))}")
    os.makedirs(out_dir, exist_ok=True)
    say = log or (lambda text: None)
    workers = workers or default_workers()
    jobs = sorted(cfg.variants + cfg.lmm_rows, key=lambda job: _expected_cost(job, cfg), reverse=True)  # longest first: balanced workers
    order = [j.name for j in cfg.variants + cfg.lmm_rows]
    say(f"longvid bench: {len(order)} models x {len(seeds)} seed(s) on {workers} worker process(es); "
        f"{cfg.train_scenes} training videos of {cfg.num_clips} clips of {cfg.spec.clip_seconds:g} s, "
        f"held-out: {cfg.eval_scenes} scenes x {cfg.spec.num_classes} classes x {len(cfg.distances)} distances")  # fmt: skip
    started = time.perf_counter()
    runs, models, data_seconds = [], {}, {}
    # a bar on a terminal only; elsewhere the one line per finished model is the progress
    bar = progress_bar(len(jobs) * len(seeds), desc="bench", unit="model", enabled=progress and is_terminal(sys.stderr), leave=False)
    for seed in seeds:
        seed_cfg = dataclasses.replace(cfg, seed=seed)
        data = RunData.generate(seed_cfg)
        data_seconds[seed] = data.seconds
        rows = {}
        for row, weights in _map_jobs(seed_cfg, data, out_dir, jobs, workers):
            rows[row["model"]] = row
            if weights is not None and seed == seeds[0]:
                models[row["model"]] = weights
            line = f"seed {seed} {row['model']}: " + _row_summary(row, cfg)
            if bar is None:
                say(line)
            else:
                bar.write(line)
                bar.update(1)
        runs.append({"seed": seed, "rows": [rows[name] for name in order], "data_cpu_seconds": data.seconds})
        results = {
            "config": _config_json(cfg),
            "seeds": [run["seed"] for run in runs],
            "chance": 100.0 / cfg.spec.num_classes,
            "rows": combine_runs(runs, cfg),
            "runs": runs,
            "workers": workers,
            "wall_seconds": time.perf_counter() - started,
        }
        write_results(results, out_dir)  # after every seed: a stopped run keeps the seeds it finished
    if bar is not None:
        bar.close()
    say(format_table(results))
    say("\n" + format_time_split(results))
    say(f"\nwrote {os.path.join(out_dir, 'results.json')}, {os.path.join(out_dir, 'results.md')}, {os.path.join(out_dir, 'bench.png')}")
    return {**results, "models": models}


def _map_jobs(cfg: BenchConfig, data: RunData, out_dir: str, jobs, workers: int):
    """``(row, weights)`` of each job as it finishes: in ``workers`` forked processes, or here."""
    _JOB_DATA.update(cfg=cfg, data=data, out_dir=out_dir)
    try:
        if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            threads = torch.get_num_threads()
            try:
                yield from map(_run_job, jobs)
            finally:
                torch.set_num_threads(threads)
            return
        with multiprocessing.get_context("fork").Pool(workers, initializer=_quiet_worker) as pool:
            yield from pool.imap_unordered(_run_job, jobs)
    finally:
        _JOB_DATA.clear()


def _quiet_worker() -> None:
    """A worker leaves signals to the parent: Ctrl-C is the parent's to handle, and the pool's
    SIGTERM at the end just ends it (not the CLI's handler it inherited, which would raise)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _expected_cost(job, cfg: BenchConfig) -> float:
    """Rough CPU milliseconds of a row's training (measured per step on this project's CPU), to
    start the longest rows first."""
    if isinstance(job, LMMRow):  # a ReWind stage-1 step (no LLM) costs about 0.8 of a stage-2 step
        steps = job.train_videos * job.epochs / job.batch_size + 0.8 * job.stage1_steps
        return steps * (250.0 if job.family == "MA-LMM" else 115.0)
    updates = cfg.epochs * cfg.train_scenes / cfg.batch_size
    return updates * (62.0 * job.clips + 14.0 * job.memory_len)


def _row_summary(row: dict, cfg: BenchConfig) -> str:
    accuracy = " / ".join(f"{a:.1f}" for a in row["accuracy"].values())
    seconds = row["cpu_seconds"]
    return f"accuracy {accuracy} % at d = {', '.join(row['accuracy'])}; CPU s: train {seconds['train']:.1f}, eval {seconds['eval']:.1f}"


def reach_check(row: dict, chance: float) -> list[str]:
    """What fails the benchmark's rule for a row (empty: it holds): >= 95% at every distance
    within its reach (``reach_clips`` None: the whole video), chance +- 5 beyond it. Reads the
    row's ``accuracy_min`` / ``accuracy_max`` (over seeds) when present."""
    worst = row.get("accuracy_min", row["accuracy"])
    best = row.get("accuracy_max", row["accuracy"])
    problems = []
    for d in row["accuracy"]:
        within = row["reach_clips"] is None or int(d) <= row["reach_clips"]
        if within and worst[d] < WITHIN_REACH_MIN:
            problems.append(f"d={d} {worst[d]:.1f} < {WITHIN_REACH_MIN:g}")
        if not within and max(abs(worst[d] - chance), abs(best[d] - chance)) > BEYOND_REACH_TOLERANCE:
            problems.append(f"d={d} beyond reach but {worst[d]:.1f}-{best[d]:.1f}")
    return problems


def combine_runs(runs: list[dict], cfg: BenchConfig) -> list[dict]:
    """One row per model over the seeds: accuracy mean (``accuracy``), min and max per distance,
    every other figure the mean; ``check``: what breaks the reach rule (empty: it holds)."""
    chance = 100.0 / cfg.spec.num_classes
    combined = []
    for rows in zip(*(run["rows"] for run in runs)):
        first = rows[0]
        row = dict(first)
        for key, value in first.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "reach_clips":
                row[key] = sum(r[key] for r in rows) / len(rows)
        distances = list(first["accuracy"])
        row["accuracy"] = {d: sum(r["accuracy"][d] for r in rows) / len(rows) for d in distances}
        row["accuracy_min"] = {d: min(r["accuracy"][d] for r in rows) for d in distances}
        row["accuracy_max"] = {d: max(r["accuracy"][d] for r in rows) for d in distances}
        row["cpu_seconds"] = {k: sum(r["cpu_seconds"][k] for r in rows) for k in first["cpu_seconds"]}
        row["check"] = reach_check(row, chance)
        combined.append(row)
    return combined


def _config_json(cfg: BenchConfig) -> dict:
    out = dataclasses.asdict(cfg)
    out["variants"] = [dict(dataclasses.asdict(v), reach=v.reach) for v in cfg.variants]
    return out


# -- output ------------------------------------------------------------------------------------


def format_table(results: dict) -> str:
    """The Markdown table of ``results["rows"]`` (with several seeds: accuracy ``mean (min)``)."""
    rows = results["rows"]
    several = len(results.get("seeds", [0])) > 1
    distances = list(rows[0]["accuracy"])
    head = ["model", "reach (clips)", "support (s)"] + [f"acc d={d} (%)" for d in distances] + ["reach rule"]
    head += ["GFLOPs/clip", "LLM GFLOPs/answer", "params", "state bytes/stream", "train mem (MB)", "infer mem (MB)",
             "train clips/s", "infer clips/s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        reach = "video" if r["reach_clips"] is None else str(r["reach_clips"])
        accuracy = [f"{r['accuracy'][d]:.1f}" + (f" ({r['accuracy_min'][d]:.1f})" if several else "") for d in distances]
        rule = "holds" if not r.get("check") else "FAILS: " + "; ".join(r["check"])
        llm = f"{r['llm_gflops_per_answer']:.4f}" if "llm_gflops_per_answer" in r else "-"
        params = f"{r['params'] / 1e3:.1f}K" + (f" + LLM {r['llm_params'] / 1e3:.0f}K" if "llm_params" in r else "")
        cells = [r["model"], reach, f"{r['support_s']:g}", *accuracy, rule, f"{r['gflops']:.4f}", llm, params,
                 f"{r['state_bytes']:,.0f}", _mb(r.get("train_mem_mb")), _mb(r.get("infer_mem_mb")),
                 f"{r['train_clips_per_s']:.0f}", f"{r['infer_clips_per_s']:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    seeds = ", ".join(map(str, results.get("seeds", [0])))
    note = f"\n\nchance: {results['chance']:.1f}% (recall, paired held-out scenes); seed(s) {seeds}"
    if several:
        note += "; accuracy: mean (min) over the seeds"
    return "\n".join(lines) + note


def _mb(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_time_split(results: dict) -> str:
    """Where the CPU time went: data generation, then per row training / evaluation / measurement."""
    runs = results["runs"]
    data = sum(run["data_cpu_seconds"] for run in runs)
    totals = {"train": 0.0, "eval": 0.0, "measure": 0.0}
    lines = []
    for row in results["rows"]:
        s = row["cpu_seconds"]
        for key in totals:
            totals[key] += s.get(key, 0.0)
        lines.append(f"  {row['model']:<16} train {s['train']:6.1f}  eval {s['eval']:5.1f}  measure {s['measure']:5.1f}")
    cpu = data + sum(totals.values())
    head = (f"CPU seconds ({len(runs)} seed(s)): data generation {data:.1f}, training {totals['train']:.1f}, "
            f"evaluation {totals['eval']:.1f}, measurement {totals['measure']:.1f}; total {cpu:.1f} "
            f"(wall {results['wall_seconds']:.0f} s with {results['workers']} worker process(es))")  # fmt: skip
    return "\n".join([head, *lines])


def write_results(results: dict, out_dir: str) -> None:
    from longvid.fileio import write_text_atomically

    write_text_atomically(os.path.join(out_dir, "results.json"), json.dumps(results, indent=1))
    write_text_atomically(os.path.join(out_dir, "results.md"),
                          "# longvid bench: recall\n\n" + format_table(results) + "\n\n![Figure 3](bench.png)\n")
    plot_results(results["rows"], os.path.join(out_dir, "bench.png"), chance=results["chance"])


FAMILY_STYLES = (("baseline scaling", "o--"), ("MeMViT", "s-"), ("MA-LMM", "^"), ("ReWind", "D"))


def plot_results(rows: Sequence[dict], path: str, chance: float | None = None) -> None:
    """Paper Figure 3 style: accuracy (largest d), GFLOPs, peak memory and time per clip
    vs temporal support, one line per MViT family (both start at the short-term model)
    and one point per LMM (their LLM is not counted in GFLOPs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = list(rows[0]["accuracy"])[-1]
    panels = [
        (f"recall accuracy, d={d} (%)", lambda r: r["accuracy"][d]),
        ("GFLOPs per clip (LMMs: encoder + memory)", lambda r: r["gflops"]),
        ("training peak memory (MB)", lambda r: r.get("train_mem_mb")),
        ("inference time per clip (ms, batch 32)", lambda r: 1000.0 / r["infer_clips_per_s"]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6))
    for ax, (title, value) in zip(axes, panels):
        for family, style in FAMILY_STYLES:
            members = ("short-term",) if family in ("baseline scaling", "MeMViT") else ()
            series = sorted((r for r in rows if r["family"] in (family, *members) and value(r) is not None), key=lambda r: r["support_s"])
            if any(r["family"] == family for r in series):
                ax.plot([r["support_s"] for r in series], [value(r) for r in series], style, label=family)
        if chance is not None and "accuracy" in title:
            ax.axhline(chance, color="grey", lw=0.8, ls=":", label="chance")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("temporal support (s)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_demo_weights(results: dict, path: str) -> str:
    """Save the MeMViT of ``results`` with the longest reach (the package's demo
    weights, first seed) with :func:`longvid.core.checkpoints.save_checkpoint`; the metadata holds the
    class names, the clip timing and the row's accuracy. Returns ``path``."""
    from longvid.data.synth import class_name
    from longvid.core.checkpoints import save_checkpoint

    rows = [r for r in results["runs"][0]["rows"] if r["family"] == "MeMViT"]
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
        "seed": str(results["runs"][0]["seed"]),
    }
    variant = memvit(row["reach_clips"])
    model = variant.build(SynthSpec(**spec))
    model.load_state_dict(results["models"][row["model"]])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_checkpoint(model, path, metadata)
    return path
