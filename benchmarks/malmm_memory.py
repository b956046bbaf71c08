"""Peak memory of an online MA-LMM stream: 1,000 frames vs 100 frames (tiny model).

The memory banks are compressed to L slots after every frame, so the peak memory of a
stream must not grow with its length. On CPU the peak is measured exactly as the
largest total size of live tensor storages allocated during the stream (a
TorchDispatchMode that tracks every op's outputs until they are freed); on CUDA it is
``torch.cuda.max_memory_allocated`` minus the memory held before the stream.

    python benchmarks/malmm_memory.py                  # malmm_tiny, malmm_tiny_nsa
    python benchmarks/malmm_memory.py --baseline       # also the no-memory InstructBLIP baseline
"""

from __future__ import annotations

import argparse
import sys
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's longvid
from longvid.malmm import MALMM, get_config  # noqa: E402


class LiveTensorBytes(TorchDispatchMode):
    """Tracks the total bytes of live tensor storages created inside the mode, and its peak.

    Storages of ``existing`` tensors (parameters: views of them are op outputs too) are ignored.
    """

    def __init__(self, existing=()):
        super().__init__()
        self.ignore = {id(t.untyped_storage()) for t in existing}
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._track(value.untyped_storage())
        return out

    def _track(self, storage) -> None:
        key = id(storage)
        if key in self.live or key in self.ignore or storage.nbytes() == 0:
            return
        self.live[key] = storage.nbytes()
        self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key)


@torch.no_grad()
def stream_peak_bytes(model: MALMM, num_frames: int, tokens_per_frame: int, device: str) -> tuple[int, int, float]:
    """Feed ``num_frames`` random frames one at a time; returns (peak bytes, final state bytes, seconds)."""
    width = model.config.qformer.encoder_width
    text_ids = torch.randint(1, 100, (1, 12), device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    start = time.perf_counter()
    if device == "cpu":
        tracker = LiveTensorBytes([*model.parameters(), *model.buffers(), text_ids])
        with tracker:
            state = model.init_state_tokens(text_ids)
            for _ in range(num_frames):
                frame = torch.randn(1, 1, tokens_per_frame, width, generator=generator, device=device)
                _, state = model.step_tokens(frame, state)
            state_bytes = tracker.current
        peak = tracker.peak
    else:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        state = model.init_state_tokens(text_ids)
        for _ in range(num_frames):
            frame = torch.randn(1, 1, tokens_per_frame, width, generator=generator, device=device)
            _, state = model.step_tokens(frame, state)
        torch.cuda.synchronize()
        peak, state_bytes = torch.cuda.max_memory_allocated() - base, torch.cuda.memory_allocated() - base
    return peak, state_bytes, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs=2, default=(100, 1000), metavar=("SHORT", "LONG"))
    parser.add_argument("--tokens", type=int, default=65, help="visual tokens per frame (default 65 = 1 + 8x8 patches)")
    parser.add_argument("--baseline", action="store_true", help="also run the no-memory baseline (its state grows)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.device == "cpu":
        torch.set_num_threads(1)
    presets = ["malmm_tiny", "malmm_tiny_nsa"] + (["instructblip_tiny"] if args.baseline else [])
    short, long = args.frames
    print(f"device {args.device}; peak = largest live tensor memory during one stream (parameters excluded)")
    print(f"{'preset':<18} {'L':>3} {'peak@' + str(short):>12} {'peak@' + str(long):>12} {'ratio':>7} {'state@' + str(long):>12} {'s/frame':>8}")
    for name in presets:
        model = MALMM(get_config(name)).to(args.device).eval()
        peak_short, _, _ = stream_peak_bytes(model, short, args.tokens, args.device)
        peak_long, state_long, seconds = stream_peak_bytes(model, long, args.tokens, args.device)
        L = model.config.qformer.memory_bank_length
        print(
            f"{name:<18} {L:>3} {peak_short / 2**20:>10.3f}Mi {peak_long / 2**20:>10.3f}Mi {peak_long / peak_short:>7.3f}"
            f" {state_long / 2**20:>10.3f}Mi {seconds / long * 1e3:>6.2f}ms"
        )


if __name__ == "__main__":
    main()
