"""AVA v2.2 spatio-temporal action detection (``task=ava``): keyframe clips streamed in
order per movie (memory from the past keyframes), person boxes through MeMViT's box head
(RoIAlign + box-attention block), per-class sigmoid BCE on ground-truth boxes, frame-mAP@0.5
over the evaluated classes on detected boxes with the excluded timestamps left out, as the
official evaluation computes it.

A clip is ``clip_frames x stride`` frames centered on its keyframe, resized to short side
``size``. Training crops a ``size`` square (the random scale, crop and flip of
:mod:`longvid.memvit.augment`, one view per stream segment, boxes moved with it; the center
crop without ``augment``); boxes are clipped to the crop, so a person outside it is pooled
from its clipped (possibly empty) box. Evaluation (``ava_test_crop``) reads the full frame,
the paper's default (boxes scaled to the resized frame; movies of another shape than the
source's largest are zero-padded at the bottom and right so one batch can hold them, which
leaves every box where it is), or the center ``size`` crop.
"""

from __future__ import annotations

import os
from typing import Iterator

import torch
import torch.nn.functional as F

from longvid.data.videos import VideoFinder
from longvid.memvit.ava_files import FIRST_KEYFRAME, LAST_KEYFRAME, Keyframe, find_movie, load_action_list, load_excluded, load_keyframes
from longvid.errors import LongvidError
from longvid.eval.metrics import Box, frame_map
from longvid.memvit.augment import ClipAugment, View, training_augment


class AvaClips:
    """Movies as streams of keyframe clips (a :class:`~longvid.data.sources.ClipSource`
    with per-clip boxes: ``clip_extras``)."""

    def __init__(self, movies: list[tuple[str, list[Keyframe]]], clip_frames: int, stride: int, size: int, augment: ClipAugment | None = None,
                 crop: str = "center"):  # fmt: skip
        if crop not in ("center", "full"):
            raise ValueError(f"crop must be 'center' or 'full', got {crop!r}")
        self.movies = movies  # (path, keyframes in time order)
        self.clip_frames, self.stride, self.size = clip_frames, stride, size
        self.augment = augment
        self.crop = crop  # without augment: the center size x size crop, or the full frame (short side size)
        self._canvas: tuple[int, int] | None = None
        self._views: dict[tuple[int, int], View | None] = {}  # (movie, first clip of the segment) -> its view
        self._spans: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.movies)

    def num_clips(self, video: int) -> int:
        return len(self.movies[video][1])

    def targets(self, video: int) -> dict[str, torch.Tensor]:
        return {}

    def scored(self, video: int, clip: int) -> bool:
        return True

    def _span(self, video: int) -> float:
        if video not in self._spans:
            from longvid.video.reader import probe

            self._spans[video] = self.clip_frames * self.stride / probe(self.movies[video][0]).fps
        return self._spans[video]

    def clips(self, video: int, first: int = 0) -> Iterator[torch.Tensor]:
        from longvid.video.reader import ClipReader

        path, keyframes = self.movies[video]
        view = self.augment.draw() if self.augment is not None else None
        self._views[(video, first)] = view
        span = self._span(video)
        short = view.short_side if view is not None else self.size
        for keyframe in keyframes[first:]:
            start = max(0.0, keyframe.timestamp - span / 2)
            reader = ClipReader(path, self.clip_frames, self.stride, short_side=short, crop=None, start=start, end=start + span, tail="pad")
            clip = next(iter(reader)).frames  # (C, T, H', W')
            yield self._crop(clip, view)

    def full_frames(self, view: View | None = None) -> bool:
        return view is None and self.crop == "full"

    def canvas(self) -> tuple[int, int]:
        """(H, W) every full-frame clip is padded to: the largest resized frame of the movies."""
        if self._canvas is None:
            sizes = [_resized_size(path, self.size) for path, _ in self.movies]
            self._canvas = (max(h for h, _ in sizes), max(w for _, w in sizes))
        return self._canvas

    def _crop(self, clip: torch.Tensor, view: View | None) -> torch.Tensor:
        if self.full_frames(view):
            height, width = self.canvas()
            return F.pad(clip, (0, width - clip.shape[-1], 0, height - clip.shape[-2]))  # (C, T, H, W): bottom/right
        if view is not None:
            return ClipAugment(self.size).apply(clip, view)
        return ClipAugment(self.size).apply(clip, View(0, 0.5, 0.5, False))

    def clip_extras(self, video: int, clip: int) -> dict:
        """The keyframe's boxes: ``pixels`` (P, 4) in the clip's crop, and what scoring needs."""
        keyframe = self.movies[video][1][clip]
        starts = [f for v, f in self._views if v == video and f <= clip]
        view = self._views.get((video, max(starts))) if starts else None
        return {"keyframe": keyframe, "pixels": self.box_pixels(keyframe.boxes, video, view)}

    def box_pixels(self, boxes: torch.Tensor, video: int, view: View | None = None) -> torch.Tensor:
        """Normalized ``(P, 4)`` boxes -> pixels of the crop (moved and mirrored with the view),
        or of the full resized frame (``crop="full"`` without a view)."""
        path = self.movies[video][0]
        if self.full_frames(view):
            height, width = _resized_size(path, self.size)
            x = (boxes[:, [0, 2]] * width).clamp(0, width)
            y = (boxes[:, [1, 3]] * height).clamp(0, height)
            return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)
        view = view or View(self.size, 0.5, 0.5, False)
        height, width = _resized_size(path, view.short_side or self.size)
        top = int(view.y * (height - self.size) + 0.5)
        left = int(view.x * (width - self.size) + 0.5)
        x = (boxes[:, [0, 2]] * width - left).clamp(0, self.size)
        y = (boxes[:, [1, 3]] * height - top).clamp(0, self.size)
        if view.flip:
            x = (self.size - x).flip(1)
        return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


_SIZES: dict[tuple[str, int], tuple[int, int]] = {}


def _resized_size(path: str, short_side: int) -> tuple[int, int]:
    """(H, W) of ``path``'s frames resized to ``short_side``, as the reader resizes them."""
    if (path, short_side) not in _SIZES:
        from longvid.video.reader import probe
        from longvid.video.transforms import short_side_size

        info = probe(path)
        _SIZES[(path, short_side)] = tuple(short_side_size(info.height, info.width, short_side))
    return _SIZES[(path, short_side)]


# -- data -----------------------------------------------------------------------------------


def evaluated_classes(config) -> list[int]:
    if not config.action_list:
        raise LongvidError("task=ava needs action_list=ava_action_list_v2.2_for_activitynet_2019.pbtxt (the evaluated classes)")
    return sorted(load_action_list(config.action_list))


def ava_source(path: str, config, train: bool, classes: list[int]) -> tuple[AvaClips, list[Keyframe], str]:
    """Training: the file's ground-truth boxes; evaluation: ``person_boxes`` (detections with
    scores >= ``box_threshold``) on the keyframes of the ground-truth file. Returns the source,
    the ground truth and a one-line summary."""

    root = config.video_folder(path, val=not train)
    truth = [k for k in load_keyframes(path, classes) if FIRST_KEYFRAME <= k.timestamp <= LAST_KEYFRAME]
    keyframes = truth
    if not train:
        if not config.person_boxes:
            raise LongvidError("evaluating task=ava needs person_boxes=FILE (the detected person boxes, AVA CSV layout with scores)")
        wanted = {(k.video_id, k.timestamp) for k in truth}
        detected = load_keyframes(config.person_boxes, classes, detections=True, threshold=config.box_threshold)
        keyframes = [k for k in detected if (k.video_id, k.timestamp) in wanted]
    by_movie: dict[str, list[Keyframe]] = {}
    for k in keyframes:
        by_movie.setdefault(k.video_id, []).append(k)
    movies, missing, finder = [], [], VideoFinder(root)
    for video_id, frames in by_movie.items():
        movie = find_movie(finder, video_id)
        if movie is None:
            if config.strict:
                raise LongvidError(f"{path}: movie {video_id} not found in {root} (expected ROOT/<video_id>.mp4/.mkv/.webm)")
            missing.append(video_id)
            continue
        movies.append((movie, sorted(frames, key=lambda k: k.timestamp)))
    if not movies:
        raise LongvidError(f"{path}: none of the {len(by_movie)} movies was found under {root}")
    augment = training_augment(config) if train else None
    crop = "center" if train else config.ava_test_crop
    source = AvaClips(movies, config.clip_frames, config.stride, config.size, augment, crop=crop)
    found = sum(len(f) for _, f in movies)
    summary = f"{os.path.basename(path)}: {found} keyframes in {len(movies)} movies" + (f"; {len(missing)} movies missing (skipped)" if missing else "")
    if not train:
        summary += f"; tested on full frames (short side {config.size})" if crop == "full" else f"; tested on the center {config.size} crop"
    return source, truth, summary


# -- training and scoring ---------------------------------------------------------------------


def box_batch(extras: list, mask: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The boxes of the slots in ``mask``: (N, 5) ``[slot, x1, y1, x2, y2]`` pixels, and their
    multi-hot labels (N, K) (None for detections)."""
    rows, labels = [], []
    for slot, extra in enumerate(extras):
        if extra is None or not bool(mask[slot]):
            continue
        pixels = extra["pixels"]
        rows.append(torch.cat([torch.full((pixels.shape[0], 1), float(slot)), pixels], dim=1))
        if extra["keyframe"].labels is not None:
            labels.append(extra["keyframe"].labels)
    boxes = torch.cat(rows).to(device) if rows else torch.zeros(0, 5, device=device)
    return boxes, (torch.cat(labels).to(device) if labels else None)


def box_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-class sigmoid binary cross-entropy, mean over boxes and classes (0 without boxes)."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


@torch.no_grad()
def collect_detections(model, source: AvaClips, batch_size: int, device, classes: list[int], dist=None, progress=None) -> list[Box]:
    """Stream every movie in order and score every detected box: one :class:`Box` per
    (box, evaluated class) with the sigmoid score, box corners as in the file."""
    from longvid.engine.distributed import DistInfo, all_gather_objects
    from longvid.engine.sampler import StreamSampler

    dist = dist or DistInfo()
    model.eval()
    sampler = StreamSampler(source, batch_size, None, shuffle=False, rank=dist.rank, world_size=dist.world_size)
    state = model.init_state(batch_size, device=device)
    if progress is not None:
        progress.total = len(sampler)
    found = []
    for batch in sampler:
        if progress is not None:
            progress.update(1)
        state = state.reset(batch.is_first.to(device))
        boxes, _ = box_batch(batch.extras, batch.valid, device)
        logits, state = model(batch.clips.to(device), state, boxes=boxes)
        scores = logits.float().sigmoid().cpu()  # (N, K)
        row = 0
        for slot, extra in enumerate(batch.extras):
            if extra is None or not bool(batch.valid[slot]):
                continue
            keyframe = extra["keyframe"]
            for b, box in enumerate(keyframe.boxes.tolist()):
                for c, action in enumerate(classes):
                    found.append(Box((keyframe.video_id, keyframe.timestamp), tuple(box), action, float(scores[row + b, c])))
            row += keyframe.boxes.shape[0]
    return [box for part in all_gather_objects(found) for box in part]


def ground_truth_boxes(truth: list[Keyframe], classes: list[int]) -> list[Box]:
    wanted = set(classes)
    return [Box((k.video_id, k.timestamp), tuple(box), a, 1.0) for k in truth for box, actions in zip(k.boxes.tolist(), k.actions) for a in actions if a in wanted]


def ava_metrics(detections: list[Box], truth: list[Keyframe], classes: list[int], excluded_path: str | None) -> dict[str, float]:
    """``map`` (frame-mAP@0.5 over the evaluated classes with ground truth) and ``ap/<id>``
    per class, in percent; keyframes in the excluded-timestamps file are left out of both sides."""
    excluded = load_excluded(excluded_path) if excluded_path else set()
    gt = [b for b in ground_truth_boxes(truth, classes) if b.frame not in excluded]
    dets = [b for b in detections if b.frame not in excluded]
    result = frame_map(dets, gt, 0.5, classes)
    return {"map": result["mAP"], **{f"ap/{c}": ap for c, ap in sorted(result["per_class"].items())}}


def detection_csv(detections: list[Box]) -> str:
    """The AVA detection CSV: ``video_id,timestamp,x1,y1,x2,y2,action_id,score`` per row."""
    lines = [f"{b.frame[0]},{b.frame[1]:04d},{b.box[0]:.3f},{b.box[1]:.3f},{b.box[2]:.3f},{b.box[3]:.3f},{b.label},{b.score:.6f}" for b in detections]
    return "\n".join(lines) + "\n"
