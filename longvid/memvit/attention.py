"""MViTv2 building blocks with MeMViT memory attention.

Pool-first multi-head pooling attention (the released MeMViT / MViTv2 form): per block,
``x_norm = norm1(x)`` is split into heads and pooled into q, k, v by depthwise Conv3d
(kernel 3x3x3, weights shared across heads) + LayerNorm *before* the q/k/v Linear layers;
the cls token bypasses pooling and is put back before the norm. Residual pooling adds the
pooled q to the attention output (not to the cls row). Decomposed relative positions
(``rel_pos_t/h/w``) are added to the logits of the non-cls queries and keys, with
scaled distances when the q and k grids differ. A stage transition pools q (stride
1x2x2), max-pools the residual and projects it to the new width.

Memory (``longvid.memvit.memory``): an attention layer given a ``LayerMemory`` attends to
``[memory entries ; current]`` keys/values, with its own position tables
(``rel_pos_mem_t/h/w``, temporal distances scaled by the compression stride) and with
masked entries set to ``-inf`` before the softmax. By default no (queries x keys) bias is
built: the position terms are folded into q/k (extra columns) and the memory mask is a float
mask broadcast over queries, through ``F.scaled_dot_product_attention`` or matmuls
(:func:`set_attention`; ``explicit`` materializes the full bias, the reference).

Tensor layout: tokens ``(B, N, C)`` with ``N = n_cls + T*H*W`` in (t, h, w) order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longvid.errors import LongvidError
from longvid.memvit.memory import KVMemorySpec, LayerCache, compress_tokens, memory_step

Size3 = tuple[int, int, int]
ATTENTION_IMPLS = ("auto", "sdpa", "matmul", "explicit")


def set_attention(model: nn.Module, impl: str) -> nn.Module:
    """Choose how every MeMViT attention layer of ``model`` computes attention (in place).

    ``"sdpa"``: one ``F.scaled_dot_product_attention`` call, the position terms folded into
    q/k and the memory mask as a float mask (no (Nq, Nk) bias tensor); ``"matmul"``: the
    same folded q/k through matmul, softmax, matmul; ``"explicit"``: the logits and the
    full position bias materialized (the reference). ``"auto"`` (default): ``matmul`` for
    bf16/fp16 on CPU (the fused CPU kernel computes those in fp32 without AMX: measured
    1.7x slower there), else ``sdpa``. All give the same values to float rounding.
    Returns ``model``.
    """
    if impl not in ATTENTION_IMPLS:
        raise LongvidError(f"unknown attention implementation {impl!r}: choose from {', '.join(ATTENTION_IMPLS)}")
    for module in model.modules():
        if isinstance(module, MultiScaleAttention):
            module.impl = impl
    return model


def round_width(width: float, multiplier: float, min_width: int = 1, divisor: int = 1) -> int:
    """PySlowFast's width rounding: ``width * multiplier`` to a multiple of ``divisor``."""
    width *= multiplier
    min_width = min_width or divisor
    width_out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if width_out < 0.9 * width:
        width_out += divisor
    return int(width_out)


def conv_out_size(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]) -> Size3:
    return tuple((s + 2 * p - k) // st + 1 for s, k, st, p in zip(size, kernel, stride, padding))


# -- relative positions ----------------------------------------------------------------


def resize_rel_table(table: Tensor, length: int) -> Tensor:
    """Linearly resize a (L, dim) relative-position table to ``length`` rows."""
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.t()[None], size=length, mode="linear")  # (1, dim, length)
    return resized[0].t()


def spatial_rel_pos(table: Tensor, q_size: int, k_size: int) -> Tensor:
    """Table rows for every (query, key) pair along one spatial axis.

    Distances are scaled to the finer grid when q and k sizes differ (MViTv2):
    ``i * max(k/q, 1) - j * max(q/k, 1) + (k - 1) * max(q/k, 1)``, truncated.
    Returns (q_size, k_size, dim).
    """
    table = resize_rel_table(table, 2 * max(q_size, k_size) - 1)
    q_ratio = max(k_size / q_size, 1.0)
    k_ratio = max(q_size / k_size, 1.0)
    dist = torch.arange(q_size)[:, None] * q_ratio - torch.arange(k_size)[None, :] * k_ratio
    dist = dist + (k_size - 1) * k_ratio
    return table[dist.long().to(table.device)]


def temporal_rel_pos(table: Tensor, q_t: int, k_t: int, k_stride: int = 1) -> Tensor:
    """Table rows ``i + (k_t - 1 - j) * k_stride`` for query frame i and key frame j.

    ``k_stride`` is the compression stride for memory keys (laid end to end, oldest first).
    Returns (q_t, k_t, dim).
    """
    dist = torch.arange(q_t)[:, None] + (k_t - 1 - torch.arange(k_t)[None, :]) * k_stride
    if int(dist.max()) >= table.shape[0]:
        raise LongvidError(
            f"temporal position table has {table.shape[0]} rows but needs {int(dist.max()) + 1}: "
            "the clip has more frames (or the memory more clips) than the model was built for"
        )
    return table[dist.to(table.device)]


def rel_pos_terms(q: Tensor, rt: Tensor, rh: Tensor, rw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Decomposed position logits.

    Args:
        q: (B, heads, qt, qh, qw, d) non-cls queries.
        rt / rh / rw: (qt, kt, d) / (qh, kh, d) / (qw, kw, d) gathered tables.
    Returns:
        (B, heads, qt, qh, qw, kt), (..., kh), (..., kw).
    """
    return (
        torch.einsum("bntyxd,tkd->bntyxk", q, rt),
        torch.einsum("bntyxd,ykd->bntyxk", q, rh),
        torch.einsum("bntyxd,xkd->bntyxk", q, rw),
    )


# -- pooling ---------------------------------------------------------------------------


def tokens_to_grid(tokens: Tensor, thw: Size3) -> Tensor:
    """(B, T*H*W, C) -> (B, C, T, H, W) as a channels-last view (no copy)."""
    b, _, c = tokens.shape
    return tokens.reshape(b, *thw, c).permute(0, 4, 1, 2, 3)


def grid_to_tokens(grid: Tensor) -> Tensor:
    """(B, C, T, H, W) -> (B, T*H*W, C); a view for channels-last grids."""
    return grid.permute(0, 2, 3, 4, 1).flatten(1, 3)


class _Fill(NamedTuple):
    """Bias piece: ``value`` ((B,) or scalar) over ``width`` key columns (cls keys)."""

    value: Tensor
    width: int


class _Grid(NamedTuple):
    """Bias piece over a grid of keys: ``t[.., kt] + h[.., kh] + w[.., kw]``, each (B, heads, qt, qh, qw, k)."""

    t: Tensor
    h: Tensor
    w: Tensor

    @property
    def width(self) -> int:
        return self.t.shape[-1] * self.h.shape[-1] * self.w.shape[-1]


def _assemble_bias(pieces: list[_Fill | _Grid], b: int, heads: int, q_thw: Size3) -> Tensor:
    """Concatenate bias pieces along keys into (B, heads, Nq_sp, Nk).

    With autograd: ``torch.cat``; without: each piece is written once into a
    preallocated buffer (a single pass over the bias).
    """
    qt, qh, qw = q_thw
    nq_sp = qt * qh * qw

    def fill(p: _Fill) -> Tensor:
        return p.value.reshape(-1, 1, 1, 1).expand(b, heads, nq_sp, p.width)

    if torch.is_grad_enabled():
        parts = []
        for p in pieces:
            if isinstance(p, _Fill):
                parts.append(fill(p))
            else:
                th = p.t[..., :, None] + p.h[..., None, :]  # (B, heads, qt, qh, qw, kt, kh)
                parts.append((th[..., None] + p.w[..., None, None, :]).reshape(b, heads, nq_sp, -1))
        return torch.cat(parts, dim=-1)
    ref = next(p.t for p in pieces if isinstance(p, _Grid))
    out = ref.new_empty(b, heads, nq_sp, sum(p.width for p in pieces))
    col = 0
    for p in pieces:
        view = out[..., col : col + p.width]
        if isinstance(p, _Fill):
            view.copy_(fill(p))
        else:
            th = p.t[..., :, None] + p.h[..., None, :]
            grid = view.view(b, heads, qt, qh, qw, p.t.shape[-1], p.h.shape[-1], p.w.shape[-1])
            torch.add(th[..., None], p.w[..., None, None, :], out=grid)
        col += p.width
    return out


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dim_out: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim_out)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample during training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class PatchEmbed(nn.Module):
    """Conv3d patchify: (B, C, T, H, W) -> tokens (B, T'*H'*W', dim) and grid (T', H', W').

    ``causal``: the temporal padding is all on the past side, so token frame i sees input
    frames up to ``i * stride_t`` only.
    """

    def __init__(self, in_chans: int, dim: int, kernel: Size3, stride: Size3, padding: Size3, causal: bool = False):
        super().__init__()
        self.causal_pad = kernel[0] - 1 if causal else 0
        padding = (0, padding[1], padding[2]) if causal else tuple(padding)
        self.proj = nn.Conv3d(in_chans, dim, kernel, stride=stride, padding=padding)

    def forward(self, x: Tensor) -> tuple[Tensor, Size3]:
        if self.causal_pad:
            x = F.pad(x, (0, 0, 0, 0, self.causal_pad, 0))
        x = self.proj(x)  # (B, dim, T', H', W')
        return x.flatten(2).transpose(1, 2), tuple(x.shape[2:])


# -- attention -------------------------------------------------------------------------


@dataclass
class LayerMemory:
    """What one memory-reading attention layer gets for a step.

    keys / values: the layer's caches (see ``longvid.memvit.memory.LayerCache``).
    valid: (B, M) bool, entries (oldest first) each stream may attend to.
    """

    keys: LayerCache
    values: LayerCache
    valid: Tensor
    spec: KVMemorySpec


class MultiScaleAttention(nn.Module):
    """Pool-first multi-head pooling attention with optional key/value memory.

    Args:
        dim / dim_out: input / output width; heads split ``dim`` for pooling and
            ``dim_out`` for attention (head_dim = dim_out // num_heads).
        input_size: (T, H, W) token grid the block receives at the model's clip size
            (sizes the position tables).
        memory_len: M; > 0 creates the memory parameters (compression fK/fV and
            ``rel_pos_mem_*`` tables) whether or not the layer reads memory.
        causal: causal pooling convs (stride_t must be 1), future current-clip keys
            and the current cls key masked.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        input_size: Size3,
        kernel_q: Size3 = (3, 3, 3),
        kernel_kv: Size3 = (3, 3, 3),
        stride_q: Size3 = (1, 1, 1),
        stride_kv: Size3 = (1, 1, 1),
        qkv_bias: bool = True,
        has_cls: bool = True,
        rel_pos_spatial: bool = True,
        rel_pos_temporal: bool = True,
        memory_len: int = 0,
        compress_kernel: Size3 = (7, 3, 3),
        compress_stride: Size3 = (4, 2, 2),
        causal: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads or dim_out % num_heads:
            raise LongvidError(f"widths {dim}->{dim_out} are not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.dim_out = dim_out
        self.n_cls = 1 if has_cls else 0
        self.causal = causal
        self.compress_stride = tuple(compress_stride)
        self.compress_kernel = tuple(compress_kernel)
        self.attn_drop = attn_drop
        self.impl = "auto"  # see set_attention
        head_dim = dim_out // num_heads

        if rel_pos_spatial:
            if input_size[1] != input_size[2]:
                raise LongvidError(f"relative positions need a square token grid, got {input_size[1]}x{input_size[2]}")
            q_size = input_size[1] // stride_q[1]
            kv_size = input_size[1] // stride_kv[1]
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * max(q_size, kv_size) - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * max(q_size, kv_size) - 1, head_dim))
            if memory_len:
                mem_size = kv_size // compress_stride[1]
                self.rel_pos_mem_h = nn.Parameter(torch.zeros(2 * max(q_size, mem_size) - 1, head_dim))
                self.rel_pos_mem_w = nn.Parameter(torch.zeros(2 * max(q_size, mem_size) - 1, head_dim))
        if rel_pos_temporal:
            self.rel_pos_t = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            if memory_len:
                # 2T + (ATTN_MAX_LEN - 2) T - 1 rows with ATTN_MAX_LEN = M + 1, as released; more
                # when the compressed frames span more than the clip (short clips, coarse stride),
                # so every distance i + (M T_c - 1 - j) s of temporal_rel_pos has a row.
                kv_t = input_size[0] // stride_kv[0]
                compressed_t = conv_out_size((kv_t,), compress_kernel[:1], compress_stride[:1], (compress_kernel[0] // 2,))[0]
                needed = input_size[0] // stride_q[0] + (memory_len * compressed_t - 1) * compress_stride[0]
                self.rel_pos_mem_t = nn.Parameter(torch.zeros(max((memory_len + 1) * input_size[0] - 1, needed), head_dim))
        self.rel_pos_spatial = rel_pos_spatial
        self.rel_pos_temporal = rel_pos_temporal

        self.q = nn.Linear(dim, dim_out, bias=qkv_bias)
        self.k = nn.Linear(dim, dim_out, bias=qkv_bias)
        self.v = nn.Linear(dim, dim_out, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()

        dim_conv = dim // num_heads
        self.shift = kernel_q[0] - 1 if causal else 0
        if causal and (stride_q[0] != 1 or stride_kv[0] != 1 or kernel_q[0] != kernel_kv[0]):
            raise LongvidError("the causal variant needs temporal pooling stride 1")

        def pool(kernel: Size3, stride: Size3) -> nn.Conv3d:
            pad_t = kernel[0] - 1 if causal else kernel[0] // 2
            padding = (pad_t, kernel[1] // 2, kernel[2] // 2)
            return nn.Conv3d(dim_conv, dim_conv, kernel, stride=stride, padding=padding, groups=dim_conv, bias=False)

        self.pool_q = pool(kernel_q, stride_q)
        self.norm_q = nn.LayerNorm(dim_conv, eps=1e-6)
        self.pool_k = pool(kernel_kv, stride_kv)
        self.norm_k = nn.LayerNorm(dim_conv, eps=1e-6)
        self.pool_v = pool(kernel_kv, stride_kv)
        self.norm_v = nn.LayerNorm(dim_conv, eps=1e-6)

        if memory_len:
            padding = tuple(k // 2 for k in compress_kernel)
            self.compress_k = nn.Conv3d(dim, dim, compress_kernel, stride=compress_stride, padding=padding, groups=dim, bias=False)
            self.compress_v = nn.Conv3d(dim, dim, compress_kernel, stride=compress_stride, padding=padding, groups=dim, bias=False)
            self.norm_compress_k = nn.LayerNorm(dim, eps=1e-6)
            self.norm_compress_v = nn.LayerNorm(dim, eps=1e-6)

    def _pool(self, grid: Tensor, cls: Tensor, conv: nn.Conv3d, norm: nn.LayerNorm) -> tuple[Tensor, Tensor, Size3]:
        """Pool-first q/k/v for all heads at once.

        The per-head depthwise conv (weights shared across heads) is one depthwise conv
        over all ``dim`` channels with the weight repeated per head; LayerNorm is per head.
        Args: grid (B, dim, T, H, W) channels-last, cls (B, n_cls, dim).
        Returns: normed cls (B, n_cls, dim), normed grid tokens (B, N', dim), grid (T', H', W').
        """
        heads = self.num_heads
        weight = conv.weight.repeat(heads, 1, 1, 1, 1) if heads > 1 else conv.weight
        pooled = F.conv3d(grid, weight, stride=conv.stride, padding=conv.padding, groups=grid.shape[1])
        if self.shift:
            pooled = pooled[:, :, : -self.shift]  # causal: drop outputs that saw the future-side padding
        thw = tuple(pooled.shape[2:])

        def head_norm(t: Tensor) -> Tensor:  # LayerNorm over each head's channels
            return norm(t.unflatten(-1, (heads, -1))).flatten(-2)

        return head_norm(cls), head_norm(grid_to_tokens(pooled)), thw

    def compressed_size(self, kv_thw: Size3) -> Size3:
        """Token grid of a compressed memory entry."""
        padding = tuple(k // 2 for k in self.compress_kernel)
        return conv_out_size(kv_thw, self.compress_kernel, self.compress_stride, padding)

    def forward(self, x: Tensor, thw: Size3, memory: LayerMemory | None = None) -> tuple[Tensor, Size3, tuple[LayerCache, LayerCache] | None]:
        """Args:
            x: (B, N, dim) normed tokens on grid ``thw``.
            memory: this step's memory for the layer, or None.
        Returns:
            (B, Nq, dim_out), the q grid, and the new (key, value) caches (None without memory).
        """
        b, _, dim = x.shape
        n, heads, d = self.n_cls, self.num_heads, self.dim_out // self.num_heads
        cls, grid = x[:, :n], tokens_to_grid(x[:, n:], thw)
        q_cls, q_grid, q_thw = self._pool(grid, cls, self.pool_q, self.norm_q)
        k_cls, k_grid, k_thw = self._pool(grid, cls, self.pool_k, self.norm_k)
        v_cls, v_grid, _ = self._pool(grid, cls, self.pool_v, self.norm_v)

        def split(t: Tensor) -> Tensor:  # (B, N, dim_out) -> (B, heads, N, d)
            return t.view(b, -1, heads, d).transpose(1, 2)

        q_cls, q_body = split(self.q(q_cls)), split(self.q(q_grid))  # cls row and grid rows kept apart
        k = torch.cat([k_cls, k_grid], dim=1)  # (B, Nk, dim), pooled and un-projected
        v = torch.cat([v_cls, v_grid], dim=1)
        caches, mem_thw, valid = None, None, None
        if memory is not None:
            mem_thw, valid = self.compressed_size(k_thw), memory.valid
            read_k, cache_k = memory_step(memory.keys, k, memory.spec, lambda t: compress_tokens(t, k_thw, self.compress_k, self.norm_compress_k, n)[0])
            read_v, cache_v = memory_step(memory.values, v, memory.spec, lambda t: compress_tokens(t, k_thw, self.compress_v, self.norm_compress_v, n)[0])
            k = torch.cat([read_k.flatten(1, 2), k], dim=1)  # (B, M*Nc + Nk, dim)
            v = torch.cat([read_v.flatten(1, 2), v], dim=1)
            caches = (cache_k, cache_v)
        k, v = split(self.k(k)), split(self.v(v))  # (B, heads, Nk_total, d)
        drop = self.attn_drop if self.training else 0.0
        impl = self.impl
        if impl == "auto":
            impl = "matmul" if q_body.device.type == "cpu" and q_body.dtype in (torch.bfloat16, torch.float16) else "sdpa"
        if impl in ("sdpa", "matmul"):
            out = self._attend_folded(q_cls, q_body, k, v, q_thw, k_thw, mem_thw, valid, drop, fused=impl == "sdpa")
        else:
            out = self._attend_explicit(q_cls, q_body, k, v, q_thw, k_thw, mem_thw, valid, drop)
        return self.proj_drop(self.proj(out)), q_thw, caches

    def _attend_explicit(self, q_cls: Tensor, q_body: Tensor, k: Tensor, v: Tensor, q_thw: Size3, k_thw: Size3,
                         mem_thw: Size3 | None, valid: Tensor | None, drop: float) -> Tensor:
        """Reference path: logits ``q k^T / sqrt(d) + bias`` materialized, softmax, ``@ v``.

        q_cls (B, heads, n, d), q_body (B, heads, Nq_sp, d), k / v (B, heads, Nk, d).
        Returns (B, n + Nq_sp, dim_out) with residual pooling on the grid rows.
        """
        b, n = q_body.shape[0], self.n_cls
        body_bias, cls_bias = self.attention_bias(q_body, q_thw, k_thw, mem_thw, valid)
        scale = q_body.shape[-1] ** -0.5

        def attend(q: Tensor, bias: Tensor | None) -> Tensor:  # (B, heads, rows, d)
            logits = q @ k.transpose(-2, -1) * scale  # (B, heads, rows, Nk)
            if bias is not None:
                logits = logits + bias
            return F.dropout(logits.softmax(-1), drop, training=drop > 0) @ v

        out = attend(q_body, body_bias) + q_body  # residual pooling
        if n:
            out = torch.cat([attend(q_cls, cls_bias), out], dim=2)  # the cls row has no position terms
        return out.transpose(1, 2).reshape(b, -1, self.dim_out)

    def _attend_folded(self, q_cls: Tensor, q_body: Tensor, k: Tensor, v: Tensor, q_thw: Size3, k_thw: Size3,
                       mem_thw: Size3 | None, valid: Tensor | None, drop: float, fused: bool) -> Tensor:
        """Attention over all query rows at once without an (Nq, Nk) bias tensor.

        The decomposed position terms are folded into the dot product: each query gets its
        position logits per key axis as extra columns (``q . table`` rows) and each key a
        one-hot of its (t, h, w) position in those columns (keys pre-scaled by 1/sqrt(d)),
        so ``q' . k' = q . k / sqrt(d) + position terms``, the logits of
        :meth:`_attend_explicit` (cls rows and cls keys get zeros there). The memory mask
        is a float mask (B, 1, 1, Nk) (-inf on invalid entries) broadcast over heads and
        queries; the causal variant adds its (Nq, Nk) future mask.

        ``fused``: one ``F.scaled_dot_product_attention`` call (values zero-padded to the
        widened width, which the fused CPU kernel needs, and the padding cut off); else
        ``softmax(q' k'^T + mask) @ v`` with matmuls (faster for bf16 on CPUs without
        AMX, where the fused kernel computes in fp32).
        Shapes as :meth:`_attend_explicit`. Returns (B, n + Nq_sp, dim_out).
        """
        b, heads, nq_sp, d = q_body.shape
        n = self.n_cls
        num_mem = valid.shape[1] if valid is not None else 0
        key_columns = self._key_position_columns(k_thw, mem_thw, num_mem, q_body)  # (Nk, E)
        if fused and q_body.device.type == "cuda" and (d + key_columns.shape[1]) % 8:  # GPU kernels want widths in 8s
            key_columns = F.pad(key_columns, (0, -(d + key_columns.shape[1]) % 8))
        width = key_columns.shape[1]
        q_aug = q_body.new_empty(b, heads, n + nq_sp, d + width)  # (B, heads, Nq, d + E)
        q_aug[:, :, :n, :d] = q_cls
        q_aug[:, :, :n, d:] = 0
        q_aug[:, :, n:, :d] = q_body
        if width:
            qt, qh, qw = q_thw
            terms = rel_pos_terms(q_body.reshape(b, heads, qt, qh, qw, d), *self._tables(q_thw, k_thw, mem_thw, num_mem, q_body))
            col = d
            for used, term in zip((self.rel_pos_temporal, self.rel_pos_spatial, self.rel_pos_spatial), terms):  # (B, heads, qt, qh, qw, K)
                if used:
                    q_aug[:, :, n:, col : col + term.shape[-1]] = term.flatten(2, 4)
                    col += term.shape[-1]
            q_aug[:, :, n:, col:] = 0  # padding columns (CUDA), if any
        k_aug = torch.cat([k * d**-0.5, key_columns.expand(b, heads, -1, -1)], dim=-1)  # (B, heads, Nk, d + E)
        mask = self._sdpa_mask(valid, q_thw, k_thw, mem_thw, q_body)
        if fused:
            out = F.scaled_dot_product_attention(q_aug, k_aug, F.pad(v, (0, width)), attn_mask=mask, dropout_p=drop, scale=1.0)[..., :d]
        else:
            logits = q_aug @ k_aug.transpose(-2, -1)  # (B, heads, Nq, Nk)
            if mask is not None:
                logits += mask
            if torch.is_grad_enabled():
                weights = logits.softmax(-1)
            else:  # in place: no second (B, heads, Nq, Nk) buffer to allocate and fault in
                weights = torch.softmax(logits, -1, out=logits)
            out = F.dropout(weights, drop, training=drop > 0) @ v
        out = out.transpose(1, 2).clone(memory_format=torch.contiguous_format)  # (B, Nq, heads, d)
        out[:, n:].add_(q_body.transpose(1, 2))  # residual pooling, not on cls
        return out.flatten(2)

    def _key_position_columns(self, k_thw: Size3, mem_thw: Size3 | None, num_mem: int, like: Tensor) -> Tensor:
        """(Nk, E) one-hot positions of the keys ``[entry_0 .. entry_{M-1}, current]`` in the
        columns of :meth:`_tables` (t: memory frames then current; h, w: current then
        memory); zero rows for cls keys; E = 0 without position terms."""
        kt, kh, kw = k_thw
        tc, hc, wc = mem_thw if num_mem else (0, 0, 0)
        n_t, n_h, n_w = num_mem * tc + kt, kh + hc, kw + wc
        axes = [(self.rel_pos_temporal, n_t), (self.rel_pos_spatial, n_h), (self.rel_pos_spatial, n_w)]
        width = sum(size for used, size in axes if used)
        if not width:
            return like.new_zeros(num_mem * (self.n_cls + tc * hc * wc) + self.n_cls + kt * kh * kw, 0)

        def grid_columns(t_cols: Tensor, h_cols: Tensor, w_cols: Tensor) -> Tensor:  # (T,), (H,), (W,) -> (n_cls + T*H*W, E)
            t, h, w = len(t_cols), len(h_cols), len(w_cols)
            per_axis = (
                F.one_hot(t_cols, n_t)[:, None, None, :].expand(t, h, w, n_t),
                F.one_hot(h_cols, n_h)[None, :, None, :].expand(t, h, w, n_h),
                F.one_hot(w_cols, n_w)[None, None, :, :].expand(t, h, w, n_w),
            )
            onehot = torch.cat([cols for (used, _), cols in zip(axes, per_axis) if used], dim=-1).reshape(t * h * w, width)
            return torch.cat([onehot.new_zeros(self.n_cls, width), onehot])

        arange = lambda size, start=0: torch.arange(start, start + size, device=like.device)  # noqa: E731
        pieces = [grid_columns(arange(tc, m * tc), arange(hc, kh), arange(wc, kw)) for m in range(num_mem)]
        pieces.append(grid_columns(arange(kt, num_mem * tc), arange(kh), arange(kw)))
        return torch.cat(pieces).to(like.dtype)

    def _sdpa_mask(self, valid: Tensor | None, q_thw: Size3, k_thw: Size3, mem_thw: Size3 | None, like: Tensor) -> Tensor | None:
        """Float mask for :meth:`_attend_folded`: (B, 1, 1, Nk) memory mask, (B or 1, 1, Nq, Nk)
        with the causal mask, or None (no causal mask and, on CPU, every memory entry valid)."""
        n = self.n_cls
        kt, kh, kw = k_thw
        mask = None
        if valid is not None and (like.device.type != "cpu" or not bool(valid.all())):  # every entry valid: no mask (CPU: no sync to pay)
            tc, hc, wc = mem_thw
            neg = torch.zeros(valid.shape, dtype=like.dtype, device=like.device).masked_fill_(~valid, float("-inf"))  # (B, M)
            mask = torch.cat([neg.repeat_interleave(n + tc * hc * wc, dim=1), neg.new_zeros(valid.shape[0], n + kt * kh * kw)], dim=1)
            mask = mask[:, None, None, :]  # (B, 1, 1, Nk)
        if not self.causal:
            return mask
        qt, qh, qw = q_thw
        nk_cur = n + kt * kh * kw
        future = torch.arange(kt, device=like.device)[None, :] > torch.arange(qt, device=like.device)[:, None]  # (qt, kt)
        grid = future[:, None, None, :, None, None].expand(qt, qh, qw, kt, kh, kw).reshape(qt * qh * qw, kt * kh * kw)
        current = torch.cat([torch.ones(qt * qh * qw, n, dtype=torch.bool, device=like.device), grid], dim=1)  # body rows
        current = torch.cat([torch.cat([torch.ones(n, n, dtype=torch.bool, device=like.device),
                                        torch.zeros(n, nk_cur - n, dtype=torch.bool, device=like.device)], dim=1), current])
        causal = torch.zeros(current.shape, dtype=like.dtype, device=like.device).masked_fill_(current, float("-inf"))  # (Nq, Nk_cur)
        nk_mem = 0 if valid is None else valid.shape[1] * (n + math.prod(mem_thw))
        causal = F.pad(causal, (nk_mem, 0))[None, None]  # (1, 1, Nq, Nk)
        return causal if mask is None else mask + causal

    def attention_bias(self, q: Tensor, q_thw: Size3, k_thw: Size3, mem_thw: Size3 | None, mem_valid: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """Additive logit biases for ``[memory entries ; current]`` keys.

        Keys are laid out as ``[entry_0 (cls, grid), .., entry_{M-1}, current (cls, grid)]``.
        Args:
            q: (B, heads, Nq_sp, d) grid queries (projected, unscaled).
        Returns:
            body: (B, heads, Nq_sp, Nk) for the grid query rows: decomposed position
                terms on grid keys; ``-inf`` on all columns of entries where ``mem_valid``
                (B, M) is False; causal: ``-inf`` on future current frames and the current
                cls key. None when there is nothing to add.
            cls_row: (B, 1, n_cls, Nk) for the cls query: only the masks, or None.
        Without autograd the body is written in place into one buffer.
        """
        has_mem = mem_valid is not None
        if not (self.rel_pos_spatial or self.rel_pos_temporal or has_mem or self.causal):
            return None, None
        b, heads, nq_sp, d = q.shape
        n = self.n_cls
        qt, qh, qw = q_thw
        kt, kh, kw = k_thw
        num_mem = mem_valid.shape[1] if has_mem else 0
        tc, hc, wc = mem_thw if has_mem else (0, 0, 0)
        # Tables for current and memory keys concatenated along keys: one einsum per axis.
        rt, rh, rw = self._tables(q_thw, k_thw, mem_thw, num_mem, q)
        rel_t, rel_h, rel_w = rel_pos_terms(q.reshape(b, heads, qt, qh, qw, d), rt, rh, rw)

        pieces, cls_row = [], []  # bias pieces along the key axis
        if has_mem:
            neg = torch.zeros(mem_valid.shape, dtype=q.dtype, device=q.device).masked_fill_(~mem_valid, float("-inf"))  # (B, M)
            mem_t = rel_t[..., : num_mem * tc].unflatten(-1, (num_mem, tc)) + neg[:, None, None, None, None, :, None]
            for m in range(num_mem):
                if n:
                    pieces.append(_Fill(neg[:, m], n))
                pieces.append(_Grid(mem_t[..., m, :], rel_h[..., kh:], rel_w[..., kw:]))
            cls_row.append(neg.repeat_interleave(n + tc * hc * wc, dim=1))  # (B, M*entry)
        cur_t = rel_t[..., num_mem * tc :]
        cls_value = q.new_full((), float("-inf") if self.causal else 0.0)
        if self.causal:
            future = torch.arange(kt, device=q.device)[None, :] > torch.arange(qt, device=q.device)[:, None]  # (qt, kt)
            cur_t = cur_t + q.new_zeros(qt, kt).masked_fill_(future, float("-inf"))[:, None, None, :]
        if n:
            pieces.append(_Fill(cls_value, n))
        pieces.append(_Grid(cur_t, rel_h[..., :kh], rel_w[..., :kw]))
        body = _assemble_bias(pieces, b, heads, q_thw)
        if not n or not (has_mem or self.causal):
            return body, None
        cls_row += [cls_value.expand(b, n), q.new_zeros(b, kt * kh * kw)]
        return body, torch.cat(cls_row, dim=1)[:, None, None, :].expand(b, 1, n, -1)

    def _tables(self, q_thw: Size3, k_thw: Size3, mem_thw: Size3 | None, num_mem: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Gathered (q, k, d) tables per axis; memory keys appended after current keys.

        Disabled position kinds give zero tables (no logit terms).
        """
        (qt, qh, qw), (kt, kh, kw) = q_thw, k_thw
        d = like.shape[-1]

        def zeros(q_len: int, k_len: int) -> Tensor:
            return like.new_zeros(q_len, k_len, d)

        tc, hc, wc = mem_thw if mem_thw is not None else (0, 0, 0)
        if self.rel_pos_temporal:
            rt = [temporal_rel_pos(self.rel_pos_t, qt, kt)]
            if num_mem:
                rt.insert(0, temporal_rel_pos(self.rel_pos_mem_t, qt, num_mem * tc, self.compress_stride[0]))
            rt = torch.cat(rt, dim=1)
        else:
            rt = zeros(qt, num_mem * tc + kt)
        if self.rel_pos_spatial:
            rh, rw = [spatial_rel_pos(self.rel_pos_h, qh, kh)], [spatial_rel_pos(self.rel_pos_w, qw, kw)]
            if num_mem:
                rh.append(spatial_rel_pos(self.rel_pos_mem_h, qh, hc))
                rw.append(spatial_rel_pos(self.rel_pos_mem_w, qw, wc))
            rh, rw = torch.cat(rh, dim=1), torch.cat(rw, dim=1)
        else:
            rh, rw = zeros(qh, kh + (hc if num_mem else 0)), zeros(qw, kw + (wc if num_mem else 0))
        return rt, rh, rw


class MultiScaleBlock(nn.Module):
    """One MViTv2 block (``dim_mul_in_att``: the attention changes the width).

    ``x_norm = norm1(x)``; residual = ``proj(x_norm)`` if the width changes, max-pooled
    (kernel stride+1) when q is pooled; ``x = residual + attn(x_norm)``;
    ``x = x + mlp(norm2(x))``.
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, input_size: Size3, mlp_ratio: float = 4.0, drop_path: float = 0.0, **attn_kwargs):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, input_size, **attn_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio), dim_out)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)
        stride_q = attn_kwargs.get("stride_q", (1, 1, 1))
        self.n_cls = self.attn.n_cls
        if math.prod(stride_q) > 1:
            kernel = tuple(s + 1 if s > 1 else s for s in stride_q)
            self.pool_skip = nn.MaxPool3d(kernel, stride_q, tuple(k // 2 for k in kernel))
        else:
            self.pool_skip = None

    def forward(self, x: Tensor, thw: Size3, memory: LayerMemory | None = None) -> tuple[Tensor, Size3, tuple[LayerCache, LayerCache] | None]:
        """x (B, N, dim) on grid thw -> (B, N', dim_out) on the pooled grid, new caches."""
        x_norm = self.norm1(x)
        x_block, thw_new, caches = self.attn(x_norm, thw, memory)
        if hasattr(self, "proj"):
            x = self.proj(x_norm)
        if self.pool_skip is not None:
            grid = grid_to_tokens(self.pool_skip(tokens_to_grid(x[:, self.n_cls :], thw)))
            x = torch.cat([x[:, : self.n_cls], grid], dim=1)
        x = x + self.drop_path(x_block)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, thw_new, caches
