"""Shared fixtures: small generated videos (made with PyAV, once per session)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from longvid.video import write_video

FPS = 30
NUM_FRAMES = 150  # 5 s


def gray_level(index: int) -> int:
    """The flat gray level of frame ``index`` in the fixture videos (period 60)."""
    return 8 + 4 * (index % 60)


def gray_frames(count: int, height: int = 48, width: int = 64):
    for i in range(count):
        yield np.full((height, width, 3), gray_level(i), np.uint8)


def frame_index_of(frame: np.ndarray) -> int:
    """Recover ``index % 60`` from a decoded flat gray frame (any layout, values 0..255)."""
    return int(round((float(np.mean(frame)) - 8) / 4)) % 60


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("videos")
    paths = {}

    paths["cfr"] = str(folder / "cfr.mp4")
    write_video(paths["cfr"], gray_frames(NUM_FRAMES), fps=FPS)

    # Variable frame rate: irregular gaps between 10 and 100 ms.
    rng = np.random.default_rng(0)
    vfr_times = np.concatenate([[0.0], np.cumsum(rng.uniform(0.01, 0.1, size=79))])
    paths["vfr"] = str(folder / "vfr.mp4")
    write_video(paths["vfr"], gray_frames(80), timestamps=[float(t) for t in vfr_times])
    paths["vfr_times"] = vfr_times

    paths["odd"] = str(folder / "odd.mkv")
    write_video(paths["odd"], gray_frames(20, height=31, width=47), codec="ffv1", pix_fmt="yuv444p")

    faststart = str(folder / "faststart.mp4")
    write_video(faststart, gray_frames(300), fps=FPS, container_options={"movflags": "faststart"})
    data = open(faststart, "rb").read()
    paths["truncated"] = str(folder / "truncated.mp4")
    with open(paths["truncated"], "wb") as f:
        f.write(data[: len(data) // 2])

    paths["text"] = str(folder / "notes.mp4")
    with open(paths["text"], "w") as f:
        f.write("this is not a video\n")

    paths["audio"] = str(folder / "audio.m4a")
    with av.open(paths["audio"], "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)

    # A video stream whose packets are all noise: nothing decodes.
    paths["garbage"] = str(folder / "garbage.mkv")
    with av.open(paths["garbage"], "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        noise = np.random.default_rng(1)
        for i in range(10):
            packet = av.Packet(noise.integers(0, 256, 500, dtype=np.uint8).tobytes())
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, FPS)
            container.mux(packet)

    paths["missing"] = str(folder / "missing.mp4")
    paths["folder"] = str(folder)
    assert not os.path.exists(paths["missing"])
    return paths


def longvid_script() -> str:
    """The installed ``longvid`` script of this interpreter's environment (works from a venv
    that is not activated)."""
    return os.path.join(os.path.dirname(sys.executable), "longvid")


@pytest.fixture
def run_cli(tmp_path):
    """Run the installed ``longvid`` script exactly as a user types it: a real process,
    stdout and stderr piped to a file (not a terminal), no ``--quiet`` unless given.
    Returns ``(exit code, everything it printed)``."""

    def run(*args, cwd=None, timeout=300):
        log = tmp_path / "cli-output.txt"
        with open(log, "w") as f:
            code = subprocess.run([longvid_script(), *map(str, args)], stdout=f, stderr=subprocess.STDOUT,
                                  cwd=cwd or tmp_path, timeout=timeout).returncode
        return code, log.read_text()

    return run


def wait_until_blocked_opening_a_fifo(pid: int, timeout: float = 120.0) -> None:
    """Until process ``pid`` sleeps in the kernel's FIFO open (waiting for a writer)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(f"/proc/{pid}/wchan") as f:
            if f.read() == "wait_for_partner":
                return
        time.sleep(0.05)
    raise AssertionError("the run never blocked opening the FIFO")
