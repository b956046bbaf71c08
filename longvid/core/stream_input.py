"""How clips reach the model in a stream.

* The split of the CPU cores between decoding and the model (:func:`default_split`):
  decoding runs in a child process (:mod:`longvid.video.worker`) with its own FFmpeg
  threads, the model on torch's intra-op threads, ``prefetch`` clips apart.
* Clips travel as uint8 pixels and are normalized where the model runs
  (:func:`model_input`); on CUDA each clip is copied from pinned memory on a side
  stream, started while the model still computes the clip before (:class:`DeviceClips`).
* Optional model preparation (:func:`prepare_model`): channels-last-3d convolutions and
  ``torch.compile`` with a fallback to eager execution when compiling fails.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import torch

from longvid.video.transforms import KINETICS_MEAN, KINETICS_STD, scale_and_normalize


# -- the thread split ---------------------------------------------------------------------


@dataclass(frozen=True)
class ThreadSplit:
    """decode_threads: FFmpeg decoding threads (0: FFmpeg chooses); torch_threads: the
    model's intra-op threads; prefetch: clips decoded ahead of the model."""

    decode_threads: int
    torch_threads: int
    prefetch: int


def available_cores() -> int:
    """The cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


SMALL_MODEL_WORK = 1e12  # parameters x input pixels per clip: memvit_tiny 6.6e10, MeMViT-16 16x224x224 2.8e13


def model_work(model: torch.nn.Module, clip_frames: int, size: int) -> float:
    """A cheap, deterministic proxy of a model's compute per clip: its parameters times
    the pixels of one clip (``clip_frames x size x size``)."""
    return float(sum(p.numel() for p in model.parameters())) * clip_frames * size * size


def default_split(cores: int | None = None, work: float | None = None) -> ThreadSplit:
    """The split ``longvid stream`` uses unless told otherwise, for ``cores`` (default:
    :func:`available_cores`) and a model of ``work`` (:func:`model_work`; None: a large one).

    Decoding gets one FFmpeg thread on up to 4 cores (two above), in its own process. A
    large model gets every core for torch: decoding takes a small share and fills the
    model's idle moments. A small model (under :data:`SMALL_MODEL_WORK`) costs about what
    decoding does, so the two get cores of their own (torch: the rest, at most 4).
    Measured on 2 cores (benchmarks/stream_speed.py); the split depends only on the
    machine and the model, never on timings, so a run's outputs do not vary between runs
    (torch's thread count changes the last bits of a model's outputs).
    """
    cores = cores or available_cores()
    decode_threads = 1 if cores <= 4 else 2
    if work is not None and work < SMALL_MODEL_WORK:
        torch_threads = max(1, min(cores - decode_threads, 4))
    else:
        torch_threads = cores
    return ThreadSplit(decode_threads=decode_threads, torch_threads=torch_threads, prefetch=2)


def apply_split(work: float | None = None, torch_threads: int | None = None) -> ThreadSplit:
    """Set torch's intra-op threads to ``torch_threads`` (default: the default split's for a
    model of ``work``); returns the split in force."""
    split = default_split(work=work)
    if torch_threads is not None:
        split = replace(split, torch_threads=torch_threads)
    torch.set_num_threads(split.torch_threads)
    return split


# -- clips to model input -----------------------------------------------------------------


def model_input(frames: Sequence[torch.Tensor], device: torch.device | str, dtype: torch.dtype | None = None,
                mean: Sequence[float] = KINETICS_MEAN, std: Sequence[float] = KINETICS_STD,
                channels_last: bool = False) -> torch.Tensor:
    """A batch ``(b, C, T, H, W)`` on ``device`` from clips' frames ``(C, T, H, W)``:
    uint8 frames are normalized there (``mean``/``std`` after scaling to [0, 1]); float
    frames are taken as model-ready. ``dtype``: the model's (default float32)."""
    batch = frames[0][None] if len(frames) == 1 else torch.stack(list(frames))  # (b, C, T, H, W), a view for one clip
    batch = batch.to(device, non_blocking=True)
    if batch.dtype == torch.uint8:
        batch = scale_and_normalize(batch, mean, std)
    batch = batch.to(dtype or torch.float32)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last_3d)
    return batch


_END = object()


class DeviceClips:
    """One stream's clips with their pixels on ``device``.

    On CUDA, :meth:`prefetch` (called once the model has been handed the current clip,
    while the GPU computes) takes the next clip from the reader, copies its pixels into
    pinned host memory and starts their transfer on a side stream, so the copy overlaps
    the compute; the clip handed out next waits for its copy on the current stream. On
    CPU, clips pass through unchanged. ``damage`` is the reader's (see ClipStream)."""

    def __init__(self, clips: Iterator, device: torch.device | str):
        self._clips = clips
        self._device = torch.device(device)
        self._cuda = self._device.type == "cuda"
        self._side = torch.cuda.Stream(self._device) if self._cuda else None
        self._staged = None  # (clip, copy event), _END, or the reader's exception

    def __iter__(self) -> "DeviceClips":
        return self

    def __next__(self):
        if not self._cuda:
            return next(self._clips)
        if self._staged is None:
            self.prefetch()
        staged, self._staged = self._staged, None
        if staged is _END:
            self._staged = _END
            raise StopIteration
        if isinstance(staged, BaseException):
            raise staged
        clip, copied = staged
        current = torch.cuda.current_stream(self._device)
        current.wait_event(copied)
        clip.frames.record_stream(current)  # allocated on the side stream, used on this one
        return clip

    def prefetch(self) -> None:
        """Start the next clip's transfer (CUDA; nothing on CPU or when one is staged)."""
        if not self._cuda or self._staged is not None:
            return
        try:
            clip = next(self._clips)
        except StopIteration:
            self._staged = _END
            return
        except Exception as err:  # a reader error: raised when that clip is asked for
            self._staged = err
            return
        with torch.cuda.stream(self._side):
            pixels = clip.frames.pin_memory().to(self._device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self._side)
        self._staged = (replace(clip, frames=pixels), copied)

    def close(self) -> None:
        close = getattr(self._clips, "close", None)
        if close is not None:
            close()

    @property
    def damage(self):
        return getattr(self._clips, "damage", None)


# -- model preparation --------------------------------------------------------------------


def prepare_model(model: torch.nn.Module, compile: bool = False, channels_last: bool = False,
                  log: Callable[[str], None] | None = None) -> torch.nn.Module:
    """``model`` (changed in place) with its 3-D convolutions' weights in the
    channels-last-3d layout and/or its forward compiled by ``torch.compile``. A compile
    failure (compiling is lazy: it shows on the first call) logs one line and the model
    runs eagerly from then on, with the same call."""
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    if compile:
        model.forward = _compiled_or_eager(model.forward, log or (lambda message: None))
    return model


def _compiled_or_eager(forward: Callable, log: Callable[[str], None]) -> Callable:
    """``forward`` compiled, run eagerly from the first failure on. Python warnings raised
    while compiling are kept quiet (see :func:`quiet_compile_logs` for torch's log)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = torch.compile(forward)
    except Exception as err:  # e.g. an unsupported Python
        log(f"torch.compile is unavailable ({_one_line(err)}); running eagerly")
        return forward
    failed, first = False, True

    def run(*args, **kwargs):
        nonlocal failed, first
        if not failed:
            try:
                if not first:
                    return compiled(*args, **kwargs)
                with warnings.catch_warnings():  # the first call compiles
                    warnings.simplefilter("ignore")
                    out = compiled(*args, **kwargs)
                first = False
                return out
            except Exception as err:
                failed = True
                log(f"torch.compile failed ({_one_line(err)}); running eagerly")
        return forward(*args, **kwargs)

    return run


def quiet_compile_logs() -> None:
    """Keep torch.compile's own log (graph-break warnings) off: for entry points, so that
    ``--compile`` prints one line at most (it changes a process-wide logger)."""
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text[:200]}"
