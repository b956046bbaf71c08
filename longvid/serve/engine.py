"""One batched model for many live streams.

:class:`BatchedStepper` holds one state of ``capacity`` rows (row = a stream's memory) and
steps any subset of rows in one forward (``index_select`` -> model -> ``index_copy``); a
stream joins a free row fresh (``reset``: ``is_first``) or with a saved state, and leaves
it. :class:`LiveEngine` keeps the live streams (each a :class:`~longvid.video.live.LiveReader`
filling a bounded buffer) and turns each step into JSON-ready records per stream: clip
labels (classifiers), answers every ``every`` seconds (LMMs), gaps (``dropped``), lost and
reconnected connections, the end. It is written once against the stream contract
(``docs/streams.md``) and knows no model family: a model with ``answer`` gets
:class:`~longvid.core.stream.Frames` in [0, 1], any other a normalized clip tensor.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from longvid.data.labels import top_labels
from longvid.errors import LongvidError
from longvid.core.stream import Frames
from longvid.video.live import ClipBuffer, Gap, LiveClip, LiveReader, LiveSettings, StreamEvent


def asks_questions(model) -> bool:
    """Whether ``model`` answers questions from its memory (an LMM of the stream contract)."""
    return callable(getattr(model, "answer", None))


def live_settings_for(model, **overrides) -> LiveSettings:
    """Live reading settings matching ``model``: MeMViT's clip length, stride and crop; an
    LMM's encoder size and step length at 1 frame per second."""
    base: dict = {}
    config = getattr(model, "config", None)
    if asks_questions(model):
        encoder = getattr(model, "encoder", None)
        if encoder is not None and getattr(encoder, "image_size", None):
            base["size"] = int(encoder.image_size)
        step = getattr(config, "clip_frames", None)
        base.update(clip_frames=step if isinstance(step, int) and step >= 1 else 4, fps=1.0, normalize=False)
    elif config is not None:
        frames = getattr(config, "num_frames", 16)
        base.update(clip_frames=frames, stride=getattr(config, "sample_stride", None) or (3 if frames == 32 else 4),
                    size=getattr(config, "crop_size", 224))
    base.update({k: v for k, v in overrides.items() if v is not None})
    return LiveSettings(**base)


class BatchedStepper:
    """The memory of up to ``capacity`` streams in one state; one forward steps any rows.

    ``workers > 1`` splits a step's rows into that many contiguous parts, each a forward of
    its own in its own thread (run with one torch thread each: the parts then use that many
    cores at once, which beats torch's own threading for small models whose time goes to
    many small element-wise kernels). A row's output depends only on its clip and memory
    either way (the isolation the stream contract asks for)."""

    def __init__(self, model: torch.nn.Module, capacity: int, device=None, dtype: torch.dtype | None = None,
                 workers: int = 1):
        if capacity < 1:
            raise LongvidError(f"capacity must be >= 1, got {capacity}")
        if workers < 1:
            raise LongvidError(f"workers must be >= 1, got {workers}")
        self.model = model.eval()
        self.capacity = capacity
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.dtype = dtype
        self.answers = asks_questions(model)
        self.state = model.init_state(capacity, device=self.device)
        if dtype is not None:
            self.state = self.state.to(dtype=dtype)
        self.free = list(range(capacity))
        self.lock = threading.Lock()  # one step (or answer) at a time
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers - 1, thread_name_prefix="longvid-step") if workers > 1 else None

    def join(self, saved=None) -> int:
        """A free row for a new stream: fresh (its next step has ``is_first``), or holding
        ``saved``, a one-row state (a resumed stream). Raises LongvidError when full."""
        with self.lock:
            if not self.free:
                raise LongvidError(f"all {self.capacity} stream slots are taken")
            row = self.free.pop(0)
            index = torch.tensor([row], device=self.device)
            if saved is None:
                mask = torch.zeros(self.capacity, dtype=torch.bool, device=self.device)
                mask[row] = True
                self.state = self.state.reset(mask)
            else:
                self.state = self.state.index_copy(index, saved.to(device=self.device))
            return row

    def reset(self, row: int) -> None:
        with self.lock:
            mask = torch.zeros(self.capacity, dtype=torch.bool, device=self.device)
            mask[row] = True
            self.state = self.state.reset(mask)

    def leave(self, row: int) -> None:
        with self.lock:
            if row not in self.free:
                self.free.append(row)
                self.free.sort()

    def row_state(self, row: int):
        """The one-row state of ``row`` (a value: later steps do not change it)."""
        with self.lock:
            return self.state.index_select(torch.tensor([row], device=self.device))

    def step(self, clips: dict[int, LiveClip]):
        """One forward for every row in ``clips`` (one per part with ``workers``); returns
        ``{row: output}`` (a classifier's ``(K,)`` probabilities per head as ``{head: array}``,
        an LMM's ``None``)."""
        rows = sorted(clips)
        parts = [part.tolist() for part in np.array_split(np.array(rows), min(self.workers, len(rows)))]
        with self.lock:
            if parts[0] == list(range(self.capacity)):  # every row at once: no gather, no write-back
                with torch.inference_mode():
                    out, self.state = self.model(self._inputs([clips[r] for r in rows]), self.state)
                outs = [out]
            else:
                later = [self._pool.submit(self._forward, part, clips) for part in parts[1:]]
                try:
                    stepped = [self._forward(parts[0], clips)]
                finally:
                    wait(later)  # no part still running once the step is over, even a failed one
                stepped += [future.result() for future in later]
                with torch.inference_mode():
                    for part, (_, rows_state) in zip(parts, stepped):
                        self.state = self.state.index_copy(torch.tensor(part, device=self.device), rows_state)
                outs = [out for out, _ in stepped]
        if self.answers:
            return {row: None for row in rows}
        found = {}
        for part, out in zip(parts, outs):
            probabilities = _probabilities(out)
            found.update({row: {head: p[i] for head, p in probabilities.items()} for i, row in enumerate(part)})
        return found

    def _forward(self, rows: list[int], clips: dict[int, LiveClip]):
        """(output, the rows' new state) of one forward over ``rows`` (the state is not written)."""
        inputs = self._inputs([clips[r] for r in rows])
        with torch.inference_mode():  # per thread: a worker enters it too
            return self.model(inputs, self.state.index_select(torch.tensor(rows, device=self.device)))

    def answer(self, row: int, questions: Sequence[str]) -> list[str]:
        """Answers from ``row``'s current memory (never re-reading the video)."""
        state = self.row_state(row)
        with self.lock, torch.inference_mode():
            return [self.model.answer(state, [q])[0] for q in questions]

    def _inputs(self, clips: list[LiveClip]):
        dtype = self.dtype or torch.float32
        if not self.answers:
            return torch.stack([c.frames for c in clips]).to(device=self.device, dtype=dtype)  # (b, C, T, H, W)
        pixels = torch.stack([c.frames.permute(1, 0, 2, 3) for c in clips])  # (b, T, 3, H, W) in [0, 1]
        times = torch.stack([c.timestamps for c in clips])  # (b, T) float64
        return Frames(pixels, times).to(self.device, dtype)


def _probabilities(logits) -> dict[str, np.ndarray]:
    outputs = logits if isinstance(logits, dict) else {"logits": logits}
    return {name: torch.softmax(v.float(), dim=-1).double().cpu().numpy() for name, v in outputs.items() if v.dim() == 2}


@dataclass
class LiveStream:
    """One live stream of the engine: its source, its row of memory, its records."""

    id: str
    source: str
    reader: LiveReader
    row: int
    ask: tuple[str, ...] = ()
    every: float | None = None
    status: str = "live"  # live, reconnecting, ended, failed, stopped
    clips: int = 0
    dropped: int = 0
    answers: int = 0
    latency: float | None = None  # of the last clip
    stream_time: float = 0.0  # end of the last clip stepped
    next_answer: float = math.inf
    answered_at: float | None = None  # stream time of the last answers
    reset_next: bool = False
    started: float = field(default_factory=time.monotonic)
    history: deque = field(default_factory=deque)  # (seq, record), the engine's keep_records latest
    seq: int = 0
    last_record: dict | None = None

    def describe(self) -> dict:
        return {"id": self.id, "source": self.source, "status": self.status, "clips": self.clips, "dropped": self.dropped,
                "answers": self.answers, "latency": None if self.latency is None else round(self.latency, 3),
                "stream_time": round(self.stream_time, 3), "ask": list(self.ask), "every": self.every,
                "last": self.last_record}


class LiveEngine:
    """Live streams sharing one batched model. ``sink(stream, record)`` receives every
    record as it is made (the records are also kept per stream, numbered, for catch-up)."""

    def __init__(self, model, settings: LiveSettings, capacity: int, labels: Sequence[str] | None = None,
                 topk: int = 5, device=None, dtype=None, reset_on_reconnect: bool = False,
                 max_seconds: float | None = None, sink: Callable[[LiveStream, dict], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, keep_records: int = 500, workers: int = 1):
        self.stepper = BatchedStepper(model, capacity, device, dtype, workers)
        self.settings = settings
        self.labels = labels
        self.topk = topk
        self.reset_on_reconnect = reset_on_reconnect
        self.max_seconds = max_seconds
        self.sink = sink
        self.clock = clock
        self.keep_records = keep_records  # per stream, for catching up (0: the sink has them all)
        self.streams: dict[str, LiveStream] = {}
        self.finished: dict[str, LiveStream] = {}  # ended streams, kept for their records (bounded)
        self._wake = threading.Event()
        self._lock = threading.RLock()  # guards the stream tables
        # Held through a whole step, and by joins and leaves: a row never changes hands
        # between a step's choice of clips and its write-back.
        self._step_lock = threading.RLock()
        # figures for /metrics
        self.total_clips = 0
        self.total_dropped = 0
        self.steps = 0
        self.latency_buckets = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
        self.latency_counts = [0] * (len(self.latency_buckets) + 1)
        self.latency_sum = 0.0

    @property
    def answers(self) -> bool:
        return self.stepper.answers

    # -- streams join and leave ----------------------------------------------------------

    def add(self, source: str, ask: Sequence[str] = (), every: float | None = None, stream_id: str | None = None,
            saved_state=None, resume: dict | None = None) -> LiveStream:
        """Open ``source`` (VideoError if it cannot be) and give it a row; it starts fresh,
        or from ``saved_state`` (one row) with ``resume``'s counts (written by :meth:`save`)."""
        if ask and not self.answers:
            raise LongvidError("questions need a model that answers (an MA-LMM or ReWind preset)")
        if every is not None and not (math.isfinite(every) and every > 0):
            raise LongvidError(f"every must be > 0 seconds, got {every}")
        if every is not None and not ask:
            raise LongvidError("every says when to answer: give the questions too (ask)")
        if len(self.stepper.free) == 0:
            raise LongvidError(f"all {self.stepper.capacity} stream slots are taken")
        reader = LiveReader(source, self.settings, ClipBuffer(self.settings.capacity))
        reader.open()  # a bad source fails here, before it takes a row
        with self._step_lock:
            try:
                row = self.stepper.join(saved_state)
            except LongvidError:
                reader.close()
                raise
            stream = self._register(LiveStream(stream_id or uuid.uuid4().hex[:12], source, reader, row, tuple(ask), every,
                                               history=deque(maxlen=self.keep_records)))
        stream.next_answer = every if every is not None else math.inf
        if resume:
            stream.clips = int(resume.get("clips", 0))
            stream.stream_time = reader.offset = float(resume.get("stream_time", 0.0))
            reader.clip_index = int(resume.get("next_clip", stream.clips))
            if every is not None:
                stream.next_answer = every * (math.floor(stream.stream_time / every + 1e-9) + 1)
        reader.buffer.on_put = self._wake.set
        reader.start()
        return stream

    def _register(self, stream: LiveStream) -> LiveStream:
        with self._lock:
            if stream.id in self.streams:
                self.stepper.leave(stream.row)
                raise LongvidError(f"stream {stream.id} already exists")
            self.streams[stream.id] = stream
        return stream

    def remove(self, stream_id: str, status: str = "stopped") -> LiveStream | None:
        with self._step_lock:
            with self._lock:
                stream = self.streams.pop(stream_id, None)
            if stream is None:
                return None
            stream.reader.stop(wait=False)
            self._close(stream, status)
            return stream

    def _close(self, stream: LiveStream, status: str, error: str | None = None) -> None:
        stream.status = status
        record = {"status": "done" if status in ("ended", "stopped") else "error", "clips": stream.clips,
                  "dropped": stream.dropped, "seconds": round(self.clock() - stream.started, 3)}
        if status != "ended":
            record["reason"] = status
        if error:
            record["error"] = error
        self._record(stream, record)
        self.stepper.leave(stream.row)
        with self._lock:
            self.streams.pop(stream.id, None)
            self.finished[stream.id] = stream
            while len(self.finished) > 256:
                self.finished.pop(next(iter(self.finished)))

    def get(self, stream_id: str) -> LiveStream | None:
        with self._lock:
            return self.streams.get(stream_id) or self.finished.get(stream_id)

    def is_live(self, stream_id: str) -> bool:
        with self._lock:
            return stream_id in self.streams

    def ended(self) -> list[LiveStream]:
        """Streams that ended, newest last (kept for their records, at most 256)."""
        with self._lock:
            return list(self.finished.values())

    def live(self) -> list[LiveStream]:
        with self._lock:
            return list(self.streams.values())

    # -- stepping ------------------------------------------------------------------------

    def step(self, timeout: float = 0.1) -> int:
        """Wait up to ``timeout`` s for input, then handle what the streams hold: their gaps
        and events, and one clip each in one batched forward. Returns the clips stepped."""
        if not any(s.reader.buffer.peek_ready() for s in self.live()):
            self._wake.wait(timeout)
        self._wake.clear()
        with self._step_lock:
            return self._step()

    def _step(self) -> int:
        clips: dict[int, tuple[LiveStream, LiveClip]] = {}
        for stream in self.live():
            clip = self._next_clip(stream)
            if clip is not None:
                clips[stream.row] = (stream, clip)
        if not clips:
            return 0
        for stream, _ in clips.values():
            if stream.reset_next:
                self.stepper.reset(stream.row)
                stream.reset_next = False
        try:
            outputs = self.stepper.step({row: clip for row, (_, clip) in clips.items()})
        except (RuntimeError, ValueError, LongvidError) as err:  # e.g. a clip the model cannot take: those streams end
            reason = " ".join(str(err).split())[:300]
            for stream, _ in clips.values():
                self._close(stream, "failed", f"the model failed on this stream's clip: {reason}")
            return 0
        self.steps += 1
        for row, (stream, clip) in clips.items():
            self._stepped(stream, clip, outputs[row])
        return len(clips)

    def _next_clip(self, stream: LiveStream) -> LiveClip | None:
        """The stream's next clip, after recording the gaps and events before it."""
        while True:
            item = stream.reader.buffer.get(0)
            if item is None:
                return None
            if isinstance(item, LiveClip):
                if self.max_seconds is not None and item.end > self.max_seconds + 1e-6:
                    self.remove(stream.id, "ended")
                    return None
                return item
            if isinstance(item, Gap):
                stream.dropped += item.count
                self.total_dropped += item.count
                self._record(stream, {"dropped": item.count, "from": round(item.start, 3), "to": round(item.end, 3)})
            elif isinstance(item, StreamEvent):
                if not self._event(stream, item):
                    return None

    def _event(self, stream: LiveStream, event: StreamEvent) -> bool:
        """Record a connection event; False when the stream is over."""
        if event.kind == "lost":
            stream.status = "reconnecting"
            self._record(stream, {"status": "lost", "error": event.reason, "attempt": event.attempt,
                                  "time": round(event.time, 3)})
            return True
        if event.kind == "reconnected":
            stream.status = "live"
            stream.reset_next = self.reset_on_reconnect
            self._record(stream, {"status": "reconnected", "attempt": event.attempt, "gap": event.gap,
                                  "time": round(event.time, 3), "memory": "reset" if self.reset_on_reconnect else "kept"})
            return True
        with self._lock:
            if stream.id not in self.streams:
                return False
        if event.kind == "ended":
            self._answer_now(stream, stream.stream_time)
            self._close(stream, "ended")
        else:
            self._close(stream, "failed", f"stream lost: {event.reason}")
        return False

    def _stepped(self, stream: LiveStream, clip: LiveClip, output) -> None:
        stream.clips += 1
        stream.stream_time = clip.end
        self.total_clips += 1
        if output is not None:
            heads = output
            top = (top_labels(next(iter(heads.values())), self.topk, self.labels) if len(heads) == 1
                   else {h: top_labels(p, self.topk, None) for h, p in heads.items()})
            latency = self.clock() - clip.arrived
            self._latency(stream, latency)
            self._record(stream, {"clip": clip.index, "start": round(clip.start, 3), "end": round(clip.end, 3),
                                  "top": top, "latency": round(latency, 3)})
            return
        self._latency(stream, self.clock() - clip.arrived)
        while stream.next_answer <= clip.end + 1e-9:
            self._answer_now(stream, stream.next_answer, clip)
            stream.next_answer += stream.every

    def _answer_now(self, stream: LiveStream, moment: float, clip: LiveClip | None = None) -> None:
        if not stream.ask or not stream.clips or stream.answered_at == moment:
            return
        stream.answered_at = moment
        for question, text in zip(stream.ask, self.stepper.answer(stream.row, stream.ask)):
            stream.answers += 1
            record = {"time": round(moment, 3), "question": question, "answer": text}
            if clip is not None:
                record["latency"] = round(self.clock() - clip.arrived, 3)
            self._record(stream, record)

    def ask(self, stream_id: str, question: str) -> dict:
        """Answer ``question`` from the stream's memory as it is now."""
        stream = self.get(stream_id)
        if stream is None:
            raise KeyError(stream_id)
        if not self.answers:
            raise LongvidError("this model classifies clips; it does not answer questions (serve an MA-LMM or ReWind preset)")
        if stream.id not in self.streams:
            raise LongvidError(f"stream {stream_id} has ended: its memory is gone")
        text = self.stepper.answer(stream.row, [question])[0]
        stream.answers += 1
        record = {"time": round(stream.stream_time, 3), "question": question, "answer": text, "asked": True}
        self._record(stream, record)
        return record

    def _latency(self, stream: LiveStream, latency: float) -> None:
        stream.latency = latency
        self.latency_sum += latency
        bucket = next((i for i, b in enumerate(self.latency_buckets) if latency <= b), len(self.latency_buckets))
        self.latency_counts[bucket] += 1

    def _record(self, stream: LiveStream, record: dict) -> None:
        record = {"video": stream.source, "stream": stream.id, **record}
        stream.history.append((stream.seq, record))
        stream.seq += 1
        if "clip" in record or "answer" in record:
            stream.last_record = record
        if self.sink is not None:
            self.sink(stream, record)

    def records_since(self, stream_id: str, since: int) -> tuple[list[tuple[int, dict]], int]:
        """(numbered records with seq >= since still kept, the next seq)."""
        stream = self.get(stream_id)
        if stream is None:
            raise KeyError(stream_id)
        with self._lock:
            return [(n, r) for n, r in list(stream.history) if n >= since], stream.seq

    def stop_all(self, status: str = "stopped") -> None:
        for stream in self.live():
            self.remove(stream.id, status)

    # -- memory on disk ------------------------------------------------------------------

    def save(self, stream: LiveStream, folder: str) -> None:
        """Write the stream's memory (``save_state``) and what it watches to ``folder``."""
        from longvid.fileio import write_text_atomically
        from longvid.core.state import save_state

        save_state(self.stepper.row_state(stream.row), os.path.join(folder, f"{stream.id}.safetensors"))
        meta = {"id": stream.id, "source": stream.source, "ask": list(stream.ask), "every": stream.every,
                "clips": stream.clips, "next_clip": stream.reader.clip_index, "stream_time": stream.stream_time}
        write_text_atomically(os.path.join(folder, f"{stream.id}.json"), json.dumps(meta) + "\n")
