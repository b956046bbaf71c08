"""Streaming clip reader: a video file of any length -> a stream of model-ready clips.

Decoding is lazy (PyAV), so memory stays bounded by a few clips however long the
video is, and each frame is resized as it is decoded (a 4K video never holds more than
one full-size frame). Two sampling modes:

* frame stride (MeMViT's ``T x tau``): clip ``k`` covers ``T * tau`` consecutive
  decoded frames and takes every ``tau``-th one, starting with the first;
* target fps (the LMMs' ``1 fps``): frames are sampled at times
  ``t0 + i / fps`` (the frame on screen at that time), ``T`` samples per clip.

Times come from the stream's presentation timestamps, so variable-frame-rate files
give true times, and they are seconds from the video stream's start: the first frame
of an MPEG-TS file (whose clock starts at e.g. 1.4 s) is at 0, as in a player. Frames
are turned upright by the container's display matrix (phone videos), and frames a
stream-copied cut marks as discarded (MP4 edit lists) are not part of the video.
"""

from __future__ import annotations

import itertools
import math
import os
import queue
import threading
import warnings
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Callable, Iterator, Sequence

import av
import numpy as np
import torch
from av.sidedata.sidedata import Type as SideDataType
from av.video.reformatter import VideoReformatter

from longvid.video.types import Clip, VideoDamage, VideoDecodeWarning, VideoError
from longvid.video.transforms import KINETICS_MEAN, KINETICS_STD, resize_and_crop, to_model_input
from longvid.video.worker import can_fork, clips_from_child


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream."""

    path: str
    duration: float  # seconds from the stream's first frame to its end
    fps: float  # average frame rate
    num_frames: int  # header count (discarded frames left out), or decoded count when counted
    frames_counted: bool  # True when num_frames comes from a full decode
    width: int  # as displayed (after the rotation)
    height: int
    codec: str  # the codec's name (av1, h264), not the decoder's (libdav1d)
    has_audio: bool
    rotation: int = 0  # degrees counter-clockwise the display matrix turns the coded frames (ffprobe's sign)

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


def _average_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


# -- the video's clock -------------------------------------------------------------------


@dataclass(frozen=True)
class _Clock:
    """Seconds from the video stream's start (its first frame is at 0 in every container)."""

    origin: int  # the stream's start, in its timestamps
    time_base: float  # seconds per timestamp unit
    end: float  # the stream's end on this clock (0 when the container does not say)

    @classmethod
    def of(cls, container, stream) -> "_Clock":
        time_base = stream.time_base or Fraction(1, av.time_base)
        if stream.start_time is not None:
            origin = stream.start_time
        else:
            origin = round(container.start_time / av.time_base / time_base) if container.start_time is not None else 0
        if stream.duration is not None:
            end = float(stream.duration * time_base)
        elif container.duration is not None:  # e.g. Matroska: the container's duration
            container_start = container.start_time / av.time_base if container.start_time is not None else float(origin * time_base)
            end = container.duration / av.time_base + container_start - float(origin * time_base)
        else:
            end = 0.0
        return cls(origin, float(time_base), max(0.0, end))

    def seconds(self, timestamp: int) -> float:
        return (timestamp - self.origin) * self.time_base

    def timestamp(self, seconds: float) -> int:
        return self.origin + int(round(seconds / self.time_base))


# -- the display matrix ------------------------------------------------------------------

# (transpose, flip rows, flip columns), applied in that order to an (H, W, C) frame
_Orientation = tuple[bool, bool, bool]
_UPRIGHT: _Orientation = (False, False, False)


def _display_matrix(frame: av.VideoFrame) -> np.ndarray | None:
    """The frame's 3x3 display matrix as 9 int32 (16.16 fixed point), or None."""
    data = frame.side_data.get(SideDataType.DISPLAYMATRIX)
    return None if data is None else np.frombuffer(bytes(data), dtype="<i4")


def _clockwise(matrix: np.ndarray | None) -> int | None:
    """Degrees in [0, 360) the display matrix turns the coded frame clockwise (None: no turn given)."""
    if matrix is None:
        return None
    a, b, c, d = (float(matrix[i]) / 65536 for i in (0, 1, 3, 4))
    if math.hypot(a, c) == 0 or math.hypot(b, d) == 0:
        return None
    return round(math.degrees(math.atan2(b / math.hypot(b, d), a / math.hypot(a, c)))) % 360


def _orientation(matrix: np.ndarray | None) -> _Orientation:
    """How to turn a coded frame upright, as FFmpeg's players do (fftools' autorotate).

    Right-angle rotations and mirrorings only; other angles are left as coded.
    """
    clockwise = _clockwise(matrix)
    if clockwise is None:
        return _UPRIGHT
    a, c, d = (float(matrix[i]) for i in (0, 3, 4))
    if clockwise == 90:
        return (True, False, c <= 0)  # clockwise, or a transpose when mirrored
    if clockwise == 180:
        return (False, d < 0, a < 0)
    if clockwise == 270:
        return (True, True, c < 0)  # counter-clockwise, or the anti-transpose when mirrored
    if clockwise == 0:
        return (False, d < 0, False)
    return _UPRIGHT


def _turn_upright(pixels: torch.Tensor, orientation: _Orientation) -> torch.Tensor:
    """``(H, W, C)`` -> the displayed ``(H, W, C)`` (or ``(W, H, C)``), contiguous when changed."""
    transpose, flip_rows, flip_columns = orientation
    if not (transpose or flip_rows or flip_columns):
        return pixels
    if transpose:
        pixels = pixels.transpose(0, 1)
    dims = [dim for dim, flip in ((0, flip_rows), (1, flip_columns)) if flip]
    return pixels.flip(dims).contiguous() if dims else pixels.contiguous()


class _FramePixels:
    """Decoded frames -> uint8 ``(H', W', 3)`` arrays ready for a clip: RGB at the first
    frame's size, turned upright, resized and cropped, one frame at a time."""

    def __init__(self, short_side: int | None, crop: int | tuple[int, int] | None):
        self.short_side = short_side
        self.crop = crop
        self.to_rgb = VideoReformatter()  # one conversion context for the whole stream (much faster than per frame)
        self.size: tuple[int, int] | None = None  # the first frame's (width, height)
        self.orientation = _UPRIGHT

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.size is None:
            self.size = (frame.width, frame.height)
            self.orientation = _orientation(_display_matrix(frame))
        # A mid-stream size change is scaled to the first size. The array is the converter's
        # own buffer: it is used at once, never kept.
        rgb = self.to_rgb.reformat(frame, format="rgb24", width=self.size[0], height=self.size[1]).to_ndarray()  # (H, W, 3)
        if self.orientation == _UPRIGHT and self.short_side is None and self.crop is None:
            return rgb
        upright = _turn_upright(torch.from_numpy(rgb), self.orientation)  # (H, W, 3) as displayed
        return resize_and_crop(upright[None], self.short_side, self.crop)[0].numpy()  # (H', W', 3)


# -- what the header says ----------------------------------------------------------------


def _header_frames(stream) -> int:
    """The container's frame count without the frames it marks as discarded (0: no count).

    A stream-copied cut (``ffmpeg -ss 10.3 -i in.mp4 -c copy``) keeps the packets from the
    keyframe before the cut and marks those before it as discarded (an MP4 edit list).
    """
    if not stream.frames:
        return 0
    entries = stream.index_entries
    count = len(entries)
    if not count:
        return stream.frames
    leading = next((i for i in range(count) if not entries[i].is_discard), count)
    trailing = next((i for i in range(count - leading) if not entries[count - 1 - i].is_discard), 0)
    if leading == 0 and trailing == 0:
        return stream.frames
    return count - leading - trailing


def _first_frame(container, stream, max_packets: int = 1024) -> av.VideoFrame | None:
    """The stream's first keyframe decoded on its own (found within ``max_packets``), or None.

    Decoded from a copy of its packet: the original may be marked as discarded (a cut
    that starts after it), and the decoder drops the frames of discarded packets.
    """
    try:
        key = next((p for p in itertools.islice(container.demux(stream), max_packets) if p.is_keyframe and p.size), None)
        if key is None:
            return None
        packet = av.Packet(bytes(key))
        packet.pts, packet.dts, packet.time_base = key.pts, key.dts, key.time_base
        frames = stream.codec_context.decode(packet) + stream.codec_context.decode(None)  # decode, then flush
    except av.FFmpegError:
        return None
    return frames[0] if frames else None


def probe(path: str | os.PathLike, count_frames: bool = False) -> VideoInfo:
    """Read a video's header (and its first frame, for the display rotation); with
    ``count_frames``, decode it all to count the frames :class:`ClipReader` yields."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        clock = _Clock.of(container, stream)
        fps = _average_fps(stream)
        # Without a header count (e.g. WebM, MPEG-TS), estimate; count only when asked.
        num_frames = _header_frames(stream) or int(round(clock.end * fps))
        first = _first_frame(container, stream)
        matrix = _display_matrix(first) if first is not None else None
        transpose = _orientation(matrix)[0]
        clockwise = _clockwise(matrix) or 0
        width, height = stream.codec_context.width, stream.codec_context.height
        info = VideoInfo(
            path=os.fspath(path),
            duration=clock.end,
            fps=fps,
            num_frames=num_frames,
            frames_counted=False,
            width=height if transpose else width,
            height=width if transpose else height,
            codec=stream.codec_context.codec.canonical_name,
            has_audio=bool(container.streams.audio),
            rotation=180 - (180 + clockwise) % 360,  # counter-clockwise, in (-180, 180]
        )
    finally:
        container.close()
    if count_frames:
        info = replace(info, num_frames=_count_frames(path), frames_counted=True)
    return info


def _count_frames(path: str | os.PathLike) -> int:
    """How many frames the reader yields from ``path`` (a damaged file: those it can decode)."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        progress = _Progress()
        return sum(1 for _ in _timed_frames(os.fspath(path), container, stream, _Clock.of(container, stream), 0.0, None, progress))
    finally:
        container.close()


# -- decoding (shared by the reader and probe's count) -----------------------------------


def _packet_timestamp(packet: av.Packet) -> int | None:
    return packet.pts if packet.pts is not None else packet.dts


def _packets_from(path: str, container, stream, clock: _Clock, start: float) -> Iterator[av.Packet]:
    """The stream's packets from the last keyframe at or before ``start`` on.

    Demuxers seek only roughly (in MPEG-TS to any packet near the target, so decoding
    would resume seconds late, at the next keyframe): seek, skip to the first keyframe,
    and while that keyframe is after ``start``, seek again further back, at most to a
    second before the first frame (MPEG-TS seeks by decoding times, which come before
    the presentation times with B-frames).
    """
    if start <= 0:
        return container.demux(stream)
    target = clock.timestamp(start)
    step = max(1, int(round(1 / clock.time_base)))  # one second
    first = clock.origin - step
    back = 0
    while True:
        at = max(target - back, first)
        try:
            container.seek(at, stream=stream, backward=True, any_frame=False)
            packets = container.demux(stream)
            key = next((p for p in packets if p.is_keyframe), None)
        except av.FFmpegError as err:
            raise VideoError(path, f"cannot seek to {start:g} s ({_reason(err)})") from None
        when = None if key is None else _packet_timestamp(key)
        if key is not None and (when is None or when <= target):
            return itertools.chain([key], packets)
        if at == first:  # the stream's first keyframe is after start (or none is marked): decode from the top
            if key is not None:
                return itertools.chain([key], packets)
            container.seek(first, stream=stream, backward=True, any_frame=True)
            return container.demux(stream)
        back = 2 * back or step


def _decode(packets: Iterator[av.Packet], progress: "_Progress", counted: Callable[[av.Packet], bool]) -> Iterator[av.VideoFrame]:
    """Decode packet by packet, counting (in ``progress``) the packets ``counted`` selects.

    A packet the decoder rejects is skipped (and recorded); FFmpeg also drops some
    damaged data silently (its log is off: logging from its decoding threads can
    deadlock PyAV), which shows as fewer frames than packets or an early end. Packets
    marked as discarded decode (later frames may refer to them) to no frame.
    """
    while True:
        try:
            packet = next(packets, None)
        except av.FFmpegError as err:  # the container itself is unreadable from here
            progress.error = progress.error or _reason(err)
            return
        if packet is None:
            return
        if packet.size and not packet.is_discard and counted(packet):
            progress.packets += 1
        try:
            frames = packet.decode()  # the last, empty packet flushes the decoder
        except av.FFmpegError as err:  # a damaged packet: skip it, keep decoding
            progress.error = progress.error or _reason(err)
            continue
        yield from frames


def _timed_frames(path: str, container, stream, clock: _Clock, start: float, end: float | None,
                  progress: "_Progress") -> Iterator[tuple[av.VideoFrame, float]]:
    """Decoded frames shown in ``[start, end)``, with their times on the video's clock.

    ``progress`` counts the packets and frames of that range (a frame short means damage)
    and notes the last frame; ``progress.stopped_at_end`` says whether ``end`` stopped it.
    """
    fallback_fps = _average_fps(stream) or 30.0
    progress.frame_duration = 1.0 / fallback_fps
    progress.stream_end = clock.end

    def in_range(packet: av.Packet) -> bool:
        when = _packet_timestamp(packet)
        if when is None:
            return start <= 0 and end is None
        time = clock.seconds(when)
        return time >= start - 1e-6 and (end is None or time < end - 1e-9)

    decoded = 0
    for frame in _decode(_packets_from(path, container, stream, clock, start), progress, in_range):
        decoded += 1
        time = clock.seconds(frame.pts) if frame.pts is not None else (decoded - 1) / fallback_fps
        if time < start - 1e-6:
            continue
        if end is not None and time >= end - 1e-9:
            progress.stopped_at_end = True
            return
        progress.frames += 1
        progress.last_time = time
        progress.last_duration = frame.duration * clock.time_base if frame.duration else None
        yield frame, time


def _last_frame_end(progress: "_Progress") -> float:
    """When the last decoded frame stops showing: after its own duration (else the average
    one), never past the stream's end."""
    end = progress.last_time + (progress.last_duration or progress.frame_duration)
    if progress.stream_end > progress.last_time:
        end = min(end, progress.stream_end)
    return end


def _assess(progress: "_Progress", start: float, end: float | None, header_frames: int) -> VideoDamage | None:
    """The damage a finished pass shows, or None for a clean one."""
    reason = progress.error
    if reason is None and progress.frames < progress.packets:
        reason = f"{progress.packets - progress.frames} of {progress.packets} frames could not be decoded"
    expected = progress.stream_end if end is None else (min(end, progress.stream_end) if progress.stream_end > 0 else 0.0)
    slack = max(0.5, 3 * progress.frame_duration)
    stopped_early = not progress.stopped_at_end and expected > 0 and _last_frame_end(progress) < expected - slack
    if start <= 0 and end is None and header_frames and progress.frames < header_frames - 1:
        stopped_early = stopped_early or progress.packets < header_frames - 1  # the data ran out, not just frames lost
        reason = reason or f"the stream ended after {progress.frames} of {header_frames} frames"
    if stopped_early:
        reason = reason or "the stream ended early"
    if reason is None:
        return None
    return VideoDamage(reason, decoded_until=progress.last_time, stopped_early=stopped_early)


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
        start, end: read only ``[start, end)`` seconds from the video's start (start
            seeks to the keyframe before it and decodes forward: exact in any container).
        background: decode ahead, through a bounded queue, so decoding overlaps model
            compute: ``"thread"`` (or True) in a thread of this process, ``"process"``
            in a forked child process (no GIL shared with the model; a thread where
            fork is unavailable); False decodes as the clips are asked for.
        queue_size: clips decoded ahead in the background.
        decode_threads: FFmpeg decoding threads (0: let FFmpeg choose).

    Iterating yields :class:`Clip`. A file that stops decoding early (truncated,
    corrupt) yields every clip it could decode and then warns once
    (:class:`VideoDecodeWarning`) with how far it got; the pass's ``damage`` (on the
    iterator, and on the reader for its last finished pass) says the same as a
    :class:`VideoDamage`, None for a clean file.
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
        background: bool | str = False,
        queue_size: int = 2,
        decode_threads: int = 0,
        dtype: torch.dtype = torch.float32,
    ):
        if clip_frames < 1:
            raise ValueError(f"clip_frames must be >= 1, got {clip_frames}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be > 0, got {fps}")
        if short_side is not None and short_side < 1:
            raise ValueError(f"short_side must be >= 1, got {short_side}")
        if crop is not None and min((crop, crop) if isinstance(crop, int) else crop) < 1:
            raise ValueError(f"crop must be >= 1, got {crop}")
        if tail not in ("pad", "drop"):
            raise ValueError(f"tail must be 'pad' or 'drop', got {tail!r}")
        if not (math.isfinite(start) and start >= 0) or (end is not None and not (math.isfinite(end) and end > start)):
            raise ValueError(f"need 0 <= start < end, got start={start}, end={end}")
        if dtype not in (torch.float32, torch.uint8):
            raise ValueError(f"dtype must be torch.float32 or torch.uint8, got {dtype}")
        if dtype == torch.uint8 and (mean is not None or std is not None):
            raise ValueError("uint8 clips cannot be normalized: pass mean=None, std=None")
        if background not in (False, True, "thread", "process"):
            raise ValueError(f"background must be False, True, 'thread' or 'process', got {background!r}")
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
        self.damage: VideoDamage | None = None  # of the last finished pass
        # Open now so a bad path fails at construction with a VideoError.
        self.info = probe(self.path)
        if self.info.duration > 0 and start >= self.info.duration:
            raise VideoError(self.path, f"start {start:g} s is past the end of the video ({self.info.duration:.2f} s)")

    # -- iteration -------------------------------------------------------------------

    def __iter__(self) -> "ClipStream":
        progress = _Progress()
        if self.background == "process" and can_fork():
            clips = self._iter_process(progress)
        elif self.background:
            clips = self._iter_background(progress)
        else:
            clips = self._iter_foreground(progress)
        return ClipStream(clips, progress)

    def _iter_process(self, progress: "_Progress") -> Iterator[Clip]:
        yield from clips_from_child(lambda: self._decode_clips(progress), progress, self.queue_size, self.path)
        self._finish(progress)

    def _iter_foreground(self, progress: "_Progress") -> Iterator[Clip]:
        yield from self._decode_clips(progress)
        self._finish(progress)

    def _iter_background(self, progress: "_Progress") -> Iterator[Clip]:
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
        self._finish(progress)

    def _finish(self, progress: "_Progress") -> None:
        """A pass ended: keep its damage and warn once if there is any."""
        self.damage = damage = progress.damage
        if damage is None:
            return
        expected = self.end if self.end is not None else self.info.duration
        warnings.warn(
            f"{self.path}: damaged video ({damage.reason}); decoded up to {damage.decoded_until:.2f} s "
            f"of {expected:.2f} s and yielded {progress.clips} clips",
            VideoDecodeWarning,
            stacklevel=4,
        )

    # -- decoding --------------------------------------------------------------------

    def _decode_frames(self, progress: "_Progress") -> Iterator[tuple[av.VideoFrame, float]]:
        """Decoded frames with their times in seconds, from ``start`` to ``end``."""
        container = _open(self.path)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.thread_count = self.decode_threads
            clock = _Clock.of(container, stream)
            yield from _timed_frames(self.path, container, stream, clock, self.start, self.end, progress)
            if progress.frames == 0 and self.start <= 0:
                why = f" ({progress.error})" if progress.error else ""
                raise VideoError(self.path, f"no decodable video frames{why}")
            if progress.frames == 0 and self.end is None:
                raise VideoError(self.path, f"no video frames at or after {self.start:g} s "
                                            f"(the video ends at {clock.end:.2f} s)")
            progress.damage = _assess(progress, self.start, self.end, _header_frames(stream))
        finally:
            container.close()

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
            stop = _last_frame_end(progress)
            if self.end is not None:
                stop = min(stop, self.end)
            while t0 + index * period < stop - 1e-9 or index == 0:
                yield previous[0], previous[1], index // self.clip_frames, t0 + index * period
                index += 1

    def _group(self, samples, progress: "_Progress") -> Iterator[Clip]:
        pixels = _FramePixels(self.short_side, self.crop)
        buffer: np.ndarray | None = None  # (T, H', W', 3) uint8, reused: each clip's pixels are copied out of it
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
            fitted = pixels(frame)  # (H', W', 3): a full-size frame is never kept
            if buffer is None:
                buffer = np.empty((self.clip_frames, *fitted.shape), np.uint8)
            buffer[count] = fitted
            del fitted  # it may view the converter's output, which is reused only when no view of it is alive
            count += 1
            times.append(when)
        if count:
            end = _last_frame_end(progress)
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
        pixels = to_model_input(torch.from_numpy(buffer), None, None, self.mean, self.std, self.dtype)  # (C, T, H', W'), a new tensor
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


class ClipStream:
    """One pass over a :class:`ClipReader`'s clips (what ``iter(reader)`` returns).

    Once the pass has ended, ``damage`` is a :class:`VideoDamage` when the video was
    damaged (how far decoding got), None when it decoded cleanly.
    """

    def __init__(self, clips: Iterator[Clip], progress: "_Progress"):
        self._clips = clips
        self._progress = progress

    def __iter__(self) -> "ClipStream":
        return self

    def __next__(self) -> Clip:
        return next(self._clips)

    def close(self) -> None:
        """Stop the pass early (stops the background thread)."""
        self._clips.close()

    @property
    def damage(self) -> VideoDamage | None:
        return self._progress.damage


@dataclass
class _Progress:
    """One pass over a video so far (written by the decoding thread)."""

    packets: int = 0  # packets with data shown in [start, end), discarded ones left out
    frames: int = 0  # frames decoded in [start, end)
    clips: int = 0
    last_time: float = 0.0  # the last decoded frame's time
    last_duration: float | None = None  # and its own duration, when the container gives one
    frame_duration: float = 1 / 30  # the average frame duration
    stream_end: float = 0.0  # the stream's end from the header (0: unknown)
    stopped_at_end: bool = False  # the pass stopped at the requested end
    error: str | None = None
    damage: VideoDamage | None = None


def read_clips(path: str | os.PathLike, **kwargs) -> Iterator[Clip]:
    """Function form of :class:`ClipReader`: ``for clip in read_clips(path, clip_frames=8): ...``."""
    return iter(ClipReader(path, **kwargs))
