"""Videos as users bring them, made with PyAV: phone rotation, MPEG-TS clocks,
stream-copied cuts, damaged packets. Used by test_reader.py and test_video_input.py."""

from __future__ import annotations

import av
from av.video.reformatter import VideoReformatter
import numpy as np


def marked_frames(count: int, height: int = 48, width: int = 64):
    """Frames with a bright block in the top-left corner (so any turn or mirror shows)
    over a gray level that changes with the frame index."""
    for i in range(count):
        frame = np.full((height, width, 3), 16 + 2 * (i % 50), np.uint8)
        frame[: height // 3, : width // 3] = 235
        yield frame


def write_rotated(path: str, degrees: int, hflip: bool = False, count: int = 6) -> list[np.ndarray]:
    """An H.264 MP4 whose display matrix turns the coded frames ``degrees`` counter-clockwise,
    then mirrors them (``hflip``), as phones record; returns the coded RGB frames."""
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        stream.set_display_rotation(degrees, hflip=hflip)
        for frame in marked_frames(count):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return decoded_frames(path)


def as_displayed(frame: np.ndarray, degrees: int, hflip: bool) -> np.ndarray:
    """What a player shows: turned ``degrees`` counter-clockwise, then mirrored."""
    shown = np.rot90(frame, k=(degrees // 90) % 4)
    return np.ascontiguousarray(shown[:, ::-1] if hflip else shown)


def rgb(frame: av.VideoFrame, reformatter: VideoReformatter) -> np.ndarray:
    """``frame.to_ndarray(format="rgb24")`` through a reformatter of the caller's. PyAV's own
    ``to_ndarray(format=...)`` keeps a converter in a thread-local of the calling thread, which
    a decoding child forked later from another thread frees on its way up and deadlocks on
    (FFmpeg's slice threads do not exist there): tests must not leave one behind."""
    return reformatter.reformat(frame, format="rgb24").to_ndarray()


def decoded_frames(path: str) -> list[np.ndarray]:
    """Every frame as plain PyAV decodes it, RGB ``(H, W, 3)``, in the coded orientation."""
    reformatter = VideoReformatter()
    with av.open(path) as container:
        return [rgb(frame, reformatter) for frame in container.decode(video=0)]


def copy_video(src: str, dst: str, cut: float = 0.0, shift: float = 0.0, format: str | None = None) -> None:
    """Stream-copy ``src``'s video into ``dst`` (no re-encoding), as ``ffmpeg -c copy`` does.

    ``cut``: start at that time, like ``ffmpeg -ss CUT -i src -c copy``: the packets from the
    keyframe before it are kept with times shifted so the cut is 0 (those before it get
    negative times: an MP4 stores them as discarded, with an edit list). ``shift``: add
    seconds to every timestamp (an MPEG-TS clock starts at about 1.4 s).
    """
    with av.open(src) as source, av.open(dst, "w", format=format) as target:
        video = source.streams.video[0]
        output = target.add_stream_from_template(video)
        offset = int(round((shift - cut) / video.time_base))
        if cut > 0:
            source.seek(int(round(cut / video.time_base)), stream=video, backward=True)
        for packet in source.demux(video):
            if packet.dts is None:  # the demuxer's final flush packet
                continue
            packet.pts += offset
            packet.dts += offset
            packet.stream = output
            target.mux(packet)


def zero_packets(src: str, dst: str, indices: tuple[int, ...]) -> None:
    """Copy ``src`` with the data of the video packets at ``indices`` overwritten by zeros
    (the container stays readable; the decoder rejects those packets)."""
    with av.open(src) as container:
        spans = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    data = bytearray(open(src, "rb").read())
    for index in indices:
        position, size = spans[index]
        data[position : position + size] = bytes(size)
    with open(dst, "wb") as f:
        f.write(bytes(data))


def naive_decode(path: str) -> list[tuple[float, np.ndarray]]:
    """(seconds from the first frame, RGB frame) of every frame plain PyAV decodes, packet
    by packet, skipping packets the decoder rejects."""
    frames = []
    reformatter = VideoReformatter()
    with av.open(path) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except av.FFmpegError:
                continue
            frames += [(float((f.pts - stream.start_time) * stream.time_base), rgb(f, reformatter)) for f in decoded]
    return frames
