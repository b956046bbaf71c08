"""Parameters and GFLOPs per clip at steady state (memory full), fvcore conventions.

Counting uses ``torch.utils.flop_counter.FlopCounterMode`` on the ``meta`` device (no
memory, no arithmetic: a full-size model counts in about a second) and reports what
fvcore's ``FlopCountAnalysis`` reports for the released code (as in PySlowFast's
``get_model_stats``):

- one multiply-add = one FLOP (PyTorch's counter counts two: its totals are halved);
- counted ops: matmul / linear / bmm (attention, position terms), fused attention
  kernels as their two matmuls, convolutions, and LayerNorm at fvcore's estimate of 5 FLOPs per element; not counted: softmax, GELU,
  element-wise adds, pooling by max.

Steady state: every stream has seen ``cache_len`` clips, so every memory entry is read.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from longvid.memvit import MeMViT, get_config, set_attention
from longvid.memvit.attention import MultiScaleAttention

_LAYER_NORM_FLOPS_PER_ELEMENT = 5  # fvcore's norm_flop_counter estimate (affine)


@dataclass(frozen=True)
class Cost:
    """One model's size and compute per clip."""

    preset: str
    params: int
    gflops: float
    clip_frames: int
    size: int
    memory_len: int
    sampler: str | None
    memory_blocks: tuple[int, ...]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def count_gflops(model: MeMViT, clip_frames: int, size: int, steady_state: bool = True) -> float:
    """GFLOPs (fvcore convention) of one batch-1 clip through ``model`` (any device, meta is fastest)."""
    device = next(model.parameters()).device
    clip = torch.zeros(1, model.config.in_chans, clip_frames, size, size, device=device)
    state = model.init_state(1, device=device, clip_size=(clip_frames, size, size))
    if steady_state and model.memory_spec is not None:
        state = dataclasses.replace(state, is_first=torch.zeros_like(state.is_first), num_seen=torch.full_like(state.num_seen, model.memory_spec.cache_len))
    mapping = {
        torch.ops.aten.native_layer_norm: _native_layer_norm_flop,
        # PyTorch's table lacks the CPU flash kernel; count it as its two matmuls
        # (what fvcore counts for the released code's explicit q @ k^T and attn @ v).
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flop,
    }
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    # Counted on the explicit attention: the model's q @ k^T and attn @ v (the fused paths
    # widen q/k by the folded position columns, a kernel detail, not the model's cost).
    impls = {m: m.impl for m in model.modules() if isinstance(m, MultiScaleAttention)}
    set_attention(model, "explicit")
    try:
        with counter, torch.no_grad():
            model.eval()(clip, state)
    finally:
        for module, impl in impls.items():
            module.impl = impl
    return counter.get_total_flops() / 2 / 1e9


def _native_layer_norm_flop(input_shape, normalized_shape=None, *args, out_shape=None, **kwargs) -> int:
    return 2 * _LAYER_NORM_FLOPS_PER_ELEMENT * math.prod(input_shape)


def _sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def model_cost(preset: str, clip_frames: int | None = None, size: int | None = None, memory_len: int | None = None, sampler: str | None = None, memory_blocks: tuple[int, ...] | None = None, num_classes: int | None = None) -> Cost:
    """Params and steady-state GFLOPs of a preset, with optional overrides."""
    overrides = {}
    if clip_frames is not None:
        overrides["num_frames"] = clip_frames
    if size is not None:
        overrides["crop_size"] = size
    if memory_len is not None:
        overrides["memory_len"] = memory_len
    if sampler is not None:
        overrides["sampler"] = sampler
    if memory_blocks is not None:
        overrides["memory_blocks"] = tuple(memory_blocks)
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    config = get_config(preset, **overrides)
    with torch.device("meta"):
        model = MeMViT(config)
    params = sum(p.numel() for p in model.parameters())
    gflops = count_gflops(model, config.num_frames, config.crop_size)
    return Cost(
        preset=preset,
        params=params,
        gflops=gflops,
        clip_frames=config.num_frames,
        size=config.crop_size,
        memory_len=config.memory_len,
        sampler=config.sampler if config.memory_len else None,
        memory_blocks=config.reading_blocks,
    )


def gflops_per_clip(model: torch.nn.Module) -> float:
    """Steady-state GFLOPs of one batch-1 clip at the model's configured clip size."""
    cfg = model.config
    return count_gflops(model, cfg.num_frames, cfg.crop_size)
