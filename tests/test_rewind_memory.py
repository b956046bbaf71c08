import pytest
import torch

from longvid.errors import LongvidError
from longvid.memory.rewind import FeatureBuffer, RewindMemory, RewindMemoryConfig

TINY = RewindMemoryConfig(dim=32, vision_dim=16, text_dim=24, num_read=4, num_write=2, num_heads=4,
                          perceiver_layers=1, mlp_ratio=2.0, max_clip_frames=8)


def make(seed=0, config=TINY):
    torch.manual_seed(seed)
    memory = RewindMemory(config).eval()
    for p in memory.parameters():  # non-trivial time embeddings too
        torch.nn.init.normal_(p, std=0.2)
    return memory


def feed(memory, frames, text, clip, state=None, buffer=None):
    """Feed ``frames (B, N, P, D_v)`` in sub-clips of ``clip`` frames (padded tail); returns the state."""
    batch, total = frames.shape[:2]
    times = torch.arange(total, dtype=torch.float64).expand(batch, -1)
    for start in range(0, total, clip):
        chunk = frames[:, start : start + clip]
        valid = chunk.shape[1]
        pad = chunk[:, -1:].expand(-1, clip - valid, -1, -1)
        chunk = torch.cat([chunk, pad], dim=1)
        t = torch.cat([times[:, start : start + valid], times[:, start + valid - 1 :][:, :1].expand(-1, clip - valid)], 1)
        num_valid = torch.full((batch,), valid)
        first = state.num_frames if state is not None else torch.zeros(batch, dtype=torch.long)
        if buffer is not None:
            buffer.write(first, chunk, num_valid)
        _, state = memory(chunk, text, None, t, state, num_valid=num_valid)
    return state


def inputs(batch=1, frames=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 5, 16, generator=gen), torch.randn(batch, 3, 24, generator=gen)


@torch.no_grad()
def test_two_tokens_per_frame_in_temporal_order():
    memory = make()
    frames, text = inputs(batch=2, frames=8)
    times = torch.arange(8, dtype=torch.float64).expand(2, -1)
    w1, state = memory(frames[:, :4], text, None, times[:, :4])
    w2, state = memory(frames[:, 4:], text, None, times[:, 4:], state, num_valid=torch.tensor([4, 2]))
    assert w1.shape == (2, 4, 2, 32)
    assert state.num_frames.tolist() == [8, 6] and state.lengths.tolist() == [16, 12]
    assert state.tokens.shape == (2, 16, 32)
    for b, count in enumerate([8, 6]):
        written = torch.cat([w1[b], w2[b]])[:count]  # (frames, 2, D) in temporal order
        assert torch.equal(state.tokens[b, : 2 * count], written.reshape(2 * count, 32))
        assert state.timestamps[b, :count].tolist() == list(range(count))
    assert torch.all(state.tokens[1, 12:] == 0) and state.valid[1].tolist() == [True] * 12 + [False] * 4
    tokens, stamps = state.frame_tokens(0, until=5.0)
    assert tokens.shape == (6, 2, 32) and torch.equal(tokens[3], w1[0, 3])


@torch.no_grad()
def test_memory_is_causal_breakpoint_mode():
    memory = make(1)
    frames, text = inputs(frames=11)
    full = feed(memory, frames, text, clip=4)
    for cut in (3, 6, 8):
        seen = feed(memory, frames[:, :cut], text, clip=4)  # the video ends at the breakpoint
        tokens, _ = seen.frame_tokens(0)
        asked, times = full.frame_tokens(0, until=float(cut - 1))  # later frames exist but are not used
        assert tokens.shape == asked.shape == (cut, 2, 32)
        assert torch.allclose(tokens, asked, atol=1e-5)


@torch.no_grad()
def test_bidirectional_time_attention_sees_the_future():
    memory = make(1, TINY.__class__(**{**TINY.__dict__, "causal_time": False}))
    frames, text = inputs(frames=8)
    full, cut = feed(memory, frames, text, clip=4), feed(memory, frames[:, :6], text, clip=4)
    assert not torch.allclose(cut.frame_tokens(0)[0], full.frame_tokens(0, until=5.0)[0], atol=1e-4)


@torch.no_grad()
def test_streams_never_share_memory():
    memory = make(2)
    frames, text = inputs(batch=2, frames=9, seed=3)
    both = feed(memory, frames, text, clip=4)
    for b in range(2):
        alone = feed(memory, frames[b : b + 1], text[b : b + 1], clip=4)
        assert torch.allclose(both.frame_tokens(b)[0], alone.frame_tokens(0)[0], atol=1e-5)
    # Restarting stream 1 (is_first) empties it and leaves stream 0 alone.
    times = torch.zeros(2, 4, dtype=torch.float64)
    _, state = memory(frames[:, :4], text, None, times, both, is_first=torch.tensor([False, True]))
    fresh = feed(memory, frames[1:, :4], text[1:], clip=4)
    assert state.num_frames.tolist() == [13, 4]
    assert torch.allclose(state.frame_tokens(1)[0], fresh.frame_tokens(0)[0], atol=1e-5)
    assert torch.equal(state.frame_tokens(0)[0][:9], both.frame_tokens(0)[0])


@torch.no_grad()
def test_same_state_twice_same_result():
    memory = make(3)
    frames, text = inputs(frames=8)
    state = feed(memory, frames[:, :4], text, clip=4)
    times = torch.arange(4, 8, dtype=torch.float64)[None]
    a, s1 = memory(frames[:, 4:], text, None, times, state)
    b, s2 = memory(frames[:, 4:], text, None, times, state)
    assert torch.equal(a, b) and torch.equal(s1.tokens, s2.tokens) and state.num_frames.item() == 4


def test_long_video_keeps_two_tokens_per_frame():
    memory = make(4, TINY.__class__(**{**TINY.__dict__, "max_clip_frames": 60}))
    frames, text = inputs(frames=600, seed=4)  # 10 minutes at 1 fps
    buffer = FeatureBuffer(1)
    with torch.no_grad():
        state = feed(memory, frames, text, clip=60, buffer=buffer)
    assert state.lengths.tolist() == [1200] and state.tokens.shape == (1, 1200, 32)
    assert buffer.num_stored == [600] and buffer.ram_bytes >= 600 * 5 * 16 * 4


@pytest.mark.parametrize("keep_every,spill", [(1, False), (3, False), (1, True), (4, True)])
def test_feature_buffer_policies(tmp_path, keep_every, spill):
    frames = torch.randn(2, 10, 3, 4)
    buffer = FeatureBuffer(2, keep_every=keep_every, spill_dir=tmp_path if spill else None)
    for start in (0, 4, 8):
        chunk = frames[:, start : start + 4]
        valid = torch.tensor([chunk.shape[1], min(chunk.shape[1], 1 if start == 8 else 4)])
        chunk = torch.cat([chunk, chunk[:, -1:].expand(-1, 4 - chunk.shape[1], -1, -1)], 1)
        buffer.write(torch.tensor([start, start]), chunk, valid)
    kept = [-(-10 // keep_every), -(-9 // keep_every)]
    assert buffer.num_stored == kept
    query = torch.tensor([0, 5, 8])
    for b in range(2):
        expected = frames[b, buffer.stored_frame(query)]
        assert torch.equal(buffer.read(b, query), expected)
    per_frame = 3 * 4 * 4
    if spill:
        assert buffer.ram_bytes == 0 and buffer.disk_bytes == sum(kept) * per_frame
    else:
        assert buffer.disk_bytes == 0 and buffer.ram_bytes >= sum(kept) * per_frame
    with pytest.raises(LongvidError, match="not in the feature buffer"):
        buffer.read(1, torch.tensor([9]) if keep_every == 1 else torch.tensor([12 * keep_every]))
    # Writing frames again overwrites them and drops what came after.
    buffer.write(torch.tensor([4, 4]), torch.zeros(2, 4, 3, 4), torch.tensor([2, 2]))
    assert buffer.num_stored == [-(-6 // keep_every)] * 2
    if keep_every == 1:
        assert torch.equal(buffer.read(0, torch.tensor([3, 4])), torch.stack([frames[0, 3], torch.zeros(3, 4)]))
    buffer.reset(0)
    assert buffer.num_stored[0] == 0
