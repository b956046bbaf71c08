"""MViTv2 attention with memory against a naive reference (explicit loops and concatenation)."""

import math

import pytest
import torch
import torch.nn.functional as F

from longvid.memvit.memory import KVMemorySpec, LayerCache, memory_valid
from longvid.memvit.attention import LayerMemory, MultiScaleAttention, MultiScaleBlock, round_width

torch.set_num_threads(1)  # the test machines are shared: avoid thread oversubscription


def _grid(tokens, thw):
    """(n_tokens, C) in (t, h, w) row-major order -> (C, T, H, W), built token by token."""
    c = tokens.shape[1]
    t, h, w = thw
    grid = torch.zeros(c, t, h, w, dtype=tokens.dtype)
    for n in range(t * h * w):
        ti, rest = divmod(n, h * w)
        hi, wi = divmod(rest, w)
        grid[:, ti, hi, wi] = tokens[n]
    return grid


def _pool(tokens, thw, conv, norm):
    """Pool one head's (1 + THW, c) tokens: depthwise conv on the grid, cls kept, then norm."""
    pooled = F.conv3d(_grid(tokens[1:], thw)[None], conv.weight, stride=conv.stride, padding=conv.padding, groups=conv.groups)[0]
    out_thw = tuple(pooled.shape[1:])
    return norm(torch.cat([tokens[:1], pooled.flatten(1).t()])), out_thw


def _coords(thw):
    t, h, w = thw
    return [(i, j, k) for i in range(t) for j in range(h) for k in range(w)]


def _spatial_index(qi, kj, q_size, k_size):
    q_ratio, k_ratio = max(k_size / q_size, 1.0), max(q_size / k_size, 1.0)
    return int(qi * q_ratio - kj * k_ratio + (k_size - 1) * k_ratio)


def naive_attention(attn, x, thw, memory=None):
    """Reference for MultiScaleAttention.forward on one stream at a time.

    Invalid memory entries are *left out* of the key set (not masked)."""
    b_size, _, dim = x.shape
    heads = attn.num_heads
    c, d = dim // heads, attn.dim_out // heads
    outputs = []
    for b in range(b_size):
        qs, ks, vs = [], [], []
        for h in range(heads):
            part = x[b, :, h * c : (h + 1) * c]
            q_h, q_thw = _pool(part, thw, attn.pool_q, attn.norm_q)
            k_h, k_thw = _pool(part, thw, attn.pool_k, attn.norm_k)
            v_h, _ = _pool(part, thw, attn.pool_v, attn.norm_v)
            qs.append(q_h), ks.append(k_h), vs.append(v_h)
        q_in, k_cur, v_cur = torch.cat(qs, 1), torch.cat(ks, 1), torch.cat(vs, 1)  # heads side by side

        keys, values, positions = [], [], []  # positions: None for cls keys, else ("mem", t, h, w) / ("cur", t, h, w)
        if memory is not None:
            spec = memory.spec

            def compress(tokens, conv, norm):
                pooled = F.conv3d(_grid(tokens[1:], k_thw)[None], conv.weight, stride=conv.stride, padding=conv.padding, groups=conv.groups)[0]
                return norm(torch.cat([tokens[:1], pooled.flatten(1).t()])), tuple(pooled.shape[1:])

            n_raw = memory.keys.raw.shape[1] // spec.raw_len  # raw holds clips t-gap .. t-1; t-gap is read now
            newest_k, mem_thw = compress(memory.keys.raw[b, :n_raw], attn.compress_k, attn.norm_compress_k)
            newest_v, _ = compress(memory.values.raw[b, :n_raw], attn.compress_v, attn.norm_compress_v)
            entries_k = list(memory.keys.compressed[b]) + [newest_k]
            entries_v = list(memory.values.compressed[b]) + [newest_v]
            tc = mem_thw[0]
            for m, slot in enumerate(spec.read_slots):
                if not memory.valid[b, m]:
                    continue
                keys.append(entries_k[slot])
                values.append(entries_v[slot])
                positions += [None] + [("mem", m * tc + t, hh, ww) for t, hh, ww in _coords(mem_thw)]
        keys.append(k_cur)
        values.append(v_cur)
        positions += [None] + [("cur", t, hh, ww) for t, hh, ww in _coords(k_thw)]
        q = attn.q(q_in)
        k = attn.k(torch.cat(keys))  # projection over the explicit concatenation
        v = attn.v(torch.cat(values))

        # Position term per (query, key) pair: table rows chosen pair by pair.
        q_grid = [None] + _coords(q_thw)
        tables = {
            "cur": (attn.rel_pos_t, attn.rel_pos_h, attn.rel_pos_w),
            "mem": (getattr(attn, "rel_pos_mem_t", None), getattr(attn, "rel_pos_mem_h", None), getattr(attn, "rel_pos_mem_w", None)),
        }
        rel = torch.zeros(len(q_grid), len(positions), d, dtype=x.dtype)
        for i, qpos in enumerate(q_grid):
            for j, kpos in enumerate(positions):
                if qpos is None or kpos is None:
                    continue
                qt, qy, qx = qpos
                kind, kt, ky, kx = kpos
                rt, rh, rw = tables[kind]
                if kind == "cur":
                    row_t = qt - kt + k_thw[0] - 1
                    grid_h, grid_w = k_thw[1], k_thw[2]
                else:
                    row_t = qt + (spec.memory_len * tc - 1 - kt) * attn.compress_stride[0]
                    grid_h, grid_w = mem_thw[1], mem_thw[2]
                rel[i, j] = rt[row_t] + rh[_spatial_index(qy, ky, q_thw[1], grid_h)] + rw[_spatial_index(qx, kx, q_thw[2], grid_w)]
        out = torch.zeros(q.shape[0], attn.dim_out, dtype=x.dtype)
        for h in range(heads):
            qh, kh, vh = q[:, h * d : (h + 1) * d], k[:, h * d : (h + 1) * d], v[:, h * d : (h + 1) * d]
            logits = qh @ kh.t() / math.sqrt(d) + torch.einsum("id,ijd->ij", qh, rel)
            head_out = logits.softmax(-1) @ vh
            head_out[1:] += qh[1:]  # residual pooling, not on cls
            out[:, h * d : (h + 1) * d] = head_out
        outputs.append(attn.proj(out))
    return torch.stack(outputs)


IMPLS = ("sdpa", "matmul", "explicit")


def _attention(memory_len=2, impl="auto", **kw):
    torch.manual_seed(0)
    attn = MultiScaleAttention(
        8, 16, 2, (8, 6, 6), stride_q=(1, 2, 2), stride_kv=(1, 2, 2), memory_len=memory_len, **kw
    ).double()
    attn.impl = impl
    for p in attn.parameters():  # random everything, including norms and tables
        torch.nn.init.normal_(p, std=0.3)
    return attn.eval()


def _memory(attn, spec, valid, batch=2):
    g = torch.Generator().manual_seed(1)
    n_raw, n_comp = 1 + 8 * 3 * 3, 1 + 2 * 2 * 2

    def cache():
        return LayerCache(torch.randn(batch, spec.raw_len * n_raw, 8, generator=g, dtype=torch.float64), torch.randn(batch, spec.compressed_len, n_comp, 8, generator=g, dtype=torch.float64))

    return LayerMemory(cache(), cache(), valid, spec)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sampler", ["consecutive", "gap2"])
@pytest.mark.parametrize("filled", [False, True])
def test_memory_attention_equals_attention_over_concatenated_keys(sampler, impl, filled):
    attn = _attention(impl=impl)
    spec = KVMemorySpec(2, sampler)
    seen = [spec.cache_len, spec.cache_len] if filled else [spec.cache_len, spec.gap]  # else stream 1 has only the newest entry
    valid = memory_valid(spec, torch.tensor(seen))  # filled: every entry valid, so the folded paths use no mask
    memory = _memory(attn, spec, valid)
    x = torch.randn(2, 1 + 8 * 6 * 6, 8, dtype=torch.float64)
    with torch.no_grad():
        out, q_thw, caches = attn(x, (8, 6, 6), memory)
        expected = naive_attention(attn, x, (8, 6, 6), memory)
    assert q_thw == (8, 3, 3)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    # the cache rolls: raw is this clip's pooled keys, compressed drops the oldest entry
    assert caches[0].raw.shape == memory.keys.raw.shape
    assert caches[0].compressed.shape == memory.keys.compressed.shape


@pytest.mark.parametrize("impl", IMPLS)
def test_attention_without_memory_equals_naive(impl):
    attn = _attention(memory_len=0, impl=impl)
    x = torch.randn(2, 1 + 8 * 6 * 6, 8, dtype=torch.float64)
    with torch.no_grad():
        out, _, caches = attn(x, (8, 6, 6))
        torch.testing.assert_close(out, naive_attention(attn, x, (8, 6, 6)), rtol=1e-10, atol=1e-10)
    assert caches is None


@pytest.mark.parametrize("impl", IMPLS)
def test_masked_memory_is_excluded_from_softmax_not_zeroed(impl):
    """A stream whose entries are all invalid gives the no-memory output whatever the memory holds."""
    attn = _attention(impl=impl)
    spec = KVMemorySpec(2, "consecutive")
    x = torch.randn(1, 1 + 8 * 6 * 6, 8, dtype=torch.float64)
    with torch.no_grad():
        plain = naive_attention(attn, x, (8, 6, 6), _memory(attn, spec, torch.zeros(1, 2, dtype=torch.bool), batch=1))
        out, _, _ = attn(x, (8, 6, 6), _memory(attn, spec, torch.zeros(1, 2, dtype=torch.bool), batch=1))
    torch.testing.assert_close(out, plain, rtol=1e-10, atol=1e-10)


def test_block_stage_transition_shapes_and_residual_pooling():
    torch.manual_seed(0)
    block = MultiScaleBlock(8, 16, 2, (4, 8, 8), stride_q=(1, 2, 2), stride_kv=(1, 4, 4)).eval()
    x = torch.randn(3, 1 + 4 * 8 * 8, 8)
    with torch.no_grad():
        y, thw, _ = block(x, (4, 8, 8))
        # residual path by hand: proj(norm1(x)) max-pooled 3x3 stride 2 on the grid, cls untouched
        res = block.proj(block.norm1(x))
        grid = res[:, 1:].transpose(1, 2).reshape(3, 16, 4, 8, 8)
        pooled = F.max_pool3d(grid, (1, 3, 3), (1, 2, 2), (0, 1, 1)).flatten(2).transpose(1, 2)
        res = torch.cat([res[:, :1], pooled], 1)
        attn_out, _, _ = block.attn(block.norm1(x), (4, 8, 8))
        mid = res + attn_out
        expected = mid + block.mlp(block.norm2(mid))
    assert thw == (4, 4, 4) and y.shape == (3, 1 + 64, 16)
    torch.testing.assert_close(y, expected)


def test_round_width_matches_pyslowfast():
    assert round_width(96, 2.0) == 192
    assert round_width(96, 2.0, divisor=2) == 192
    assert round_width(1, 2.0) == 2
    assert round_width(10, 1.5, divisor=4) == 16


@pytest.mark.parametrize("impl", IMPLS)
def test_bias_paths_with_and_without_autograd_agree(impl):
    attn = _attention(impl=impl)
    spec = KVMemorySpec(2, "gap2")
    memory = _memory(attn, spec, memory_valid(spec, torch.tensor([4, 2])))
    x = torch.randn(2, 1 + 8 * 6 * 6, 8, dtype=torch.float64)
    with torch.no_grad():
        fast, _, _ = attn(x, (8, 6, 6), memory)
    graph, _, _ = attn(x, (8, 6, 6), memory)
    graph.sum().backward()
    torch.testing.assert_close(graph.detach(), fast, rtol=1e-12, atol=1e-12)
    assert attn.rel_pos_mem_t.grad is not None and attn.rel_pos_h.grad is not None
