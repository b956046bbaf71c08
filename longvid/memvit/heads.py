"""Task heads for MeMViT: classification, verb/noun, anticipation, AVA boxes.

All heads return raw logits; activations (softmax / sigmoid) belong to the loss or the
caller. Parameter names follow the released PySlowFast layout (``head.projection``,
``box_blocks.i.*``) so official checkpoints load by name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longvid.errors import LongvidError
from longvid.memvit.memory import LayerCache, memory_step
from longvid.memvit.attention import DropPath, LayerMemory, Mlp


class ClassificationHead(nn.Module):
    """Linear softmax classifier on the clip feature: (B, C) -> logits (B, K)."""

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.projection = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(self.dropout(x))


class VerbNounHead(nn.Module):
    """Two linear classifiers (EPIC-Kitchens): (B, C) -> {"verb": (B, Kv), "noun": (B, Kn)}.

    Parameters ``projection.0`` (verb) and ``projection.1`` (noun), as PySlowFast's
    ``NUM_CLASSES_LIST`` head.
    """

    names = ("verb", "noun")

    def __init__(self, dim: int, num_classes: tuple[int, int], dropout: float = 0.0):
        super().__init__()
        if len(num_classes) != 2:
            raise LongvidError(f"the verb/noun head needs num_classes=(verbs, nouns), got {num_classes}")
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.projection = nn.ModuleList(nn.Linear(dim, k) for k in num_classes)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.dropout(x)
        return {name: proj(x) for name, proj in zip(self.names, self.projection)}


class AnticipationHead(nn.Module):
    """Frame-level head for the causal variant (no global cls token).

    (B, T, H, W, C) tokens -> spatial mean -> linear per frame. Returns
    ``{"logits": (B, K), "frame_logits": (B, T, K)}`` where ``logits`` is the last frame's
    (the prediction made at the end of the observed clip); with ``num_classes=(Kv, Kn)``
    the keys are ``verb``/``noun`` and ``frame_verb``/``frame_noun``.
    """

    def __init__(self, dim: int, num_classes: int | tuple[int, int], dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if isinstance(num_classes, int):
            self.names = ("logits",)
            self.projection = nn.Linear(dim, num_classes)
        else:
            self.names = VerbNounHead.names
            self.projection = nn.ModuleList(nn.Linear(dim, k) for k in num_classes)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.dropout(x.mean(dim=(2, 3)))  # (B, T, C)
        projections = [self.projection] if isinstance(self.projection, nn.Linear) else list(self.projection)
        out = {}
        for name, proj in zip(self.names, projections):
            frames = proj(x)  # (B, T, K)
            out[name] = frames[:, -1]
            out["frame_" + name if name != "logits" else "frame_logits"] = frames
        return out


# -- AVA --------------------------------------------------------------------------------


def _bilinear_weights(coords: Tensor, size: int) -> Tensor:
    """Interpolation matrix (P, size) for sample coordinates (P,), detectron2 rules.

    Samples outside [-1, size] read 0; coordinates are clamped to the border otherwise.
    """
    inside = (coords >= -1.0) & (coords <= size)
    c = coords.clamp(min=0)
    low = c.floor().long()
    at_end = low >= size - 1
    low = torch.where(at_end, torch.full_like(low, size - 1), low)
    high = torch.where(at_end, low, low + 1)
    c = torch.where(at_end, low.to(c.dtype), c)
    frac = c - low.to(c.dtype)
    weights = coords.new_zeros(coords.shape[0], size)
    weights.scatter_add_(1, low[:, None], (1 - frac)[:, None])
    weights.scatter_add_(1, high[:, None], frac[:, None])
    return weights * inside[:, None].to(weights.dtype)


def roi_align(features: Tensor, boxes: Tensor, output_size: int, spatial_scale: float, aligned: bool = True) -> Tensor:
    """Pure-torch RoIAlign (detectron2 ``ROIAlign``, ``sampling_ratio=0``: adaptive grid).

    Args:
        features: (B, C, H, W).
        boxes: (N, 5) rows ``[batch_index, x1, y1, x2, y2]`` in input pixels.
    Returns:
        (N, C, output_size, output_size), each bin the mean of ``ceil(roi/bins)``^2
        bilinear samples.
    """
    _, _, height, width = features.shape
    offset = 0.5 if aligned else 0.0
    out = []
    for box in boxes:
        b = int(box[0])
        x1, y1, x2, y2 = (box[1:] * spatial_scale - offset).unbind()
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
        grid_h = max(math.ceil(float(roi_h) / output_size), 0)
        grid_w = max(math.ceil(float(roi_w) / output_size), 0)
        if grid_h == 0 or grid_w == 0:
            out.append(features.new_zeros(features.shape[1], output_size, output_size))
            continue

        def samples(start: Tensor, length: Tensor, grid: int) -> Tensor:  # (output_size * grid,)
            bins = torch.arange(output_size, device=features.device, dtype=features.dtype)
            sub = (torch.arange(grid, device=features.device, dtype=features.dtype) + 0.5) / grid
            return (start + (bins[:, None] + sub[None, :]) * length / output_size).flatten()

        wy = _bilinear_weights(samples(y1, roi_h, grid_h), height)  # (R*gh, H)
        wx = _bilinear_weights(samples(x1, roi_w, grid_w), width)  # (R*gw, W)
        sampled = wy @ features[b] @ wx.t()  # (C, R*gh, R*gw)
        sampled = sampled.unflatten(1, (output_size, grid_h)).unflatten(3, (output_size, grid_w))
        out.append(sampled.mean(dim=(2, 4)))
    if not out:
        return features.new_zeros(0, features.shape[1], output_size, output_size)
    return torch.stack(out)


class BoxAttention(nn.Module):
    """Attention among a clip's person boxes and the boxes of memory clips.

    Tokens are box features (B, P, C) (P = padded box slots); memory entries are the
    un-projected normed box tokens of past clips (no compression). Residual: ``+ q``.
    """

    def __init__(self, dim: int, num_heads: int, drop_qkv: float = 0.0, drop_attn: float = 0.0, drop_proj: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.drop_qkv = nn.Dropout(drop_qkv) if drop_qkv > 0 else nn.Identity()
        self.drop_attn = drop_attn
        self.drop_proj = nn.Dropout(drop_proj) if drop_proj > 0 else nn.Identity()

    def forward(self, x: Tensor, memory: LayerMemory | None = None) -> tuple[Tensor, tuple[LayerCache, LayerCache] | None]:
        b, p, c = x.shape
        heads = self.num_heads
        k_in, v_in, caches, bias = x, x, None, None
        if memory is not None:
            read_k, cache_k = memory_step(memory.keys, x, memory.spec, lambda t: t)
            read_v, cache_v = memory_step(memory.values, x, memory.spec, lambda t: t)
            caches = (cache_k, cache_v)
            k_in, v_in = torch.cat([read_k.flatten(1, 2), x], 1), torch.cat([read_v.flatten(1, 2), x], 1)
            neg = torch.zeros(memory.valid.shape, dtype=x.dtype, device=x.device).masked_fill_(~memory.valid, float("-inf"))
            bias = torch.cat([neg.repeat_interleave(p, dim=1), x.new_zeros(b, p)], 1)[:, None, None, :]  # (B, 1, 1, Nk)

        def split(t: Tensor) -> Tensor:  # (B, N, C) -> (B, heads, N, d)
            return self.drop_qkv(t.view(b, -1, heads, c // heads).transpose(1, 2))

        q, k, v = split(self.q(x)), split(self.k(k_in)), split(self.v(v_in))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.drop_attn if self.training else 0.0)
        out = (out + q).transpose(1, 2).reshape(b, p, c)
        return self.drop_proj(self.proj(out)), caches


class BoxBlock(nn.Module):
    """Transformer block over box tokens: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.3, drop_attn: float = 0.5, drop_qkv: float = 0.3, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = BoxAttention(dim, num_heads, drop_qkv=drop_qkv, drop_attn=drop_attn, drop_proj=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim, drop=drop)

    def forward(self, x: Tensor, memory: LayerMemory | None = None) -> tuple[Tensor, tuple[LayerCache, LayerCache] | None]:
        out, caches = self.attn(self.norm1(x), memory)
        x = x + self.drop_path(out)
        return x + self.drop_path(self.mlp(self.norm2(x))), caches


class AVAHead(nn.Module):
    """Box features for AVA: temporal mean, RoIAlign, spatial max -> (N, C); and the classifier.

    ``pool(features, boxes)`` gives per-box features; ``forward`` the logits (N, K)
    (sigmoid per class for multi-label AVA). The box blocks run between the two, on the
    model (``box_blocks``), as released.
    """

    def __init__(self, dim: int, num_classes: int, resolution: int = 7, spatial_scale: float = 1 / 32, dropout: float = 0.0, aligned: bool = True):
        super().__init__()
        self.resolution = resolution
        self.spatial_scale = spatial_scale
        self.aligned = aligned
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.projection = nn.Linear(dim, num_classes)

    def pool(self, features: Tensor, boxes: Tensor) -> Tensor:
        """features (B, C, T, H, W), boxes (N, 5) -> (N, C)."""
        pooled = roi_align(features.mean(dim=2), boxes, self.resolution, self.spatial_scale, self.aligned)
        return pooled.amax(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(self.dropout(x))


def pad_boxes(features: Tensor, batch_index: Tensor, batch_size: int, slots: int) -> tuple[Tensor, Tensor]:
    """Scatter (N, C) box features into (B, slots, C) zeros, in order per clip.

    Returns the padded tensor and each box's flat slot index (N,) for ``unpad``.
    """
    counts = torch.bincount(batch_index, minlength=batch_size)
    if counts.numel() and int(counts.max()) > slots:
        raise LongvidError(f"a clip has {int(counts.max())} boxes; the model takes at most {slots}")
    order = torch.argsort(batch_index, stable=True)
    rank = torch.empty_like(order)
    starts = torch.cumsum(counts, 0) - counts
    rank[order] = torch.arange(order.numel(), device=order.device) - starts[batch_index[order]]
    flat = batch_index * slots + rank  # (N,)
    padded = features.new_zeros(batch_size * slots, features.shape[1])
    padded = padded.index_copy(0, flat, features)
    return padded.view(batch_size, slots, -1), flat
