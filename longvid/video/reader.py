"""Streaming clip reader: a video file of any length -> a stream of model-ready clips.

Decoding is lazy (PyAV), so memory stays bounded by a few clips however long the
video is. Two sampling modes:

* frame stride (MeMViT's ``T x tau``): clip ``k`` covers ``T * tau`` consecutive
  decoded frames and takes every ``tau``-th one, starting with the first;
* target fps (the LMMs' ``1 fps``): frames are sampled at times
  ``t0 + i / fps`` (the frame on screen at that time), ``T`` samples per clip.

Times come from the stream's presentation timestamps, so variable-frame-rate files
give true times.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import warnings
from dataclasses import dataclass
from typing import Iterator, Sequence

import av
import numpy as np
from av.video.reformatter import VideoReformatter
import torch

from longvid.errors import LongvidError
from longvid.video.transforms import KINETICS_MEAN, KINETICS_STD, to_model_input


class VideoError(LongvidError):
    """A video cannot be read. ``str(err)`` is one line: ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class VideoDecodeWarning(UserWarning):
    """A video stopped decoding before its end (truncated or corrupt data)."""


@dataclass
class Clip:
    """One clip of a stream.

    frames:      float tensor ``(C, T, H, W)``, model-ready (uint8 with ``dtype=torch.uint8``).
    index:       position of the clip in the stream (0, 1, ...).
    start, end:  seconds covered: ``start`` is the first frame's time, ``end`` the
                 time the next clip starts (the last frame's end for the final clip).
    timestamps:  float64 tensor ``(T,)``, the time of each sampled frame
                 (padded frames repeat the last real one).
    num_valid:   how many of the ``T`` frames are real (``< T`` for a padded tail).
    """

    frames: torch.Tensor
    index: int
    start: float
    end: float
    timestamps: torch.Tensor
    num_valid: int


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream."""

    path: str
    duration: float  # seconds
    fps: float  # average frame rate
    num_frames: int  # header count, or decoded count when counted
    frames_counted: bool  # True when num_frames comes from a full decode
    width: int
    height: int
    codec: str
    has_audio: bool

    def num_clips(self, clip_frames: int = 16, stride: int = 4, fps: float | None = None, tail: str = "pad") -> int:
        """How many clips :class:`ClipReader` yields with these settings."""
        if fps is not None:
            num_samples = max(1, math.ceil(self.duration * fps - 1e-9)) if self.num_frames else 0
            return _num_windows(num_samples, clip_frames, 1, tail)
        return _num_windows(self.num_frames, clip_frames, stride, tail)


def _num_windows(num_frames: int, clip_frames: int, stride: int, tail: str) -> int:
    span = clip_frames * stride
    if tail == "pad":
        return math.ceil(num_frames / span)
    needed = (clip_frames - 1) * stride + 1  # frames a window needs to hold all T samples
    return 0 if num_frames < needed else (num_frames - needed) // span + 1


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoError(path, "no such file")
    if os.path.isdir(path):
        raise VideoError(path, "is a directory, not a video file")
    try:
        container = av.open(path, mode="r")
    except InterruptedError:  # a signal (Ctrl-C) came while opening, e.g. a FIFO no one writes yet: stop, not a bad file
        raise
    except av.FFmpegError as err:
        raise VideoError(path, f"not a readable video file ({_reason(err)})") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        if "audio" in kinds:
            raise VideoError(path, "audio-only file: it has no video stream")
        raise VideoError(path, "no video stream in the file" + (f" (streams: {', '.join(kinds)})" if kinds else ""))
    return container


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return " ".join(str(text).split())


def _stream_duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


def _average_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def probe(path: str | os.PathLike, count_frames: bool = False) -> VideoInfo:
    """Read a video's header; with ``count_frames``, decode it all to count frames."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        duration = _stream_duration(container, stream)
        fps = _average_fps(stream)
        # Without a header count (e.g. WebM), estimate; count only when asked.
        num_frames = stream.frames or int(round(duration * fps))
        counted = False
        if count_frames:
            num_frames = 0
            try:
                for _ in container.decode(stream):
                    num_frames += 1
            except av.FFmpegError:
                pass
            counted = True
        codec = stream.codec_context.name if stream.codec_context else "unknown"
        return VideoInfo(
            path=os.fspath(path),
            duration=duration,
            fps=fps,
            num_frames=num_frames,
            frames_counted=counted,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            codec=codec,
            has_audio=bool(container.streams.audio),
        )
    finally:
        container.close()


class ClipReader:
    """Iterate over a video file as clips. Defaults give MeMViT's 16x4 input.

    Args:
        path: video file.
        clip_frames: frames per clip ``T``.
        stride: sampling stride in decoded frames ``tau`` (ignored when ``fps`` is set).
        fps: sample at this many frames per second instead of a frame stride.
        short_side: resize so the shorter side has this size (None: keep).
        crop: center crop size, an int for a square (None: full frame).
        mean, std: per-channel normalization after scaling to [0, 1] (None: only scale).
        dtype: ``torch.float32`` (default) or ``torch.uint8`` for raw pixels (with
            ``mean=None, std=None``), e.g. to normalize on the GPU.
        tail: ``"pad"`` yields the last partial clip, repeating its last frame;
            ``"drop"`` drops it.
        start, end: read only ``[start, end)`` seconds (start seeks).
        background: decode in a background thread with a bounded queue, so
            decoding overlaps model compute.
        queue_size: clips buffered by the background thread.
        decode_threads: FFmpeg decoding threads (0: let FFmpeg choose).

    Iterating yields :class:`Clip`. A file that stops decoding early (truncated,
    corrupt) yields every clip it could decode and then warns once
    (:class:`VideoDecodeWarning`) with how far it got.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        clip_frames: int = 16,
        stride: int = 4,
        fps: float | None = None,
        short_side: int | None = 224,
        crop: int | tuple[int, int] | None = 224,
        mean: Sequence[float] | None = KINETICS_MEAN,
        std: Sequence[float] | None = KINETICS_STD,
        tail: str = "pad",
        start: float = 0.0,
        end: float | None = None,
        background: bool = False,
        queue_size: int = 2,
        decode_threads: int = 0,
        dtype: torch.dtype = torch.float32,
    ):
        if clip_frames < 1:
            raise ValueError(f"clip_frames must be >= 1, got {clip_frames}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if tail not in ("pad", "drop"):
            raise ValueError(f"tail must be 'pad' or 'drop', got {tail!r}")
        if start < 0 or (end is not None and end <= start):
            raise ValueError(f"need 0 <= start < end, got start={start}, end={end}")
        if dtype not in (torch.float32, torch.uint8):
            raise ValueError(f"dtype must be torch.float32 or torch.uint8, got {dtype}")
        if dtype == torch.uint8 and (mean is not None or std is not None):
            raise ValueError("uint8 clips cannot be normalized: pass mean=None, std=None")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.path = os.fspath(path)
        self.clip_frames = clip_frames
        self.stride = stride
        self.fps = fps
        self.short_side = short_side
        self.crop = crop
        self.mean = mean
        self.std = std
        self.tail = tail
        self.start = start
        self.end = end
        self.background = background
        self.queue_size = queue_size
        self.decode_threads = decode_threads
        self.dtype = dtype
        # Open now so a bad path fails at construction with a VideoError.
        self.info = probe(self.path)
        if self.info.duration > 0 and start >= self.info.duration:
            raise VideoError(self.path, f"start {start:g} s is past the end of the video ({self.info.duration:.2f} s)")

    # -- iteration -------------------------------------------------------------------

    def __iter__(self) -> Iterator[Clip]:
        if self.background:
            return self._iter_background()
        return self._iter_foreground()

    def _iter_foreground(self) -> Iterator[Clip]:
        progress = _Progress()
        yield from self._decode_clips(progress)
        self._warn_if_incomplete(progress)

    def _iter_background(self) -> Iterator[Clip]:
        progress = _Progress()
        items: queue.Queue = queue.Queue(maxsize=self.queue_size)
        stop = threading.Event()
        done = object()

        def put(item) -> bool:
            """Queue ``item`` unless the consumer has stopped (then False)."""
            while not stop.is_set():
                try:
                    items.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for clip in self._decode_clips(progress):
                    if not put(clip):
                        return
            except BaseException as err:  # forwarded to the consumer thread
                put(err)
                return
            put(done)

        worker = threading.Thread(target=produce, name=f"longvid-decode:{os.path.basename(self.path)}", daemon=True)
        worker.start()
        try:
            while True:
                item = items.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()
        self._warn_if_incomplete(progress)

    def _warn_if_incomplete(self, progress: "_Progress") -> None:
        if progress.error is None:
            return
        expected = self.end if self.end is not None else self.info.duration
        warnings.warn(
            f"{self.path}: damaged video ({progress.error}); decoded up to {progress.last_time:.2f} s "
            f"of {expected:.2f} s and yielded {progress.clips} clips",
            VideoDecodeWarning,
            stacklevel=3,
        )

    # -- decoding --------------------------------------------------------------------

    def _decode_frames(self, progress: "_Progress") -> Iterator[tuple[av.VideoFrame, float]]:
        """Decoded frames with their times in seconds, from ``start`` to ``end``."""
        container = _open(self.path)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.thread_count = self.decode_threads
            fallback_fps = _average_fps(stream) or 30.0
            progress.frame_duration = 1.0 / fallback_fps
            if self.start > 0:
                offset = int(self.start / stream.time_base) if stream.time_base else int(self.start * 1e6)
                try:
                    container.seek(offset, stream=stream, backward=True, any_frame=False)
                except av.FFmpegError as err:
                    raise VideoError(self.path, f"cannot seek to {self.start} s ({_reason(err)})") from None
            counts = _Counts()
            for frame in self._frames(container, stream, progress, counts):
                time = frame.time if frame.time is not None else (counts.frames - 1) / fallback_fps
                if time < self.start - 1e-6:
                    continue
                if self.end is not None and time >= self.end - 1e-9:
                    return
                progress.frames += 1
                progress.last_time = time
                yield frame, time
            if progress.frames == 0 and self.start == 0:
                why = f" ({progress.error})" if progress.error else ""
                raise VideoError(self.path, f"no decodable video frames{why}")
            if progress.error is None:
                progress.error = self._damage(stream, counts, progress)
        finally:
            container.close()

    @staticmethod
    def _frames(container, stream, progress: "_Progress", counts: "_Counts") -> Iterator[av.VideoFrame]:
        """Decode packet by packet, counting packets with data and frames out.

        A packet the decoder rejects is skipped (and recorded); FFmpeg also drops some
        damaged data silently (its log is off: logging from its decoding threads can
        deadlock PyAV), which shows as fewer frames than packets or an early end.
        """
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets, None)
            except av.FFmpegError as err:  # the container itself is unreadable from here
                progress.error = progress.error or _reason(err)
                return
            if packet is None:
                return
            if packet.size:
                counts.packets += 1
            try:
                frames = packet.decode()  # the last, empty packet flushes the decoder
            except av.FFmpegError as err:  # a damaged packet: skip it, keep decoding
                progress.error = progress.error or _reason(err)
                continue
            for frame in frames:
                counts.frames += 1
                yield frame

    def _damage(self, stream, counts: "_Counts", progress: "_Progress") -> str | None:
        """Why a stream that decoded without an exception still looks damaged, or None."""
        if counts.frames < counts.packets:
            return f"{counts.packets - counts.frames} of {counts.packets} frames could not be decoded"
        if self.start > 0 or self.end is not None:
            return None
        if stream.frames and counts.frames < stream.frames - 1:
            return f"the stream ended after {counts.frames} of {stream.frames} frames"
        slack = max(0.5, 3 * progress.frame_duration)
        if self.info.duration > 0 and progress.last_time + progress.frame_duration < self.info.duration - slack:
            return "the stream ended early"
        return None

    def _decode_clips(self, progress: "_Progress") -> Iterator[Clip]:
        if self.fps is None:
            samples = self._sample_by_stride(progress)
        else:
            samples = self._sample_by_fps(progress)
        for clip in self._group(samples, progress):
            progress.clips += 1
            yield clip

    def _sample_by_stride(self, progress: "_Progress") -> Iterator[tuple[av.VideoFrame, float, int, float | None]]:
        """(frame, time, window index, window start) for every ``stride``-th frame."""
        span = self.clip_frames * self.stride
        for position, (frame, time) in enumerate(self._decode_frames(progress)):
            if position % self.stride == 0:
                yield frame, time, position // span, None

    def _sample_by_fps(self, progress: "_Progress") -> Iterator[tuple[av.VideoFrame, float, int, float | None]]:
        """(frame on screen at t_i, t_i, window index, t_i) for t_i = t0 + i / fps."""
        period = 1.0 / self.fps
        previous: tuple[av.VideoFrame, float] | None = None
        t0: float | None = None
        index = 0
        for frame, time in self._decode_frames(progress):
            if t0 is None:
                t0 = time
            if previous is not None:
                while t0 + index * period < time - 1e-9:
                    yield previous[0], previous[1], index // self.clip_frames, t0 + index * period
                    index += 1
            previous = (frame, time)
        if previous is not None:
            stop = previous[1] + progress.frame_duration
            if self.end is not None:
                stop = min(stop, self.end)
            while t0 + index * period < stop - 1e-9 or index == 0:
                yield previous[0], previous[1], index // self.clip_frames, t0 + index * period
                index += 1

    def _group(self, samples, progress: "_Progress") -> Iterator[Clip]:
        to_rgb = VideoReformatter()  # one conversion context for the whole stream (much faster than per frame)
        buffer: np.ndarray | None = None  # (T, H, W, 3) uint8, reused: each clip's pixels are copied out of it
        count = 0
        times: list[float] = []
        window = 0
        window_start: float | None = None
        for frame, time, sample_window, sample_time in samples:
            when = sample_time if sample_time is not None else time
            if sample_window != window:
                if count:
                    yield self._make_clip(buffer, count, times, window, window_start, next_start=when)
                count, times, window, window_start = 0, [], sample_window, None
            if window_start is None:
                window_start = when
            if buffer is None:
                buffer = np.empty((self.clip_frames, frame.height, frame.width, 3), np.uint8)
            # Copy at once: the converter then reuses its output buffer (keeping views alive
            # makes it allocate every frame). A mid-stream size change is scaled to the first size.
            buffer[count] = to_rgb.reformat(frame, format="rgb24", width=buffer.shape[2], height=buffer.shape[1]).to_ndarray()
            count += 1
            times.append(when)
        if count:
            end = progress.last_time + progress.frame_duration  # the last frame's end
            if self.fps is not None:
                end = min(end, window_start + count / self.fps)
            if self.end is not None:
                end = min(end, self.end)
            clip = self._make_clip(buffer, count, times, window, window_start, next_start=end)
            if clip is not None:
                yield clip

    def _make_clip(self, buffer: np.ndarray, num_valid: int, times, window, window_start, next_start) -> Clip | None:
        if num_valid < self.clip_frames:
            if self.tail == "drop":
                return None
            buffer[num_valid:] = buffer[num_valid - 1]
            times = times + [times[-1]] * (self.clip_frames - num_valid)
        raw = torch.from_numpy(buffer)  # (T, H, W, C) uint8
        pixels = to_model_input(raw, self.short_side, self.crop, self.mean, self.std, self.dtype)  # (C, T, H', W'), a new tensor
        return Clip(
            frames=pixels,
            index=window,
            start=float(window_start),
            end=float(next_start),
            timestamps=torch.tensor(times, dtype=torch.float64),
            num_valid=num_valid,
        )

    def __repr__(self) -> str:
        mode = f"fps={self.fps}" if self.fps is not None else f"stride={self.stride}"
        return f"ClipReader({self.path!r}, clip_frames={self.clip_frames}, {mode})"


@dataclass
class _Counts:
    packets: int = 0  # demuxed packets that carry data
    frames: int = 0  # frames the decoder produced


@dataclass
class _Progress:
    frames: int = 0
    clips: int = 0
    last_time: float = 0.0
    frame_duration: float = 1 / 30
    error: str | None = None


def read_clips(path: str | os.PathLike, **kwargs) -> Iterator[Clip]:
    """Function form of :class:`ClipReader`: ``for clip in read_clips(path, clip_frames=8): ...``."""
    return iter(ClipReader(path, **kwargs))
