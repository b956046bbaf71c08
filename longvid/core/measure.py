"""Cost measurements shared by ``longvid bench`` and ``longvid bench scaling``.

Peak memory is counted tensor by tensor (:class:`PeakMemory`:
parameters, gradients, optimizer state, memory state and activations alive at the
same time), so it is exact on a CPU and independent of what else the process holds.
Streams run at steady state: ``reach + 1`` clips, so every memory entry is filled.
"""

from __future__ import annotations

import copy
import time
import weakref

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary



class PeakMemory(TorchDispatchMode):
    """Counts the bytes of every tensor storage alive while the mode is on (plus the
    tensors given to :meth:`track`) and keeps the peak. Storages are found through each
    op's outputs and released through weak references, so views are not counted twice."""

    def __init__(self):
        super().__init__()
        self.live = WeakIdKeyDictionary()
        self.current = self.peak = 0

    def track(self, tensors) -> None:
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                self._add(tensor.untyped_storage())

    def _add(self, storage) -> None:
        if storage in self.live:
            return
        size = storage.nbytes()
        self.live[storage] = size
        self.current += size
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._release, size)

    def _release(self, size: int) -> None:
        self.current -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.track(tree_flatten(out)[0])
        return out


def peak_mb(run, *modules: nn.Module) -> float:
    """Peak MB of the tensors alive while ``run()`` runs, the ``modules``' parameters and buffers included."""
    tracker = PeakMemory()
    tracker.track([t for m in modules for t in list(m.parameters()) + list(m.buffers())])
    with tracker:
        run()
    return tracker.peak / 2**20


def stream_clips(model: nn.Module) -> int:
    """Clips to play so the model's memory is full: ``cache_len + 1`` (1 without memory)."""
    spec = getattr(model, "memory_spec", None)
    return 1 if spec is None else spec.cache_len + 1


def inference_peak_mb(model: nn.Module, clip: torch.Tensor) -> float:
    """Peak MB of streaming ``clip`` (B, C, T, H, W) until the memory is full (no_grad)."""
    model.eval()

    def run():
        with torch.no_grad():
            state = model.init_state(clip.shape[0])
            for _ in range(stream_clips(model)):
                _, state = model(clip, state)

    return peak_mb(run, model)


def train_peak_mb(model: nn.Module, clip: torch.Tensor, num_classes: int) -> float:
    """Peak MB of one AdamW training step on ``clip`` with full memory (params, grads,
    optimizer state, memory and activations). The step runs on a copy: ``model`` keeps its
    weights (a benchmark saves what it evaluated)."""
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    labels = torch.zeros(clip.shape[0], dtype=torch.long)

    def run():
        with torch.no_grad():
            state = model.init_state(clip.shape[0])
            for _ in range(stream_clips(model) - 1):
                _, state = model(clip, state)
        logits, _ = model(clip, state)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    peak = peak_mb(run, model)
    model.zero_grad(set_to_none=True)
    return peak


def inference_seconds(model: nn.Module, clip: torch.Tensor, repeats: int = 3) -> float:
    """Median seconds per clip of streaming ``clip`` with full memory (no_grad)."""
    model.eval()
    times = []
    with torch.no_grad():
        state = model.init_state(clip.shape[0])
        for _ in range(stream_clips(model) - 1):
            _, state = model(clip, state)
        for _ in range(repeats + 1):
            started = time.perf_counter()
            _, state = model(clip, state)
            times.append(time.perf_counter() - started)
    return sorted(times[1:])[len(times[1:]) // 2]


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def stream_state_bytes(model: nn.Module, clip: torch.Tensor, clips_per_input: int = 1) -> int:
    """Bytes one stream carries between steps at steady state: the model's state once its
    memory is full (``clip`` (1, C, T, H, W)), plus, for a model whose input spans
    ``clips_per_input`` clips, the ``clips_per_input - 1`` previous clips it must keep
    (``clip``'s last ``1 / clips_per_input`` of frames each, float32 as the model reads them)."""
    model.eval()
    with torch.no_grad():
        state = model.init_state(1)
        for _ in range(stream_clips(model)):
            _, state = model(clip, state)
    buffered = (clips_per_input - 1) * clip.numel() // clips_per_input * clip.element_size()
    return state.nbytes + buffered
