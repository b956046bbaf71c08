"""Write frames to a video file with PyAV (used by tests, demos and the benchmark)."""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Iterable, Sequence

import av
import numpy as np


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 30.0,
    codec: str = "libx264",
    timestamps: Sequence[float] | None = None,
    options: dict[str, str] | None = None,
    pix_fmt: str = "yuv420p",
    container_options: dict[str, str] | None = None,
) -> int:
    """Encode ``(H, W, 3)`` uint8 RGB frames to ``path``; returns the frame count.

    ``timestamps`` (seconds, increasing) gives each frame its own presentation time,
    for variable-frame-rate files; otherwise frames are spaced ``1 / fps`` apart.
    With 4:2:0 ``pix_fmt`` an odd width or height loses its last column/row; use e.g.
    ``codec="ffv1", pix_fmt="yuv444p"`` in a ``.mkv`` for odd sizes. ``options`` go to
    the encoder, ``container_options`` to the muxer (e.g. ``{"movflags": "faststart"}``).
    The file is written to a temporary name and renamed when complete.
    """
    path = os.fspath(path)
    tmp = f"{path}.partial{os.path.splitext(path)[1]}"
    rate = Fraction(fps).limit_denominator(1000)
    count = 0
    with av.open(tmp, mode="w", options=container_options or {}) as container:
        stream = None
        for frame_array in frames:
            if stream is None:
                height, width = frame_array.shape[:2]
                stream = container.add_stream(codec, rate=rate)
                even = pix_fmt == "yuv420p"  # 4:2:0 chroma needs even sizes: drop a row/column
                stream.width = width - width % 2 if even else width
                stream.height = height - height % 2 if even else height
                stream.pix_fmt = pix_fmt
                if timestamps is not None:
                    stream.codec_context.time_base = Fraction(1, 1000)
                if options:
                    stream.options = dict(options)
                elif codec == "libx264":
                    stream.options = {"preset": "ultrafast", "crf": "18"}
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_array[: stream.height, : stream.width]), format="rgb24")
            if timestamps is not None:
                frame.pts = int(round(timestamps[count] * 1000))
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        if stream is None:
            raise ValueError("write_video needs at least one frame")
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return count
