"""Key/value memory: compression, samplers, cache roll, gradients, state handling."""

import pytest
import torch
from torch import nn

from longvid.errors import LongvidError
from longvid.memvit.memory import KVMemorySpec, KVMemoryState, LayerCache, compress_tokens, memory_step, memory_valid
from longvid.memvit import build_model

torch.set_num_threads(1)  # the test machines are shared: avoid thread oversubscription


def _naive_depthwise_conv3d(x, weight, stride, padding):
    """x (C, T, H, W), weight (C, 1, kt, kh, kw): explicit sums over the kernel window."""
    c, t, h, w = x.shape
    kt, kh, kw = weight.shape[2:]
    xp = torch.zeros(c, t + 2 * padding[0], h + 2 * padding[1], w + 2 * padding[2], dtype=x.dtype)
    xp[:, padding[0] : padding[0] + t, padding[1] : padding[1] + h, padding[2] : padding[2] + w] = x
    out_t = (t + 2 * padding[0] - kt) // stride[0] + 1
    out_h = (h + 2 * padding[1] - kh) // stride[1] + 1
    out_w = (w + 2 * padding[2] - kw) // stride[2] + 1
    out = torch.zeros(c, out_t, out_h, out_w, dtype=x.dtype)
    for i in range(out_t):
        for j in range(out_h):
            for k in range(out_w):
                window = xp[:, i * stride[0] : i * stride[0] + kt, j * stride[1] : j * stride[1] + kh, k * stride[2] : k * stride[2] + kw]
                out[:, i, j, k] = (window * weight[:, 0]).sum(dim=(1, 2, 3))
    return out


def _naive_layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def test_compression_equals_hand_written_conv_and_layernorm():
    torch.manual_seed(0)
    c, thw = 6, (8, 5, 5)
    conv = nn.Conv3d(c, c, (7, 3, 3), stride=(4, 2, 2), padding=(3, 1, 1), groups=c, bias=False).double()
    norm = nn.LayerNorm(c, eps=1e-6).double()
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    tokens = torch.randn(2, 1 + 8 * 5 * 5, c, dtype=torch.float64)
    out, out_thw = compress_tokens(tokens, thw, conv, norm, n_cls=1)
    assert out_thw == (2, 3, 3)
    for b in range(2):
        grid = torch.zeros(c, *thw, dtype=torch.float64)
        for n in range(8 * 5 * 5):  # token n sits at (t, h, w) in row-major order
            t, rest = divmod(n, 25)
            h, w = divmod(rest, 5)
            grid[:, t, h, w] = tokens[b, 1 + n]
        pooled = _naive_depthwise_conv3d(grid, conv.weight, (4, 2, 2), (3, 1, 1))
        seq = torch.cat([tokens[b, :1], pooled.reshape(c, -1).t()])  # cls first, not pooled
        expected = _naive_layer_norm(seq, norm.weight, norm.bias, 1e-6)
        torch.testing.assert_close(out[b], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sampler, distances", [("consecutive", (2, 1)), ("all", (2, 1)), ("gap2", (4, 2)), ("gap3", (6, 3))])
def test_sampler_distances(sampler, distances):
    spec = KVMemorySpec(2, sampler)
    assert spec.read_distances == distances
    assert spec.cache_len == 2 * spec.gap


def test_bad_sampler_is_a_clear_error():
    with pytest.raises(LongvidError, match="sampler"):
        KVMemorySpec(2, "every_other")


def _official_selection(cur_len, sampler):
    """The released sample_memory(): indices into the cached list (oldest first)."""
    if sampler.startswith("gap"):
        gap = int(sampler[3:])
        if cur_len < gap:
            return []
        num_used = cur_len // gap
        return list(range(cur_len)[-gap * num_used :: gap])
    return list(range(cur_len))


@pytest.mark.parametrize("sampler, memory_len", [("gap2", 2), ("consecutive", 2), ("gap3", 2), ("consecutive", 3), ("gap2", 1)])
def test_memory_step_follows_released_cache_algorithm(sampler, memory_len):
    """Roll our fixed-shape cache and compare what is read with the released list-based
    cache (compress the previous entry on append, keep (A-1)*N entries, sample, drop)."""
    spec = KVMemorySpec(memory_len, sampler)
    compress = lambda t: t * 10  # marks compressed entries  # noqa: E731
    cache = LayerCache(torch.zeros(1, spec.raw_len, 1), torch.zeros(1, spec.compressed_len, 1, 1))
    official = []  # list of (clip id, compressed?)
    keep_max_len = spec.cache_len + 1
    for step in range(9):
        current = torch.full((1, 1, 1), float(step + 1))
        read, cache = memory_step(cache, current, spec, compress)
        valid = memory_valid(spec, torch.tensor([min(step, spec.cache_len)]))[0]
        ours = [int(read[0, m].item()) // 10 - 1 for m in range(memory_len) if valid[m]]

        selection = _official_selection(len(official), sampler)
        official.append(step)
        expected = [official[:-1][i] for i in selection]
        if len(official) == keep_max_len:
            official = official[1:]
        assert ours == expected, (step, ours, expected)


def test_memory_valid_masks_young_streams_and_drops():
    spec = KVMemorySpec(2, "gap2")
    valid = memory_valid(spec, torch.tensor([0, 2, 3, 4]))
    assert valid.tolist() == [[False, False], [False, True], [False, True], [True, True]]
    keep = torch.tensor([[True, True], [True, True], [True, True], [True, False]])
    assert memory_valid(spec, torch.tensor([0, 2, 3, 4]), keep)[3].tolist() == [True, False]
    with pytest.raises(LongvidError, match="memory_keep"):
        memory_valid(spec, torch.tensor([0]), torch.ones(1, 3, dtype=torch.bool))


def _stream(model, clips, state=None):
    state = state or model.init_state(clips[0].shape[0])
    outs = []
    for clip in clips:
        out, state = model(clip, state)
        outs.append(out)
    return outs, state


def _clips(n, batch=1, seed=0, size=(8, 32, 32)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, *size, generator=g) for _ in range(n)]


def test_gradients_reach_compression_with_every_sampler():
    """Entries are compressed at the step where they are first read, so the released gap
    samplers train fK/fV too (the released code compresses them a step after caching)."""
    clips = _clips(5)
    for sampler, expect_grad in (("consecutive", True), ("gap2", True)):
        torch.manual_seed(0)
        model = build_model("memvit_tiny", sampler=sampler, num_frames=8, crop_size=32)
        outs, _ = _stream(model, clips)
        outs[-1].sum().backward()
        grads = [b.attn.compress_k.weight.grad for i, b in enumerate(model.blocks) if i in model.reading_blocks]
        grads += [b.attn.compress_v.weight.grad for i, b in enumerate(model.blocks) if i in model.reading_blocks]
        has = [g is not None and bool(g.abs().sum() > 0) for g in grads]
        assert all(has) if expect_grad else not any(has), (sampler, has)


def test_no_gradient_flows_into_older_memory():
    torch.manual_seed(0)
    model = build_model("memvit_tiny", sampler="consecutive", num_frames=8, crop_size=32)
    clips = [c.requires_grad_() for c in _clips(3)]
    state = model.init_state(1)
    for clip in clips:
        out, state = model(clip, state)
    assert all(not t.requires_grad for t in state.state_dict().values())
    out.sum().backward()
    assert clips[-1].grad is not None
    assert clips[0].grad is None and clips[1].grad is None  # memory is stop-gradient


def test_state_reset_detach_and_safetensors_round_trip(tmp_path):
    from safetensors.torch import load_file, save_file

    model = build_model("memvit_tiny", num_frames=8, crop_size=32).eval()
    with torch.no_grad():
        _, state = _stream(model, _clips(3, batch=2))
    assert not state.is_first.any() and state.num_seen.tolist() == [3, 3]
    reset = state.reset(torch.tensor([True, False]))
    assert reset.is_first.tolist() == [True, False] and reset.num_seen.tolist() == [0, 3]
    for cache in reset.keys + reset.values:
        assert not cache.raw[0].any() and not cache.compressed[0].any()
        assert torch.equal(cache.raw[1], state.keys[0].raw[1]) or cache.raw[1].any()
    save_file(state.state_dict(), tmp_path / "state.safetensors")
    loaded = KVMemoryState.from_state_dict(load_file(tmp_path / "state.safetensors"))
    for name, tensor in state.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    with pytest.raises(LongvidError, match="reset mask"):
        state.reset(torch.tensor([True]))


def test_state_dtype_and_device_follow_the_model():
    model = build_model("memvit_tiny", num_frames=8, crop_size=32).double()
    state = model.init_state(2)
    assert state.keys[0].raw.dtype == torch.float64 and state.is_first.dtype == torch.bool
    out, state = model(_clips(1, batch=2)[0].double(), state)
    assert out.dtype == torch.float64 and state.keys[0].compressed.dtype == torch.float64


def test_state_index_select_and_copy_round_trip():
    import longvid

    model = longvid.build_model("memvit_tiny").eval()
    torch.manual_seed(1)
    with torch.inference_mode():
        _, state = model(torch.randn(3, 3, 16, 64, 64), model.init_state(3))
        index = torch.tensor([2, 0])
        part = state.index_select(index)
        assert part.batch_size == 2
        assert torch.equal(part.keys[0].raw[0], state.keys[0].raw[2])
        zeroed = part.reset(torch.ones(2, dtype=torch.bool))
        merged = state.index_copy(index, zeroed)
        assert bool(merged.is_first[0]) and bool(merged.is_first[2]) and not bool(merged.is_first[1])
        assert torch.equal(merged.values[-1].compressed[1], state.values[-1].compressed[1])
        assert not merged.keys[0].raw[0].any() and not merged.keys[0].raw[2].any()
