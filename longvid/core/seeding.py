"""Random seeds: :func:`seed_everything` for entry points (commands, benchmarks, scripts), and
:func:`seeded` for library code that draws random numbers from a seed without touching the
caller's random state (random weights of a new model, dropout of a training run)."""

from __future__ import annotations

import contextlib
import random

import torch


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's global generators (all devices)."""
    random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int, isolated: bool = True):
    """Draw from torch's global RNG seeded with ``seed`` inside the block.

    ``isolated``: in a fork of the RNG; the CPU generator and the CUDA devices in use (those
    initialized when the block starts, seeded too) are restored after, so the caller's draws go
    on as if the block had not run. Else the global RNG (CPU and all devices) is seeded and left
    so (what the tiny models' savers do: the benchmarks' recorded figures depend on it).
    """
    if not isolated:
        torch.manual_seed(seed)
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if devices:
            torch.cuda.manual_seed_all(seed)
        yield
