"""Decoding in a child process: the clips of a :class:`~longvid.video.ClipReader` pass
made by a forked process and handed over through a bounded queue.

Decoding in a thread of the model's process makes the two take turns on Python's GIL
for every frame and every module call; on a busy machine each turn waits for a core,
and a small model streamed that way ran 2-3x slower than decoding or the model alone.
A forked child has its own interpreter, so the only exchange left is one message per
clip (its uint8 or float pixels and times).
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import pickle
import queue
import signal
import sys
from typing import Callable, Iterator

import numpy as np
import torch

from longvid.video.types import Clip, VideoError

_POLL_SECONDS = 0.5


def can_fork() -> bool:
    """Whether decoding can run in a forked child (Linux; not macOS or Windows)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def clips_from_child(decode: Callable[[], Iterator], progress, depth: int, path: str) -> Iterator:
    """Run ``decode()`` (which yields :class:`~longvid.video.types.Clip` and updates
    ``progress``) in a forked child, at most ``depth`` clips ahead; yield its clips here,
    re-raise its errors here, and copy its final ``progress`` back. Stopping early (or
    an error here) ends the child."""

    context = multiprocessing.get_context("fork")
    channel = context.Queue(maxsize=depth)
    child = context.Process(target=_child_main, args=(decode, progress, channel, os.getpid()), name=f"longvid-decode:{os.path.basename(path)}",
                            daemon=True)
    child.start()
    try:
        while True:
            kind, *payload = _receive(channel, child, path)
            if kind == "clip":
                frames, timestamps, index, start, end, num_valid = payload
                yield Clip(torch.from_numpy(frames), index, start, end, torch.from_numpy(timestamps), num_valid)
            elif kind == "done":
                vars(progress).update(vars(payload[0]))
                return
            elif kind == "video error":
                raise VideoError(*payload)
            else:
                raise pickle.loads(payload[0])
    finally:
        if child.is_alive():
            child.terminate()
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
        child.join()
        channel.close()


def _receive(channel, child, path: str) -> tuple:
    """The child's next message; an error when the child died without saying why."""

    while True:
        try:
            return channel.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            if child.exitcode is None:
                continue
        try:  # it ended: whatever it sent is in the pipe by now
            return channel.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            raise VideoError(path, f"the decoding process ended unexpectedly (exit code {child.exitcode})") from None


def _child_main(decode: Callable[[], Iterator], progress, channel, parent: int) -> None:

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends this process
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's handler (e.g. the CLI's flush on SIGTERM) is not ours: end at once
    _end_with_parent(parent)
    torch.set_num_threads(1)  # the parent's OpenMP pool does not exist here; decoding needs no torch threads
    # Objects are freed by this thread only, as they are decoded: the queue's feeder thread
    # must never run a garbage collection that frees a decoder (FFmpeg then joins its frame
    # threads from that thread: a deadlock was seen), and the parent's objects copied by the
    # fork (whose threads do not exist here) are never freed at all.
    gc.disable()
    gc.freeze()
    try:
        for clip in decode():
            channel.put(("clip", np.asarray(clip.frames.numpy()), clip.timestamps.numpy(), clip.index, clip.start, clip.end, clip.num_valid))
            gc.collect()
        gc.collect()
        channel.put(("done", progress))
    except VideoError as err:
        channel.put(("video error", err.path, err.reason))
    except BaseException as err:  # anything else: re-raised in the parent
        channel.put(("error", _pickled(err)))
    channel.close()
    channel.join_thread()  # everything sent is in the pipe before this process ends


def _pickled(err: BaseException) -> bytes:
    try:
        text = pickle.dumps(err)
        pickle.loads(text)
        return text
    except Exception:
        return pickle.dumps(RuntimeError(f"decoding failed: {type(err).__name__}: {err}"))


def _end_with_parent(parent: int) -> None:
    """Have the kernel end this process when its parent dies (Linux), so a killed run
    leaves no decoder behind."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call
        os._exit(1)
