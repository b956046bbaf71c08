"""Asking questions of live memory: stream videos through a frame-based stream model
(MA-LMM, ReWind, any model of ``docs/streams.md`` with ``answer``) and answer questions
at chosen moments of stream time, from the memory as it is then.

``stream_answers`` yields JSON-ready records as it goes:
  ``{"video", "time", "question", "answer"}`` for every question at every answer time
  (``--every S`` seconds, ``--at T1,T2``, and the end of each video), where ``time`` is the
  stream time up to which the model had seen the video (every frame at or before it);
  ``{"video", "status": "done", "frames", "answers", "seconds"}`` when a video is complete;
  ``{"video", "status": "error", "error"}`` when a video cannot be read.

Each video is one stream; ``batch_streams`` videos run at once as independent streams
(a slot's state is reset when its next video starts). With a single question, that
question is also the instruction that conditions what the memory stores; with several,
the memory is written unconditioned. Frames are fed in steps of up to
``step_frames``; a step stops at a stream's next answer time (the other frames of that
step are padding for it), so every answer sees exactly the frames up to its time.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import torch

from longvid.errors import LongvidError
from longvid.core.stream import Frames
from longvid.video import ClipReader, VideoError


@dataclass(frozen=True)
class AskSettings:
    """What to ask and when, and how frames are read.

    questions:   asked at every answer time.
    every:       answer every ``every`` seconds of stream time (None: not periodically).
    at:          answer at these stream times too (seconds).
    fps:         frames read per second of video.
    step_frames: frames per stream per model step.
    size:        frames are resized (short side) and center-cropped to this square size.
    """

    questions: tuple[str, ...]
    every: float | None = None
    at: tuple[float, ...] = ()
    fps: float = 1.0
    step_frames: int = 4
    size: int = 224
    background: bool = True

    def __post_init__(self) -> None:
        if not self.questions or any(not q.strip() for q in self.questions):
            raise LongvidError("give at least one non-empty question (--ask)")
        if self.every is not None and not (math.isfinite(self.every) and self.every > 0):
            raise LongvidError(f"--every must be > 0 seconds, got {self.every}")
        if any(not (math.isfinite(t) and t >= 0) for t in self.at):
            raise LongvidError(f"--at times must be >= 0 seconds, got {list(self.at)}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise LongvidError(f"--fps must be > 0, got {self.fps}")
        for name in ("step_frames", "size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LongvidError(f"{name} must be an integer >= 1, got {value!r}")

    def answer_times(self) -> Iterator[float]:
        """The scheduled answer times in order (not the end of the video); unbounded with ``every``."""
        periodic = (k * self.every for k in itertools.count(1)) if self.every is not None else iter(())
        last = None
        for moment in heapq.merge(sorted(set(self.at)), periodic):
            if moment != last:
                yield moment
            last = moment


def ask_settings_for(model, questions: Sequence[str], **overrides) -> AskSettings:
    """Settings for ``model``: frames at its encoder's size, steps of its sub-clip length."""
    base = {"questions": tuple(questions)}
    encoder = getattr(model, "encoder", None)
    if encoder is not None and getattr(encoder, "image_size", None):
        base["size"] = int(encoder.image_size)
    step = getattr(getattr(model, "config", None), "clip_frames", None)
    if isinstance(step, int) and step >= 1:
        base["step_frames"] = step
    base.update({k: v for k, v in overrides.items() if v is not None})
    return AskSettings(**base)


def frame_reader(video: str, settings: AskSettings) -> ClipReader:
    """Frames of ``video`` in [0, 1] at ``settings.fps``, resized to ``settings.size`` (raises VideoError)."""
    return ClipReader(video, clip_frames=settings.step_frames, fps=settings.fps, short_side=settings.size,
                      crop=settings.size, mean=None, std=None, tail="pad", background=settings.background)


@dataclass
class _Stream:
    """One slot of the batch: its video, the frames read but not yet fed, and its schedule."""

    video: str
    clips: Iterator
    times: Iterator[float]
    next_time: float = math.inf
    buffered: deque = field(default_factory=deque)  # (pixels (3, H, W), seconds)
    exhausted: bool = False
    fed: int = 0
    fed_since_answer: int = 0
    last_time: float | None = None
    answers: int = 0
    fresh: bool = True  # the slot's state must be reset before its first step
    started: float = field(default_factory=time.perf_counter)

    def advance_schedule(self) -> None:
        self.next_time = next(self.times, math.inf)

    def fill(self, want: int) -> None:
        """Read clips until ``want`` frames are buffered or the video ends (raises VideoError)."""
        while len(self.buffered) < want and not self.exhausted:
            clip = next(self.clips, None)
            if clip is None:
                self.exhausted = True
                return
            frames = clip.frames.permute(1, 0, 2, 3)  # (T, 3, H, W)
            for i in range(clip.num_valid):
                self.buffered.append((frames[i], float(clip.timestamps[i])))

    def due(self) -> bool:
        """An answer is due: every frame up to ``next_time`` has been fed."""
        return bool(self.buffered) and self.buffered[0][1] > self.next_time

    def take(self, limit: int) -> list[tuple[torch.Tensor, float]]:
        """Up to ``limit`` buffered frames at or before the next answer time."""
        taken = []
        while self.buffered and len(taken) < limit and self.buffered[0][1] <= self.next_time:
            taken.append(self.buffered.popleft())
        return taken


def stream_answers(
    model: torch.nn.Module,
    videos: str | os.PathLike | Iterable[str | os.PathLike],
    settings: AskSettings,
    batch_streams: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    reader: Callable[[str, AskSettings], Iterable] = frame_reader,
) -> Iterator[dict]:
    """Run ``model`` online over each video and answer ``settings.questions`` at every
    answer time; yield JSON-ready records (see the module docstring)."""
    if isinstance(videos, (str, os.PathLike)):
        videos = [videos]
    if batch_streams < 1:
        raise LongvidError(f"batch_streams must be >= 1, got {batch_streams}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    pending = iter([os.fspath(v) for v in videos])
    slots: list[_Stream | None] = [None] * batch_streams
    # one question: it also conditions what the memory stores (MA-LMM's Q-Former instruction,
    # ReWind's read instruction), as both papers use them; several: the memory is unconditioned
    instructions = list(settings.questions) * batch_streams if len(settings.questions) == 1 else None
    state = model.init_state(batch_streams, device=device, instructions=instructions)
    model.eval()
    with torch.inference_mode():
        while True:
            records: list[dict] = []
            for index in range(batch_streams):
                _refill(slots, index, pending, settings, reader, records)
            yield from records
            live = [i for i, s in enumerate(slots) if s is not None]
            if not live:
                return
            state = _reset_fresh(state, slots, device)
            yield from _answer_due(model, state, slots, settings, device)
            step = {i: slots[i].take(settings.step_frames) for i in live if slots[i] is not None}
            step = {i: frames for i, frames in step.items() if frames}
            if step:
                state = _feed(model, state, step, slots, device, dtype)


def _refill(slots, index, pending, settings, reader, records) -> None:
    """Start the next video in an empty slot and buffer a step's worth of frames; a
    video that ends gets its final answers and done record later (in ``_answer_due``)."""
    while True:
        slot = slots[index]
        if slot is None:
            video = next(pending, None)
            if video is None:
                return
            try:
                slot = _Stream(video, iter(reader(video, settings)), settings.answer_times())
            except VideoError as err:
                records.append({"video": video, "status": "error", "error": err.reason})
                continue
            slot.advance_schedule()
            slots[index] = slot
        try:
            slot.fill(settings.step_frames + 1)  # one more: tells whether the next answer is due
            return
        except VideoError as err:
            records.append({"video": slot.video, "status": "error", "error": err.reason})
            slots[index] = None


def _reset_fresh(state, slots, device):
    fresh = torch.tensor([s is not None and s.fresh for s in slots], device=device)
    for s in slots:
        if s is not None:
            s.fresh = False
    return state.reset(fresh) if bool(fresh.any()) else state


def _answer_due(model, state, slots, settings: AskSettings, device) -> Iterator[dict]:
    """Answer every stream whose answer time has come, and close the streams whose video
    ended (a last answer at their end, unless nothing was fed since the previous one)."""
    while True:
        due = [i for i, s in enumerate(slots) if s is not None and s.due()]
        ended = [i for i, s in enumerate(slots) if s is not None and s.exhausted and not s.buffered]
        if not due and not ended:
            return
        for i in due:
            yield from _answer(model, state.index_select(torch.tensor([i], device=device)), slots[i], slots[i].next_time, settings)
            slots[i].advance_schedule()
        for i in ended:
            slot = slots[i]
            if slot.fed_since_answer and slot.last_time is not None:
                yield from _answer(model, state.index_select(torch.tensor([i], device=device)), slot, slot.last_time, settings)
            yield {"video": slot.video, "status": "done", "frames": slot.fed, "answers": slot.answers,
                   "seconds": round(time.perf_counter() - slot.started, 3)}
            slots[i] = None


def _answer(model, row, slot: _Stream, moment: float, settings: AskSettings) -> Iterator[dict]:
    """Every question answered from ``row``, the one-stream state of ``slot``."""
    if not slot.fed:
        for question in settings.questions:
            yield {"video": slot.video, "time": round(moment, 3), "question": question, "answer": None,
                   "note": "no frame seen yet"}
        return
    for question in settings.questions:
        text = model.answer(row, [question])[0]
        slot.answers += 1
        yield {"video": slot.video, "time": round(moment, 3), "question": question, "answer": text}
    slot.fed_since_answer = 0


def _feed(model, state, step: dict[int, list], slots, device, dtype):
    """One model step: each stream in ``step`` gets its frames (padded to the longest, the
    padding marked invalid); the other streams of the batch are left out of the step."""
    rows = sorted(step)
    width = max(len(step[i]) for i in rows)
    first = step[rows[0]][0][0]
    pixels = torch.zeros(len(rows), width, *first.shape)
    times = torch.zeros(len(rows), width, dtype=torch.float64)
    valid = torch.zeros(len(rows), width, dtype=torch.bool)
    for r, i in enumerate(rows):
        for t, (frame, moment) in enumerate(step[i]):
            pixels[r, t], times[r, t], valid[r, t] = frame, moment, True
        for t in range(len(step[i]), width):  # padding repeats the last frame and time
            pixels[r, t], times[r, t] = pixels[r, len(step[i]) - 1], times[r, len(step[i]) - 1]
        slot = slots[i]
        slot.fed += len(step[i])
        slot.fed_since_answer += len(step[i])
        slot.last_time = step[i][-1][1]
    frames = Frames(pixels, times, valid).to(device, dtype)
    index = torch.tensor(rows, device=device)
    everyone = rows == list(range(state.batch_size))
    _, stepped = model(frames, state if everyone else state.index_select(index))
    return stepped if everyone else state.index_copy(index, stepped)
