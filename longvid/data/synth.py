"""Generated long videos whose answers need long-term memory.

A *scene* is a seeded stream of ``num_clips`` clips of ``spec.clip_seconds`` each:
grey distractor shapes bounce over a dark noisy background, and brief *cue events*
(a large, saturated object of one of ``K`` classes = colour x shape) flash inside
chosen clips. Everything in a frame is a function of the scene seed and the time,
except the cues, which are drawn only inside their own clip. So for one scene seed,
every frame outside the cue clip is identical whatever the cue class is: a model
that sees only clips after the cue cannot beat chance on ``recall`` (see the tests).

Two outputs, the same content:

* tensors, fast, for training (:func:`scene_clips`, :func:`recall_batch`):
  clips ``(num_clips, C, T, H, W)`` sampled at ``spec.sample_fps``;
* real video files with PyAV (:func:`write_scene`, :func:`write_dataset`), with
  annotations in the generic format of ``longvid.data.annotations`` (CSV/JSON/JSONL).

Tasks (one annotation row per video):

* ``recall``: which object flashed? (one cue, ``distance`` clips before the last clip);
* ``count``: how many times did a given object flash? (0..``max_count``);
* ``order``: which of two objects flashed first?
* ``grounding``: start/end seconds of a described flash among 1-3 flashes;
* ``qa``: a mix of the recall/count/order questions (every row carries
  ``question``/``answer`` text as well).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from longvid.errors import LongvidError
from longvid.video.transforms import KINETICS_MEAN, KINETICS_STD
from longvid.video.writer import write_video

COLOURS = {
    "red": (0.95, 0.1, 0.1),
    "green": (0.1, 0.85, 0.1),
    "blue": (0.15, 0.3, 1.0),
    "yellow": (0.95, 0.9, 0.1),
}
SHAPES = ("square", "disk", "triangle", "cross")
# Classes: all colour x shape pairs, diagonal first, so that the first 4 classes
# differ in colour (easy for tiny models) and larger K also needs the shape.
CLASSES: tuple[tuple[str, str], ...] = tuple(
    (colour, SHAPES[(i + offset) % len(SHAPES)])
    for offset in range(len(SHAPES))
    for i, colour in enumerate(COLOURS)
)
TASKS = ("recall", "count", "order", "grounding", "qa")


def class_name(index: int) -> str:
    """``"red square"`` for class 0, etc."""
    colour, shape = CLASSES[index]
    return f"{colour} {shape}"


GENERIC_CAPTION = "an object flashes"  # a frame-level caption of every frame that shows a cue, whatever its class


def frame_captions(num_classes: int) -> list[str]:
    """The frame-level captions of the benchmarks' ReWind stage 1: ``"the <class> flashes"`` for
    each class, then :data:`GENERIC_CAPTION`."""
    return [f"the {class_name(c)} flashes" for c in range(num_classes)] + [GENERIC_CAPTION]


def caption_positives(frame_classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N, num_classes + 1)`` bool: which of :func:`frame_captions` each frame matches, from the
    class of the cue it shows ``frame_classes (N,)``: its class's caption and the generic one;
    a frame whose value is not a class (no cue) matches none."""
    positives = frame_classes[:, None] == torch.arange(num_classes)[None]  # (N, K)
    return torch.cat([positives, positives.any(1, keepdim=True)], dim=1)  # (N, K + 1)


@dataclass(frozen=True)
class SynthSpec:
    """How scenes look and how they are sampled into clips.

    clip_frames:     T, frames per clip the model sees.
    sample_fps:      rate of those frames; a clip lasts ``clip_frames / sample_fps`` s.
    size:            side of the square tensor frames (:func:`scene_clips`).
    supersample:     tensor frames are rendered this many times larger, then area-pooled.
    num_classes:     K cue classes (the first K of :data:`CLASSES`, at most 16).
    num_distractors: grey shapes bouncing around.
    distractor_size, cue_size: side (or diameter) as a fraction of the short side.
    cue_fraction:    part of its clip a cue is visible (centred; >= one frame).
    noise:           std of the per-frame noise (frame values in [0, 1]).
    noise_cells:     noise is drawn on this many cells along the short side.
    """

    clip_frames: int = 4
    sample_fps: float = 4.0
    size: int = 32
    supersample: int = 2
    num_classes: int = 4
    num_distractors: int = 3
    distractor_size: float = 0.2
    cue_size: float = 0.5
    cue_fraction: float = 0.5
    noise: float = 0.05
    noise_cells: int = 32

    def __post_init__(self) -> None:
        if self.clip_frames < 2:
            raise LongvidError(f"clip_frames must be >= 2, got {self.clip_frames}")
        if not 1 <= self.num_classes <= len(CLASSES):
            raise LongvidError(f"num_classes must be in 1..{len(CLASSES)}, got {self.num_classes}")
        if self.sample_fps <= 0 or self.size < 1 or self.supersample < 1:
            raise LongvidError("sample_fps, size and supersample must be positive")

    @property
    def clip_seconds(self) -> float:
        return self.clip_frames / self.sample_fps

    def cue_samples(self) -> tuple[int, int]:
        """First and last frame index (within a clip) on which a cue is visible."""
        length = max(1, round(self.clip_frames * self.cue_fraction))
        first = max(1, (self.clip_frames - length) // 2)
        return first, min(self.clip_frames - 1, first + length - 1)


@dataclass(frozen=True)
class Event:
    """A cue of class ``cls`` flashing inside clip ``clip`` (0-based)."""

    cls: int
    clip: int


@dataclass(frozen=True)
class Scene:
    """A seeded video of ``num_clips`` clips with cue ``events``."""

    seed: int
    num_clips: int
    events: tuple[Event, ...] = ()

    def event_interval(self, event: Event, spec: SynthSpec) -> tuple[float, float]:
        """Seconds ``[start, end)`` during which ``event`` is visible.

        The interval is centred on the cue's sampled frames with half a frame of
        margin each side, so sampling at ``spec.sample_fps`` from any file rate above
        it shows the cue on exactly the same frames.
        """
        first, last = spec.cue_samples()
        clip_start = event.clip * spec.clip_seconds
        return clip_start + (first - 0.5) / spec.sample_fps, clip_start + (last + 0.5) / spec.sample_fps

    def duration(self, spec: SynthSpec) -> float:
        return self.num_clips * spec.clip_seconds


@dataclass
class Sample:
    """A scene with its task: label (class index or count), question/answer text,
    grounding query and target interval (seconds), and the recall distance."""

    scene: Scene
    task: str
    label: int
    question: str
    answer: str
    query: str = ""
    target: tuple[float, float] | None = None
    distance: int | None = None
    meta: dict = field(default_factory=dict)


# -- rendering -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """The cue-independent part of a scene, drawn from its seed."""

    background: np.ndarray  # (3,)
    kinds: tuple[str, ...]  # distractor shapes
    colours: np.ndarray  # (S, 3) grey-ish
    start: np.ndarray  # (S, 2) in [0, 1): phase of the bounce along x, y
    velocity: np.ndarray  # (S, 2) bounce ranges per second


def _layout(seed: int, spec: SynthSpec) -> _Layout:
    rng = np.random.default_rng([seed, 0])
    count = spec.num_distractors
    grey = rng.uniform(0.3, 0.6, size=(count, 1))
    colours = np.clip(grey + rng.uniform(-0.05, 0.05, size=(count, 3)), 0, 1)
    speed = rng.uniform(0.15, 0.5, size=(count, 2)) * rng.choice([-1, 1], size=(count, 2))
    return _Layout(
        background=rng.uniform(0.02, 0.15, size=3),
        kinds=tuple(rng.choice(["square", "disk"], size=count)),
        colours=colours,
        start=rng.uniform(0, 1, size=(count, 2)),
        velocity=speed,
    )


def _cue_position(seed: int, event_index: int, height: float, width: float, radius: float) -> tuple[float, float]:
    """Centre ``(x, y)`` (short-side units) of a cue, inside the central square so a
    center crop keeps it whole. Drawn from the scene seed, not from the cue class."""
    rng = np.random.default_rng([seed, 1, event_index])
    side = min(height, width)
    x0, y0 = (width - side) / 2, (height - side) / 2
    x, y = rng.uniform(radius, side - radius, size=2)
    return x0 + x, y0 + y


def _shape_mask(kind: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside-test for a shape of half-size 1 at the origin; ``u, v`` any shape."""
    au, av_ = u.abs(), v.abs()
    if kind == "square":
        return (au <= 1) & (av_ <= 1)
    if kind == "disk":
        return u * u + v * v <= 1
    if kind == "triangle":  # pointing up (v grows downwards)
        return (v <= 1) & (au <= (v + 1) / 2)
    if kind == "cross":
        return ((au <= 0.35) & (av_ <= 1)) | ((av_ <= 0.35) & (au <= 1))
    raise ValueError(kind)


def _bounce(phase: np.ndarray) -> np.ndarray:
    """Triangle wave in [0, 1] of period 2."""
    phase = np.mod(phase, 2.0)
    return np.where(phase > 1, 2 - phase, phase)


def _noise(seed: int, times: np.ndarray, spec: SynthSpec, height: int, width: int) -> torch.Tensor:
    """``(F, 3, H, W)`` noise, one draw per frame from ``(seed, time in ms)``."""
    scale = spec.noise_cells / min(height, width)
    cells = (max(1, round(height * scale)), max(1, round(width * scale)))
    out = torch.empty(len(times), 3, height, width)
    for i, t in enumerate(times):
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(round(t * 1000)))
        grid = torch.randn(1, 3, *cells, generator=gen) * spec.noise
        out[i] = F.interpolate(grid, size=(height, width), mode="nearest")[0]
    return out


def render(scene: Scene, spec: SynthSpec, times: Sequence[float], height: int, width: int) -> torch.Tensor:
    """Frames of ``scene`` at ``times`` (seconds): float ``(F, 3, H, W)`` in [0, 1]."""
    times = np.asarray(times, dtype=np.float64)
    layout = _layout(scene.seed, spec)
    side = min(height, width)
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / side  # short-side units
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / side
    frames = torch.tensor(layout.background, dtype=torch.float32).view(1, 3, 1, 1).expand(len(times), 3, height, width)
    frames = frames.clone()

    extent = np.array([width, height]) / side  # (x, y) frame size in short-side units
    half = spec.distractor_size / 2
    for s in range(spec.num_distractors):
        phase = layout.start[s][None, :] + layout.velocity[s][None, :] * times[:, None]  # (F, 2)
        centre = torch.tensor(half + _bounce(phase) * (extent - 2 * half), dtype=torch.float32)  # (F, 2)
        u = (xs.view(1, 1, -1) - centre[:, 0].view(-1, 1, 1)) / half  # (F, 1, W)
        v = (ys.view(1, -1, 1) - centre[:, 1].view(-1, 1, 1)) / half  # (F, H, 1)
        mask = _shape_mask(layout.kinds[s], u, v).unsqueeze(1)  # (F, 1, H, W)
        colour = torch.tensor(layout.colours[s], dtype=torch.float32).view(1, 3, 1, 1)
        frames = torch.where(mask, colour, frames)

    radius = spec.cue_size / 2
    for index, event in enumerate(scene.events):
        start, end = scene.event_interval(event, spec)
        visible = torch.from_numpy((times >= start) & (times < end))  # (F,)
        if not visible.any():
            continue
        cx, cy = _cue_position(scene.seed, index, height / side, width / side, radius)
        colour_name, kind = CLASSES[event.cls]
        u = (xs.view(1, -1) - cx) / radius
        v = (ys.view(-1, 1) - cy) / radius
        mask = _shape_mask(kind, u, v).view(1, 1, height, width) & visible.view(-1, 1, 1, 1)
        colour = torch.tensor(COLOURS[colour_name], dtype=torch.float32).view(1, 3, 1, 1)
        frames = torch.where(mask, colour, frames)

    if spec.noise > 0:
        frames = frames + _noise(scene.seed, times, spec, height, width)
    return frames.clamp_(0, 1)


def clip_times(spec: SynthSpec, num_clips: int) -> np.ndarray:
    """Sample times ``(num_clips, T)`` in seconds."""
    clips = np.arange(num_clips)[:, None] * spec.clip_seconds
    return clips + np.arange(spec.clip_frames)[None, :] / spec.sample_fps


def scene_clips(scene: Scene, spec: SynthSpec, normalize: bool = True) -> torch.Tensor:
    """The scene as model clips ``(num_clips, C, T, H, W)``.

    Rendered ``spec.supersample`` times larger and area-pooled to ``spec.size``;
    quantized to 8 bits like a decoded video, then (``normalize``) Kinetics-normalized
    like :func:`longvid.video.transforms.to_model_input`, else left as uint8.
    """
    times = clip_times(spec, scene.num_clips).reshape(-1)
    big = spec.size * spec.supersample
    frames = render(scene, spec, times, big, big)  # (N*T, 3, S', S')
    frames = F.avg_pool2d(frames, spec.supersample) if spec.supersample > 1 else frames
    frames = (frames * 255).round_().to(torch.uint8)
    clips = frames.view(scene.num_clips, spec.clip_frames, 3, spec.size, spec.size).permute(0, 2, 1, 3, 4)
    return normalize_frames(clips) if normalize else clips.contiguous()


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., C, T, H, W)`` -> Kinetics-normalized float, same shape."""
    mean = torch.tensor(KINETICS_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(KINETICS_STD).view(3, 1, 1, 1)
    return (frames.float() / 255.0 - mean) / std


# -- tasks -----------------------------------------------------------------------------


def recall_sample(seed: int, spec: SynthSpec, num_clips: int, distance: int, cls: int | None = None) -> Sample:
    """One cue, ``distance`` clips before the last clip; class drawn from ``seed``
    independently of the scene (or given as ``cls``)."""
    if not 0 <= distance < num_clips:
        raise LongvidError(f"distance must be in 0..{num_clips - 1} for {num_clips} clips, got {distance}")
    if cls is None:
        cls = int(np.random.default_rng([seed, 2]).integers(spec.num_classes))
    event = Event(cls, num_clips - 1 - distance)
    scene = Scene(seed, num_clips, (event,))
    name = class_name(cls)
    return Sample(
        scene,
        "recall",
        cls,
        question="Which object flashed in the video?",
        answer=name,
        query=f"the {name} flashes",
        target=scene.event_interval(event, spec),
        distance=distance,
    )


def count_sample(seed: int, spec: SynthSpec, num_clips: int, max_count: int = 3) -> Sample:
    """``n`` flashes of a target class (0..max_count) among flashes of other classes."""
    rng = np.random.default_rng([seed, 2])
    if spec.num_classes < 2 or num_clips < max_count + 1:
        raise LongvidError(f"count needs >= 2 classes and >= {max_count + 1} clips")
    target = int(rng.integers(spec.num_classes))
    count = int(rng.integers(max_count + 1))
    others = int(rng.integers(1, min(2, num_clips - count) + 1))
    clips = sorted(rng.choice(num_clips, size=count + others, replace=False).tolist())
    other_classes = [c for c in range(spec.num_classes) if c != target]
    classes = [target] * count + [int(rng.choice(other_classes)) for _ in range(others)]
    rng.shuffle(classes)
    scene = Scene(seed, num_clips, tuple(Event(c, k) for c, k in zip(classes, clips)))
    name = class_name(target)
    return Sample(scene, "count", count, f"How many times did the {name} flash?", str(count), meta={"target_class": target})


def order_sample(seed: int, spec: SynthSpec, num_clips: int) -> Sample:
    """Two flashes of different classes; label = class of the first one."""
    rng = np.random.default_rng([seed, 2])
    if spec.num_classes < 2 or num_clips < 2:
        raise LongvidError("order needs >= 2 classes and >= 2 clips")
    first, second = (int(c) for c in rng.choice(spec.num_classes, size=2, replace=False))
    clips = sorted(rng.choice(num_clips, size=2, replace=False).tolist())
    scene = Scene(seed, num_clips, (Event(first, clips[0]), Event(second, clips[1])))
    options = [class_name(first), class_name(second)]
    rng.shuffle(options)
    question = f"Which flashed first, the {options[0]} or the {options[1]}?"
    return Sample(scene, "order", first, question, class_name(first), distance=num_clips - 1 - clips[0])


def grounding_sample(seed: int, spec: SynthSpec, num_clips: int) -> Sample:
    """1-3 flashes of distinct classes; find when the described one happened."""
    rng = np.random.default_rng([seed, 2])
    count = int(rng.integers(1, min(3, spec.num_classes, num_clips) + 1))
    classes = [int(c) for c in rng.choice(spec.num_classes, size=count, replace=False)]
    clips = sorted(rng.choice(num_clips, size=count, replace=False).tolist())
    scene = Scene(seed, num_clips, tuple(Event(c, k) for c, k in zip(classes, clips)))
    pick = int(rng.integers(count))
    name = class_name(classes[pick])
    start, end = scene.event_interval(scene.events[pick], spec)
    question = f"When does the {name} flash?"
    return Sample(
        scene, "grounding", classes[pick], question, f"{start:.2f}-{end:.2f} s", f"the {name} flashes", (start, end)
    )


def make_sample(task: str, seed: int, spec: SynthSpec, num_clips: int, distances: Sequence[int] = (2,)) -> Sample:
    """A sample of ``task`` (see :data:`TASKS`); ``recall`` draws its distance from
    ``distances``, ``qa`` draws one of recall/count/order."""
    rng = np.random.default_rng([seed, 3])
    if task == "qa":
        task = str(rng.choice(["recall", "count", "order"]))
    if task == "recall":
        return recall_sample(seed, spec, num_clips, int(rng.choice(list(distances))))
    if task == "count":
        return count_sample(seed, spec, num_clips)
    if task == "order":
        return order_sample(seed, spec, num_clips)
    if task == "grounding":
        return grounding_sample(seed, spec, num_clips)
    raise LongvidError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


def recall_batch(
    seeds: Sequence[int], spec: SynthSpec, num_clips: int, distances: Sequence[int], normalize: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Recall samples as tensors: clips ``(B, num_clips, C, T, H, W)`` (uint8 unless
    ``normalize``), labels ``(B,)`` and distances ``(B,)`` (int64)."""
    samples = [make_sample("recall", s, spec, num_clips, distances) for s in seeds]
    clips = torch.stack([scene_clips(s.scene, spec, normalize) for s in samples])
    labels = torch.tensor([s.label for s in samples])
    dists = torch.tensor([s.distance for s in samples])
    return clips, labels, dists


# -- files -----------------------------------------------------------------------------


def scene_frames(scene: Scene, spec: SynthSpec, fps: float, width: int, height: int, chunk: int = 32) -> Iterator[np.ndarray]:
    """The scene's frames at ``fps`` as uint8 ``(H, W, 3)`` arrays, rendered in chunks."""
    count = int(round(scene.duration(spec) * fps))
    for first in range(0, count, chunk):
        times = np.arange(first, min(count, first + chunk)) / fps
        frames = (render(scene, spec, times, height, width) * 255).round_().to(torch.uint8)
        yield from frames.permute(0, 2, 3, 1).numpy()


def write_scene(
    path: str | os.PathLike, scene: Scene, spec: SynthSpec, fps: float = 8.0, width: int = 128, height: int = 128, lossless: bool = True
) -> int:
    """Write ``scene`` to a video file (H.264); returns the frame count.

    ``lossless`` (qp 0) keeps frames after a cue bit-identical across cue classes.
    """
    if fps < spec.sample_fps:
        raise LongvidError(f"fps {fps:g} is below the sampling rate {spec.sample_fps:g}")
    options = {"preset": "ultrafast", "qp": "0"} if lossless else None
    return write_video(path, scene_frames(scene, spec, fps, width, height), fps=fps, options=options)


def annotation_row(sample: Sample, video: str, spec: SynthSpec) -> dict:
    """One row of the generic annotation format (extra keys are metadata)."""
    target = sample.target or (None, None)
    row = {
        "video": video,
        "label": sample.label,
        "start": 0.0,
        "end": round(sample.scene.duration(spec), 6),
        "question": sample.question,
        "answer": sample.answer,
        "query": sample.query,
        "target_start": None if target[0] is None else round(target[0], 6),
        "target_end": None if target[1] is None else round(target[1], 6),
        "task": sample.task,
        "distance": sample.distance,
        "scene_seed": sample.scene.seed,
        "num_clips": sample.scene.num_clips,
        "clip_seconds": spec.clip_seconds,
        "events": ";".join(f"{class_name(e.cls)}@{e.clip}" for e in sample.scene.events),
    }
    row.update(sample.meta)
    return row


def write_annotations(path: str | os.PathLike, rows: Sequence[dict]) -> None:
    """Write rows as CSV (with header), JSON (a list) or JSONL, by extension."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        keys = list(dict.fromkeys(k for row in rows for k in row))
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    elif ext == ".json":
        with open(path, "w") as f:
            json.dump(list(rows), f, indent=1)
    elif ext == ".jsonl":
        with open(path, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    else:
        raise LongvidError(f"{path}: annotation file must end in .csv, .json or .jsonl")


def write_dataset(
    out_dir: str | os.PathLike,
    task: str,
    num_videos: int,
    spec: SynthSpec = SynthSpec(),
    num_clips: int = 6,
    distances: Sequence[int] = (2,),
    seed: int = 0,
    fps: float = 8.0,
    size: int = 128,
    annotations: str = "annotations.csv",
) -> str:
    """Write ``num_videos`` videos of ``task`` (seeds ``seed .. seed+num_videos-1``)
    under ``out_dir/videos/`` and their annotations; returns the annotation path."""
    os.makedirs(os.path.join(out_dir, "videos"), exist_ok=True)
    rows = []
    for i in range(num_videos):
        sample = make_sample(task, seed + i, spec, num_clips, distances)
        video = f"videos/{task}_{seed + i:06d}.mp4"
        write_scene(os.path.join(out_dir, video), sample.scene, spec, fps, size, size)
        rows.append(annotation_row(sample, video, spec))
    path = os.path.join(out_dir, annotations)
    write_annotations(path, rows)
    return path


def demo_sample(seconds: float = 20.0, seed: int = 0, distance: int = 2, spec: SynthSpec = SynthSpec()) -> Sample:
    """The ``recall`` sample :func:`write_demo_video` writes: about ``seconds`` long
    (whole clips), its cue ``distance`` clips before the last clip."""
    num_clips = max(distance + 1, round(seconds / spec.clip_seconds))
    return recall_sample(seed, spec, num_clips, distance)


def write_demo_video(
    path: str | os.PathLike,
    seconds: float = 20.0,
    fps: float = 30.0,
    width: int = 160,
    height: int = 120,
    seed: int = 0,
    distance: int = 2,
    spec: SynthSpec = SynthSpec(),
) -> int:
    """Write the :func:`demo_sample` video; returns the number of frames written."""
    checks = [
        (math.isfinite(seconds) and seconds > 0, f"--seconds must be > 0, got {seconds:g}"),
        (math.isfinite(fps) and fps > 0, f"--fps must be > 0, got {fps:g}"),
        (min(width, height) >= 16, f"--width and --height must be >= 16 pixels, got {width}x{height}"),
        (os.path.isdir(os.path.dirname(os.path.abspath(path))), f"{path}: its folder does not exist"),
    ]
    for ok, message in checks:
        if not ok:
            raise LongvidError(message)
    sample = demo_sample(seconds, seed, distance, spec)
    return write_video(path, scene_frames(sample.scene, spec, fps, width, height), fps=fps)


def moving_shapes(
    seconds: float, fps: float = 30.0, width: int = 160, height: int = 120, num_shapes: int = 3, seed: int = 0
) -> Iterator[np.ndarray]:
    """Frames ``(H, W, 3)`` uint8 of a scene without cues: grey shapes bouncing over noise."""
    spec = SynthSpec(num_distractors=num_shapes)
    num_clips = max(1, math.ceil(seconds / spec.clip_seconds))
    frames = scene_frames(Scene(seed, num_clips), spec, fps, width, height)
    return itertools.islice(frames, int(round(seconds * fps)))
