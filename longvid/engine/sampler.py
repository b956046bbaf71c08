"""Sequential clip streams for training (MeMViT sections 4.3, A.2).

:class:`StreamSampler` plays the videos of a :class:`~longvid.data.sources.ClipSource`
in ``B`` slots, clip after clip, the next video starting in a slot (with ``is_first``)
when the previous one ends, as MeMViT's sequential training needs. It shards videos
across ranks and can save and restore its position exactly.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Iterator

import torch

from longvid.errors import LongvidError
from longvid.data.sources import ClipSource


@dataclass
class StreamBatch:
    """One step of ``B`` streams.

    clips:    ``(B, C, T, H, W)``; zeros where ``valid`` is False.
    is_first: bool ``(B,)``: the clip starts a new video (reset its memory).
    valid:    bool ``(B,)``: the slot has a clip (False once its queue is empty).
    targets:  head -> ``(B,)`` long or ``(B, K)`` float.
    video:    long ``(B,)`` source video index (-1 when not valid).
    clip:     long ``(B,)`` clip index in that video.
    extras:   per slot, what a source with ``clip_extras(video, clip)`` gives for that clip
              (AVA: its boxes and labels; None where not valid); empty for other sources.
    """

    clips: torch.Tensor
    is_first: torch.Tensor
    valid: torch.Tensor
    targets: dict[str, torch.Tensor]
    video: torch.Tensor
    clip: torch.Tensor
    extras: list = field(default_factory=list)


def segments(source: ClipSource, clips_per_video: int | None) -> list[tuple[int, int, int]]:
    """Split every video into consecutive ``(video, first clip, num clips)`` segments of
    ``clips_per_video`` clips (the progressive schedule's "k-clip-long videos");
    None keeps whole videos. A shorter tail segment is kept."""
    out = []
    for video in range(len(source)):
        total = source.num_clips(video)
        step = clips_per_video or total
        out.extend((video, first, min(step, total - first)) for first in range(0, total, step))
    return out


class StreamSampler:
    """Plays segments of a :class:`ClipSource` as ``batch_size`` sequential streams.

    Each epoch, segments are (optionally) shuffled with ``seed + epoch``, then
    sharded round-robin across ranks (rank ``r`` takes ``r, r + W, ...``). Each
    rank's slots take its segments in order: when a slot's segment ends, the next
    one starts there with ``is_first`` True. Clips within a segment stay in
    temporal order. ``state_dict`` / ``load_state_dict`` save the exact position.
    """

    def __init__(
        self,
        source: ClipSource,
        batch_size: int,
        clips_per_video: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
        self.source = source
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.set_epoch(0, clips_per_video)

    def set_epoch(self, epoch: int, clips_per_video: int | None = None) -> None:
        """Start ``epoch`` from its beginning, with segments of ``clips_per_video`` clips."""
        self.epoch = epoch
        self.clips_per_video = clips_per_video
        self.queue = self._rank_segments()
        self.next_segment = 0  # next index in self.queue
        self.slots: list[list[int] | None] = [None] * self.batch_size  # [queue index, clips played]
        self._iters: list[Iterator[torch.Tensor] | None] = [None] * self.batch_size

    def _rank_segments(self) -> list[tuple[int, int, int]]:
        all_segments = segments(self.source, self.clips_per_video)
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(all_segments)
        return all_segments[self.rank :: self.world_size]

    def __len__(self) -> int:
        """This epoch's steps: each segment goes to the slot that frees first (lowest slot on
        a tie), as :meth:`next_batch` deals them; exact when ``num_clips`` is."""
        loads = [(0, slot) for slot in range(self.batch_size)]  # (steps taken, slot)
        for _, _, length in self.queue:
            steps, slot = heapq.heappop(loads)
            heapq.heappush(loads, (steps + length, slot))
        return max(steps for steps, _ in loads)

    def __iter__(self) -> Iterator[StreamBatch]:
        while True:
            batch = self.next_batch()
            if batch is None:
                return
            yield batch

    def next_batch(self) -> StreamBatch | None:
        """The next step's clips for every slot, or None when the epoch is over."""
        items = [self._next_clip(slot) for slot in range(self.batch_size)]
        if all(item is None for item in items):
            return None
        example = next(item for item in items if item is not None)
        clips, targets, video, clip, is_first, valid = [], {k: [] for k in example[1]}, [], [], [], []
        for item in items:
            ok = item is not None
            frames, tgt, vid, index, first = item if ok else (torch.zeros_like(example[0]), None, -1, -1, False)
            clips.append(frames)
            for head, value in (tgt or example[1]).items():
                targets[head].append(value if ok else torch.zeros_like(value))
            video.append(vid)
            clip.append(index)
            is_first.append(first)
            valid.append(ok)
        extras_of = getattr(self.source, "clip_extras", None)
        extras = [extras_of(v, c) if ok else None for v, c, ok in zip(video, clip, valid)] if extras_of else []
        return StreamBatch(
            clips=torch.stack(clips),  # (B, C, T, H, W)
            is_first=torch.tensor(is_first),
            valid=torch.tensor(valid),
            targets={head: torch.stack(values) for head, values in targets.items()},
            video=torch.tensor(video),
            clip=torch.tensor(clip),
            extras=extras,
        )

    def _next_clip(self, slot: int):
        """(clip, targets, video, clip index, is_first) for ``slot``, or None."""
        while True:
            if self.slots[slot] is None:
                if self.next_segment >= len(self.queue):
                    return None
                self.slots[slot] = [self.next_segment, 0]
                self._iters[slot] = None
                self.next_segment += 1
            position, played = self.slots[slot]
            video, first, length = self.queue[position]
            if played < length:
                if self._iters[slot] is None:
                    self._iters[slot] = self.source.clips(video, first + played)
                frames = next(self._iters[slot], None)
                if frames is not None:
                    self.slots[slot][1] += 1
                    return frames, self.source.targets(video), video, first + played, played == 0
            self.slots[slot] = None  # segment done (or its file ended early)
            self._iters[slot] = None

    def state_dict(self) -> dict:
        """Position after the last returned batch (JSON-serializable)."""
        return {
            "epoch": self.epoch,
            "clips_per_video": self.clips_per_video,
            "next_segment": self.next_segment,
            "slots": [list(s) if s is not None else None for s in self.slots],
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where :meth:`state_dict` was taken (same source, seed and world size)."""
        if state["world_size"] != self.world_size or state["rank"] != self.rank:
            raise LongvidError(
                f"the data position was saved for rank {state['rank']} of {state['world_size']}, "
                f"not rank {self.rank} of {self.world_size}: resume with the same number of processes"
            )
        self.set_epoch(state["epoch"], state["clips_per_video"])
        self.next_segment = state["next_segment"]
        self.slots = [list(s) if s is not None else None for s in state["slots"]]
