"""Live video sources: a camera, a broadcast, a pipe, read as they arrive.

A :class:`LiveReader` opens a live source (``udp://``, ``rtp://``, ``tcp://``, ``rtsp://``,
``rtmp://``, ``srt://``, ``http(s)://`` for HLS / MPEG-TS / progressive MP4, ``-`` for a pipe on
stdin, ``/dev/videoN`` for a V4L2 camera) with open and read timeouts, decodes it in a
background thread and puts clips into a bounded :class:`ClipBuffer`. When the consumer
(the model) is slower than the stream, the buffer drops whole clips, oldest first, and
keeps one :class:`Gap` per run of dropped clips, so the consumer sees a gap as a gap.
Memory stays bounded: at most ``capacity`` clips wait, whatever the stream's length.

Stream time is seconds from the first frame received; after a reconnection it goes on
from where the stream was lost plus the wall-clock time it was away. Each clip carries
``arrived``, the monotonic time its last frame was decoded (for latency).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

import av
import numpy as np
import torch

from longvid.video.reader import _FramePixels, _reason
from longvid.video.types import Clip, VideoError
from longvid.video.transforms import KINETICS_MEAN, KINETICS_STD, to_model_input

NETWORK_SCHEMES = ("udp", "rtp", "tcp", "rtsp", "rtsps", "rtmp", "rtmps", "srt", "http", "https")


# The FFmpeg protocols a network source may use (its own and those under it).
PROTOCOLS = {
    "udp": "udp", "rtp": "rtp,udp", "tcp": "tcp", "srt": "srt",
    "rtsp": "rtsp,rtp,udp,tcp,tls", "rtsps": "rtsp,rtsps,rtp,udp,tcp,tls",
    "rtmp": "rtmp,tcp", "rtmps": "rtmps,rtmp,tcp,tls",
    "http": "http,https,tcp,tls,crypto,hls", "https": "http,https,tcp,tls,crypto,hls",
}


def is_live_source(source: str) -> bool:
    """Whether ``source`` names a live source (a network URL, ``-`` or a V4L2 device)."""
    source = os.fspath(source)
    return source == "-" or source.startswith("/dev/video") or urlsplit(source).scheme.lower() in NETWORK_SCHEMES


def source_scheme(source: str) -> str:
    """``udp``, ``http``, ..., ``pipe`` for ``-``, ``v4l2`` for a device, ``file`` for a path."""
    if source == "-":
        return "pipe"
    if source.startswith("/dev/video"):
        return "v4l2"
    scheme = urlsplit(source).scheme.lower()
    return scheme if scheme in NETWORK_SCHEMES else "file"


@dataclass
class LiveClip(Clip):
    """A :class:`~longvid.video.reader.Clip` of a live stream; ``arrived`` is the
    ``time.monotonic()`` at which its last frame was decoded."""

    arrived: float = 0.0


@dataclass
class Gap:
    """Clips dropped in a row: ``count`` clips covering stream time ``[start, end)``."""

    count: int
    start: float
    end: float

    def add(self, clip: Clip) -> None:
        self.count += 1
        self.end = clip.end


@dataclass
class StreamEvent:
    """Something that happened to the connection: ``kind`` is ``"lost"`` (it failed;
    ``reconnecting`` says whether it is tried again), ``"reconnected"`` (``gap``: seconds away),
    ``"ended"`` (the source finished) or ``"failed"`` (lost for good)."""

    kind: str
    reason: str = ""
    attempt: int = 0
    reconnecting: bool = False
    gap: float = 0.0
    time: float = 0.0  # stream time when it happened


class ClipBuffer:
    """A thread-safe bounded queue of clips (and events) that drops the oldest clip when full.

    Dropped clips become a :class:`Gap` at their place in the queue (adjacent drops merge),
    so the consumer gets, in order: clips, gaps, events. Events are never dropped.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: deque = deque()
        self._clips = 0
        self._ready = threading.Condition()
        self.dropped = 0  # clips dropped so far
        self.on_put: Callable[[], None] | None = None  # called after each put (e.g. to wake a consumer)

    def put(self, item) -> None:
        with self._ready:
            if isinstance(item, Clip):
                while self._clips >= self.capacity:
                    self._drop_oldest_clip()
                self._clips += 1
            self._items.append(item)
            self._ready.notify_all()
        if self.on_put is not None:
            self.on_put()

    def _drop_oldest_clip(self) -> None:
        for position, item in enumerate(self._items):
            if isinstance(item, Clip):
                del self._items[position]
                self._clips -= 1
                self.dropped += 1
                before = self._items[position - 1] if position > 0 else None
                if isinstance(before, Gap):
                    before.add(item)
                else:
                    self._items.insert(position, Gap(1, item.start, item.end))
                return

    def get(self, timeout: float | None = None):
        """The oldest item, or None when none came within ``timeout`` seconds."""
        with self._ready:
            if not self._items and not self._ready.wait_for(lambda: bool(self._items), timeout):
                return None
            item = self._items.popleft()
            if isinstance(item, Clip):
                self._clips -= 1
            return item

    def peek_ready(self) -> bool:
        with self._ready:
            return bool(self._items)

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)

    @property
    def clips(self) -> int:
        with self._ready:
            return self._clips


@dataclass(frozen=True)
class LiveSettings:
    """How a live source is opened and cut into clips.

    clip_frames, stride: ``T`` frames per clip, every ``stride``-th decoded frame (MeMViT);
    fps: sample at this rate instead (the LMMs), ``clip_frames`` samples per step.
    open_timeout, read_timeout: seconds to wait for the source to open / for more data.
    reconnect: attempts after a loss (0: none); backoff doubles from ``backoff`` seconds
    up to ``max_backoff``.
    capacity: clips that may wait for the model (then the oldest are dropped).
    pace: for files only, release frames at their real-time pace (a file as a camera).
    """

    clip_frames: int = 16
    stride: int = 4
    fps: float | None = None
    size: int = 224
    normalize: bool = True  # Kinetics mean/std (MeMViT); False: pixels in [0, 1] (LMMs)
    open_timeout: float = 10.0
    read_timeout: float = 5.0
    reconnect: int = 0
    backoff: float = 0.5
    max_backoff: float = 8.0
    capacity: int = 1
    pace: bool = True

    def __post_init__(self) -> None:
        for name in ("clip_frames", "stride", "size", "capacity"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise VideoError("settings", f"{name} must be an integer >= 1, got {value!r}")
        for name in ("open_timeout", "read_timeout", "backoff", "max_backoff"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise VideoError("settings", f"{name} must be > 0 seconds, got {value!r}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise VideoError("settings", f"fps must be > 0, got {self.fps!r}")
        if self.reconnect < 0:
            raise VideoError("settings", f"reconnect must be >= 0, got {self.reconnect}")


def open_source(source: str, settings: LiveSettings) -> av.container.InputContainer:
    """Open a live source (or a file) with the settings' timeouts; VideoError if it cannot be."""
    scheme = source_scheme(source)
    options = {"probesize": "262144", "analyzeduration": "1000000"}  # start within about a second
    kwargs: dict = {"timeout": (settings.open_timeout, settings.read_timeout)}
    target = source
    if scheme == "pipe":
        target = "pipe:0"
    elif scheme == "v4l2":
        if not os.path.exists(source):
            raise VideoError(source, "no such video device")
        kwargs["format"] = "v4l2"
    elif scheme == "udp":
        # FFmpeg's receive FIFO, in 188-byte packets: 8192 = 1.5 MB (RSS grows until it has all been
        # written once, then stays); when it overruns, packets are lost, not the stream
        options.update(overrun_nonfatal="1", fifo_size="8192")
    if scheme in PROTOCOLS:  # what a network source may pull in (an HLS playlist cannot name local files)
        options["protocol_whitelist"] = PROTOCOLS[scheme]
    elif scheme == "file":
        if not os.path.isfile(source):
            raise VideoError(source, "no such file" if not os.path.exists(source) else "not a video file")
        kwargs.pop("timeout")
    try:
        container = av.open(target, mode="r", options=options, **kwargs)
    except av.ExitError:
        raise VideoError(source, f"nothing received within {settings.open_timeout:g} s (open timeout)") from None
    except av.error.ProtocolNotFoundError:
        raise VideoError(source, f"the bundled FFmpeg cannot read {scheme}:// sources (protocol not found)") from None
    except av.FFmpegError as err:
        raise VideoError(source, f"cannot open ({_reason(err)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(source, "no video stream in the source")
    return container


class LiveReader:
    """Read ``source`` in a background thread into ``buffer`` as :class:`LiveClip`\\ s.

    :meth:`open` connects (raises :class:`VideoError`: a bad source fails at once);
    :meth:`start` starts the thread, which reconnects up to ``settings.reconnect`` times
    after a loss and ends with a ``"ended"`` or ``"failed"`` :class:`StreamEvent`.
    :meth:`stop` ends it (within the read timeout).
    """

    def __init__(self, source: str, settings: LiveSettings, buffer: ClipBuffer | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.source = os.fspath(source)
        self.settings = settings
        self.buffer = buffer if buffer is not None else ClipBuffer(settings.capacity)
        self.clock = clock
        self._container = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.offset = 0.0  # stream time of this connection's first frame
        self.last_time: float | None = None  # stream time of the last decoded frame
        self.last_arrival: float | None = None
        self.clip_index = 0
        self.frame_duration = 1 / 30

    def open(self) -> None:
        self._container = open_source(self.source, self.settings)

    def close(self) -> None:
        """Close a source opened but never started."""
        if self._container is not None and self._thread is None:
            self._container.close()
            self._container = None

    def start(self) -> None:
        if self._container is None:
            self.open()
        self._thread = threading.Thread(target=self._run, name=f"longvid-live:{self.source[:40]}", daemon=True)
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        self._stop.set()
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.settings.read_timeout + 2)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the reading thread ----------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._read(self._container)
            except VideoError as err:
                reason = err.reason
            else:  # the source ended (or the reader was stopped)
                if not self._stop.is_set():
                    self.buffer.put(StreamEvent("ended", "the source ended", time=self.last_time or 0.0))
                return
            finally:
                if self._container is not None:
                    self._container.close()
                    self._container = None
            if self._stop.is_set() or not self._reconnect(reason):
                return

    def _reconnect(self, reason: str) -> bool:
        """Try to open the source again (with backoff); False when it stays lost."""
        lost_at = self.clock()
        for attempt in range(1, self.settings.reconnect + 1):
            self.buffer.put(StreamEvent("lost", reason, attempt=attempt, reconnecting=True, time=self.last_time or 0.0))
            delay = min(self.settings.max_backoff, self.settings.backoff * 2 ** (attempt - 1))
            if self._stop.wait(delay):
                return False
            try:
                self._container = open_source(self.source, self.settings)
            except VideoError as err:
                reason = err.reason
                continue
            away = self.clock() - (self.last_arrival if self.last_arrival is not None else lost_at)
            if self.last_time is not None:
                self.offset = self.last_time + away  # stream time goes on through the gap
            self.buffer.put(StreamEvent("reconnected", attempt=attempt, gap=round(away, 3), time=self.offset))
            return True
        self.buffer.put(StreamEvent("failed", reason, attempt=self.settings.reconnect, time=self.last_time or 0.0))
        return False

    def _read(self, container) -> None:
        """Decode ``container`` into clips until it ends or the reader is stopped; raises
        VideoError when the connection fails (a read timeout, an I/O error)."""
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.frame_duration = 1 / float(rate) if rate else 1 / 30
        pixels = _FramePixels(self.settings.size, self.settings.size)
        sampler = _Sampler(self.settings, self.frame_duration)
        first_pts = None
        paced_from = self.clock()
        decoded = 0
        try:
            for frame in container.decode(stream):
                if self._stop.is_set():
                    return
                if frame.pts is not None and frame.time_base is not None:
                    if first_pts is None:
                        first_pts = frame.pts
                    seconds = float((frame.pts - first_pts) * frame.time_base)
                else:
                    seconds = decoded * self.frame_duration
                decoded += 1
                if self.settings.pace and source_scheme(self.source) == "file":
                    self._stop.wait(max(0.0, paced_from + seconds - self.clock()))
                moment = self._on_stream_clock(seconds)
                times = sampler.samples(moment)
                fitted = pixels(frame) if times else None  # (H', W', 3), once however many samples it stands for
                for when in times:
                    done = sampler.add(fitted, when)
                    if done is not None:
                        self._emit(*done)
                del fitted  # it may view the converter's buffer, which is reused only when no view of it is alive
        except av.ExitError:
            if self._stop.is_set():
                return
            raise VideoError(self.source, f"no data for {self.settings.read_timeout:g} s (read timeout)") from None
        except av.FFmpegError as err:
            if self._stop.is_set():
                return
            raise VideoError(self.source, f"connection lost ({_reason(err)})") from None
        if decoded == 0:
            raise VideoError(self.source, "no decodable video frames")

    def _on_stream_clock(self, seconds: float) -> float:
        """Stream time of a frame ``seconds`` after this connection's first one. A
        timestamp that jumps back, or ahead of the wall clock (a restarted sender, an
        MPEG-TS discontinuity), is taken as arriving now: the time goes on through the gap."""
        now = self.clock()
        moment = self.offset + seconds
        if self.last_time is not None:
            since = now - self.last_arrival
            if moment <= self.last_time - 1e-6 or moment > self.last_time + since + 2.0:
                self.offset = self.last_time + max(since, self.frame_duration) - seconds
                moment = self.offset + seconds
        self.last_time, self.last_arrival = moment, now
        return moment

    def _emit(self, frames: np.ndarray, times: list[float], end: float) -> None:
        mean, std = (KINETICS_MEAN, KINETICS_STD) if self.settings.normalize else (None, None)
        tensor = to_model_input(torch.from_numpy(frames), None, None, mean, std, torch.float32)  # (C, T, H, W)
        clip = LiveClip(frames=tensor, index=self.clip_index, start=float(times[0]), end=float(end),
                        timestamps=torch.tensor(times, dtype=torch.float64), num_valid=len(times), arrived=self.clock())
        self.clip_index += 1
        self.buffer.put(clip)


@dataclass
class _Sampler:
    """Collects sampled frames into clips: every ``stride``-th frame, or frames at ``fps``."""

    settings: LiveSettings
    frame_duration: float
    position: int = 0  # frames seen (stride mode)
    next_sample: float | None = None  # fps mode: the next sample time
    frames: list = field(default_factory=list)
    times: list = field(default_factory=list)

    def samples(self, moment: float) -> list[float]:
        """The sample times this frame stands for (none, one, or more at a low frame rate)."""
        if self.settings.fps is None:
            take = self.position % self.settings.stride == 0
            self.position += 1
            return [moment] if take else []
        period = 1 / self.settings.fps
        if self.next_sample is None or self.next_sample > moment + 10 * period + 1.0:
            self.next_sample = moment  # the first frame, or the clock went back (a new connection)
        times = []
        while self.next_sample <= moment + 1e-9:
            times.append(self.next_sample)
            self.next_sample += period
        if len(times) > self.settings.clip_frames:  # a long silence: a gap, not a burst of copies
            times = times[-1:]
            self.next_sample = moment + period
        return times

    def add(self, frame: np.ndarray, when: float):
        """Add one sample; (frames (T, H, W, 3), times, end) when a clip is complete."""
        self.frames.append(frame.copy())
        self.times.append(when)
        if len(self.frames) < self.settings.clip_frames:
            return None
        step = self.settings.stride * self.frame_duration if self.settings.fps is None else 1 / self.settings.fps
        done = (np.stack(self.frames), self.times, self.times[-1] + step)
        self.frames, self.times = [], []
        return done
