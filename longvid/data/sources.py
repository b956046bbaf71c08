"""Clip sources: videos as sequences of clips with per-head targets, played as sequential
streams by :class:`longvid.engine.sampler.StreamSampler`.

* :class:`ClipSource` — the protocol;
* :class:`TensorVideos` — generated or in-memory videos;
* :class:`FileVideos` — annotated video files (:class:`~longvid.data.annotations.Sample` rows)
  read with :class:`~longvid.video.ClipReader`.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Protocol, Sequence

import torch

from longvid.data.annotations import Sample
from longvid.errors import LongvidError


class ClipSource(Protocol):
    """Videos as sequences of clips, for :class:`StreamSampler`."""

    def __len__(self) -> int:
        """Number of videos."""

    def num_clips(self, video: int) -> int:
        """Clips in video ``video`` (may over-estimate for files; streams end early then)."""

    def clips(self, video: int, first: int = 0) -> Iterator[torch.Tensor]:
        """Clips ``(C, T, H, W)`` of ``video`` from clip ``first`` on."""

    def targets(self, video: int) -> dict[str, torch.Tensor]:
        """Per-head targets of ``video``: a long scalar (class) or a float vector (multi-hot)."""


class TensorVideos:
    """Generated or in-memory videos: ``videos[i]`` is ``(N_i, C, T, H, W)``, N_i clips.

    targets: per video, head name -> class index (int) or a target tensor.
    """

    def __init__(self, videos: Sequence[torch.Tensor], targets: Sequence[dict]):
        if len(videos) != len(targets):
            raise ValueError(f"{len(videos)} videos but {len(targets)} targets")
        for i, video in enumerate(videos):
            if video.dim() != 5 or video.shape[0] == 0:
                raise ValueError(f"video {i} must be (N, C, T, H, W) with N >= 1, got {tuple(video.shape)}")
        self.videos = list(videos)
        self._targets = [{k: torch.as_tensor(v) for k, v in t.items()} for t in targets]

    def __len__(self) -> int:
        return len(self.videos)

    def num_clips(self, video: int) -> int:
        return self.videos[video].shape[0]

    def clips(self, video: int, first: int = 0) -> Iterator[torch.Tensor]:
        return iter(self.videos[video][first:])

    def targets(self, video: int) -> dict[str, torch.Tensor]:
        return self._targets[video]


class FileVideos:
    """Annotated video files read with :class:`~longvid.video.ClipReader`.

    Single-label heads give long class indices; with ``multilabel`` (e.g. LVU
    genre), targets are multi-hot vectors of ``num_classes[head]``.
    ``reader_options`` go to ClipReader (clip_frames, stride, fps, short_side, crop...).
    ``augment`` (:class:`longvid.memvit.augment.ClipAugment`): one random scale, crop and
    flip per ``clips()`` call (one stream segment), else the reader's center crop.
    """

    def __init__(self, samples: Sequence[Sample], multilabel: dict[str, int] | None = None, augment=None, **reader_options):
        self.samples = list(samples)
        self.multilabel = multilabel or {}
        self.reader_options = reader_options
        self.augment = augment
        self._num_clips: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _reader(self, video: int, options: dict | None = None):
        from longvid.video.reader import ClipReader

        sample = self.samples[video]
        return ClipReader(sample.video, start=sample.start or 0.0, end=sample.end, **(options or self.reader_options))

    def num_clips(self, video: int) -> int:
        """Clips of the sample's time range, from the container header (may over-estimate)."""
        if video not in self._num_clips:
            reader = self._reader(video)
            info = reader.info
            seconds = max(0.0, (reader.end if reader.end is not None else info.duration) - reader.start)
            frames = round(seconds * info.fps) if info.fps else info.num_frames
            info = dataclasses.replace(info, duration=seconds, num_frames=frames)
            self._num_clips[video] = max(1, info.num_clips(reader.clip_frames, reader.stride, reader.fps, reader.tail))
        return self._num_clips[video]

    def clips(self, video: int, first: int = 0) -> Iterator[torch.Tensor]:
        options, view = None, None
        if self.augment is not None:
            view = self.augment.draw()
            options = self.augment.reader_options(self.reader_options, view)
        for clip in self._reader(video, options):
            if clip.index >= first:
                yield clip.frames if view is None else self.augment.apply(clip.frames, view)

    def targets(self, video: int) -> dict[str, torch.Tensor]:
        out = {}
        for head, labels in self.samples[video].labels.items():
            if head in self.multilabel:
                target = torch.zeros(self.multilabel[head])
                target[list(labels)] = 1.0
                out[head] = target
            elif len(labels) == 1:
                out[head] = torch.tensor(labels[0])
            else:
                raise LongvidError(f"{self.samples[video].video}: {len(labels)} labels for head {head!r}; use multilabel")
        return out
