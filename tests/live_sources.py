"""Live sources for tests, made with PyAV: an MPEG-TS stream pushed at real-time pace over
UDP on 127.0.0.1 (a camera or encoder on the network), and a model that is slow on purpose
and records the ``is_first`` flags it is given."""

from __future__ import annotations

import socket
import threading
import time

import av
import numpy as np
import torch

FPS = 16


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def level(index: int) -> int:
    return (16 + 8 * index) % 240


def push_mpegts(url: str, seconds: float, stop: threading.Event | None = None, fps: int = FPS, levels=level,
                pace: bool = True) -> int:
    """Encode flat frames (gray level ``levels(i)``) as MPEG-TS to ``url`` at real-time pace,
    for ``seconds`` or until ``stop``; returns the frames sent."""
    stop = stop or threading.Event()
    sent = 0
    with av.open(url, "w", format="mpegts") as container:
        stream = container.add_stream("mpeg2video", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": str(fps // 2), "bf": "0"}
        started = time.monotonic()
        for i in range(int(seconds * fps)):
            delay = started + i / fps - time.monotonic() if pace else 0.0
            if stop.wait(max(0.0, delay)):
                break
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), levels(i), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            sent += 1
        for packet in stream.encode():
            container.mux(packet)
    return sent


class Pusher:
    """Push to ``url`` from a thread: ``with Pusher(url, seconds): ...`` (stopped on exit)."""

    def __init__(self, url: str, seconds: float, **kwargs):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=push_mpegts, args=(url, seconds, self.stop), kwargs=kwargs, daemon=True)

    def __enter__(self) -> "Pusher":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def write_mpegts(path: str, seconds: float, fps: int = FPS) -> None:
    """An MPEG-TS file of flat frames (as a live encoder writes it)."""
    push_mpegts(path, seconds, threading.Event(), fps, pace=False)


class SlowModel(torch.nn.Module):
    """``model`` behind a delay of ``delay`` seconds per step; records the ``is_first``
    rows of every state it is given."""

    def __init__(self, model: torch.nn.Module, delay: float = 0.0):
        super().__init__()
        self.model = model
        self.delay = delay
        self.config = model.config
        self.is_first: list[list[bool]] = []

    def init_state(self, *args, **kwargs):
        return self.model.init_state(*args, **kwargs)

    def forward(self, inputs, state):
        self.is_first.append(state.is_first.tolist())
        time.sleep(self.delay)
        return self.model(inputs, state)
