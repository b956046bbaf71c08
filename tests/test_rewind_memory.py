import gc
import os

import pytest
import torch

from longvid.errors import LongvidError
from longvid.rewind import FrameStore, RewindMemory, RewindMemoryConfig

TINY = RewindMemoryConfig(dim=32, vision_dim=16, text_dim=24, num_read=4, num_write=2, num_heads=4,
                          perceiver_layers=1, mlp_ratio=2.0, max_clip_frames=8)


def make(seed=0, config=TINY):
    torch.manual_seed(seed)
    memory = RewindMemory(config).eval()
    for p in memory.parameters():  # non-trivial time embeddings too
        torch.nn.init.normal_(p, std=0.2)
    return memory


def feed(memory, frames, text, step, clip=4, state=None):
    """Feed ``frames (B, N, P, D_v)`` at 1 fps in steps of ``step`` frames (sub-clips of ``clip``); returns the state."""
    batch, total = frames.shape[:2]
    times = torch.arange(total, dtype=torch.float64).expand(batch, -1)
    mask = torch.ones(text.shape[:2], dtype=torch.bool)
    state = memory.init_state(batch, clip) if state is None else state
    for start in range(0, total, step):
        chunk = frames[:, start : start + step]
        count = torch.full((batch,), chunk.shape[1])
        _, state = memory.step(state, chunk, text, mask, times[:, start : start + step], count)
    return state


def inputs(batch=1, frames=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 5, 16, generator=gen), torch.randn(batch, 3, 24, generator=gen)


def naive_memory(memory, frames, text, clip):
    """One stream's memory tokens ``(N, N_W, D)`` with explicit loops: per sub-clip one read of the
    (unpadded) memory, per frame the Perceiver, causal time attention as attention over the frames
    so far, then the write."""
    written = []
    for start in range(0, frames.shape[0], clip):
        stored = torch.cat(written).reshape(1, -1, TINY.dim) if written else torch.zeros(1, 0, TINY.dim)
        summary = memory.read(memory.read_queries[None], stored)  # (1, N_R, D)
        sub = frames[start : start + clip]
        latents = torch.cat([memory.perceive(sub[f][None, None], text[None], torch.ones(1, text.shape[0], dtype=torch.bool), summary)[0]
                             for f in range(len(sub))])  # (n, N_R, D)
        latents = latents + memory.time_embed[: len(sub), None]
        for f in range(len(sub)):
            sequence = latents[: f + 1].transpose(0, 1)  # (N_R, f + 1, D): the frames so far
            mixed = memory.temporal(sequence)[:, -1]  # (N_R, D)
            written.append(memory.write_tokens(mixed[None, None])[0])  # (1, N_W, D)
    return torch.cat(written)


@torch.no_grad()
def test_step_matches_a_naive_loop():
    memory = make(5)
    frames, text = inputs(frames=11, seed=5)
    state = feed(memory, frames, text, step=4)
    tokens, _ = state.frame_tokens(0)
    assert torch.allclose(tokens, naive_memory(memory, frames[0], text[0], clip=4), atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("step", [1, 3, 5, 11])
def test_any_step_size_gives_the_same_memory(step):
    """Sub-clips are counted from the stream's first frame, whatever the steps: T one-frame steps
    equal one T-frame step."""
    memory = make(6)
    frames, text = inputs(batch=2, frames=11, seed=6)
    by_clip = feed(memory, frames, text, step=4)
    other = feed(memory, frames, text, step=step)
    assert torch.allclose(other.tokens, by_clip.tokens, atol=1e-5) and torch.equal(other.times, by_clip.times)
    assert other.num_frames.tolist() == [11, 11] and torch.allclose(other.open, by_clip.open, atol=1e-5)


@torch.no_grad()
def test_two_tokens_per_frame_in_temporal_order():
    memory = make()
    frames, text = inputs(batch=2, frames=8)
    times = torch.arange(8, dtype=torch.float64).expand(2, -1)
    mask = torch.ones(2, 3, dtype=torch.bool)
    state = memory.init_state(2, 4)
    w1, state = memory.step(state, frames[:, :4], text, mask, times[:, :4], torch.tensor([4, 4]))
    w2, state = memory.step(state, frames[:, 4:], text, mask, times[:, 4:], torch.tensor([4, 2]))
    assert w1.shape == (2, 4, 2, 32) and torch.all(w2[1, 2:] == 0)  # padded frames write nothing
    assert state.num_frames.tolist() == [8, 6] and state.lengths.tolist() == [16, 12]
    assert state.tokens.shape == (2, 16, 32)
    for b, count in enumerate([8, 6]):
        written = torch.cat([w1[b], w2[b]])[:count]  # (frames, 2, D) in temporal order
        assert torch.equal(state.tokens[b, : 2 * count], written.reshape(2 * count, 32))
        assert state.times[b, :count].tolist() == list(range(count))
    assert torch.all(state.tokens[1, 12:] == 0) and state.valid[1].tolist() == [True] * 12 + [False] * 4
    tokens, stamps = state.frame_tokens(0, until=5.0)
    assert tokens.shape == (6, 2, 32) and torch.equal(tokens[3], w1[0, 3])


@torch.no_grad()
def test_memory_is_causal_breakpoint_mode():
    memory = make(1)
    frames, text = inputs(frames=11)
    full = feed(memory, frames, text, step=4)
    for cut in (3, 6, 8):
        seen = feed(memory, frames[:, :cut], text, step=4)  # the video ends at the breakpoint
        tokens, _ = seen.frame_tokens(0)
        asked, times = full.frame_tokens(0, until=float(cut - 1))  # later frames exist but are not used
        assert tokens.shape == asked.shape == (cut, 2, 32)
        assert torch.allclose(tokens, asked, atol=1e-5)


@torch.no_grad()
def test_bidirectional_time_attention_sees_the_future():
    memory = make(1, TINY.__class__(**{**TINY.__dict__, "causal_time": False}))
    frames, text = inputs(frames=8)
    full, cut = feed(memory, frames, text, step=4), feed(memory, frames[:, :6], text, step=4)
    assert not torch.allclose(cut.frame_tokens(0)[0], full.frame_tokens(0, until=5.0)[0], atol=1e-4)
    # The open sub-clip's tokens are rewritten as it fills: once complete, they do not depend on the steps.
    assert torch.allclose(feed(memory, frames, text, step=1).tokens, full.tokens, atol=1e-5)


@torch.no_grad()
def test_streams_never_share_memory():
    memory = make(2)
    frames, text = inputs(batch=2, frames=9, seed=3)
    both = feed(memory, frames, text, step=4)
    for b in range(2):
        alone = feed(memory, frames[b : b + 1], text[b : b + 1], step=4)
        assert torch.allclose(both.frame_tokens(b)[0], alone.frame_tokens(0)[0], atol=1e-5)
    # Restarting stream 1 (reset) empties it and leaves stream 0 alone.
    state = feed(memory, frames[:, :4], text, step=4, state=both.reset(torch.tensor([False, True])))
    fresh = feed(memory, frames[1:, :4], text[1:], step=4)
    assert state.num_frames.tolist() == [13, 4]
    assert torch.allclose(state.frame_tokens(1)[0], fresh.frame_tokens(0)[0], atol=1e-5)
    assert torch.equal(state.frame_tokens(0)[0][:9], both.frame_tokens(0)[0])


@torch.no_grad()
def test_same_state_twice_same_result():
    memory = make(3)
    frames, text = inputs(frames=8)
    state = feed(memory, frames[:, :6], text, step=3)
    before = {k: v.clone() for k, v in state.state_dict().items()}
    times, mask = torch.arange(6, 8, dtype=torch.float64)[None], torch.ones(1, 3, dtype=torch.bool)
    a, s1 = memory.step(state, frames[:, 6:], text, mask, times, torch.tensor([2]))
    b, s2 = memory.step(state, frames[:, 6:], text, mask, times, torch.tensor([2]))
    assert torch.equal(a, b) and torch.equal(s1.tokens, s2.tokens)
    assert all(torch.equal(before[k], v) for k, v in state.state_dict().items())  # the state passed in is a value


def test_long_video_keeps_two_tokens_per_frame():
    memory = make(4, TINY.__class__(**{**TINY.__dict__, "max_clip_frames": 60}))
    frames, text = inputs(frames=600, seed=4)  # 10 minutes at 1 fps
    with torch.no_grad():
        state = feed(memory, frames, text, step=60, clip=60)
    store = FrameStore.empty(1).append(torch.tensor([0]), frames, torch.tensor([600]))
    assert state.lengths.tolist() == [1200] and state.tokens.shape == (1, 1200, 32)
    assert store.num_stored() == [600] and store.ram_nbytes == 600 * 5 * 16 * 4


def fill(store, frames, lengths=(10, 9)):
    """Append the first ``lengths`` of ``frames (2, 10, 3, 4)`` in steps of 4 (the last one padded)."""
    for start in range(0, max(lengths), 4):
        chunk = frames[:, start : start + 4]
        count = torch.tensor([min(4, max(0, n - start)) for n in lengths])
        chunk = torch.cat([chunk, chunk[:, -1:].expand(-1, 4 - chunk.shape[1], -1, -1)], 1)
        store = store.append(torch.tensor([start, start]), chunk, count)
    return store


@pytest.mark.parametrize("keep_every,spill", [(1, False), (3, False), (1, True), (4, True)])
def test_frame_store_policies(tmp_path, keep_every, spill):
    frames = torch.randn(2, 10, 3, 4)
    store = fill(FrameStore.empty(2, keep_every=keep_every, spill_dir=tmp_path if spill else None), frames)
    kept = [-(-10 // keep_every), -(-9 // keep_every)]
    assert store.num_stored() == kept
    query = torch.tensor([0, 5, 8])
    for b in range(2):
        assert torch.equal(store.read(b, query), frames[b, store.stored_frame(query)])
        assert torch.equal(store.stream_features(b), frames[b, torch.arange(0, 10 - b, keep_every)])
    per_frame = 3 * 4 * 4
    assert (store.ram_nbytes, store.disk_nbytes) == ((0, sum(kept) * per_frame) if spill else (sum(kept) * per_frame, 0))
    with pytest.raises(LongvidError, match="not in the frame store"):
        store.read(1, torch.tensor([9]) if keep_every == 1 else torch.tensor([12 * keep_every]))
    # A value: appending to an earlier store leaves the later one as it was.
    early = fill(FrameStore.empty(2, keep_every=keep_every, spill_dir=tmp_path if spill else None), frames, (4, 4))
    other = early.append(torch.tensor([4, 4]), torch.zeros(2, 4, 3, 4), torch.tensor([2, 2]))
    assert other.num_stored() == [-(-6 // keep_every)] * 2 and store.num_stored() == kept
    assert torch.equal(store.read(0, torch.tensor([4])), frames[0, store.stored_frame(torch.tensor([4]))])
    if keep_every == 1:
        assert torch.equal(other.read(0, torch.tensor([3, 4])), torch.stack([frames[0, 3], torch.zeros(3, 4)]))
    assert store.reset(torch.tensor([True, False])).num_stored() == [0, kept[1]]
    # Rows move between stores; the flat tensor form gives the same features back, in RAM.
    swapped = store.index_select(torch.tensor([1, 0]))
    assert swapped.num_stored() == kept[::-1] and torch.equal(swapped.read(1, query), store.read(0, query))
    loaded = FrameStore.from_state_dict(store.state_dict())
    assert loaded.disk_nbytes == 0 and all(torch.equal(loaded.read(b, query), store.read(b, query)) for b in range(2))
    copied = FrameStore.empty(2, keep_every).index_copy(torch.tensor([1]), store.index_select(torch.tensor([0])))
    assert copied.num_stored() == [0, kept[0]]


def test_spilled_files_go_when_no_state_refers_to_them(tmp_path):
    store = fill(FrameStore.empty(2, spill_dir=tmp_path), torch.randn(2, 10, 3, 4))
    (folder,) = os.listdir(tmp_path)
    assert len(os.listdir(tmp_path / folder)) == 6  # one file per stream and step that kept frames
    kept = store.reset(torch.tensor([True, False]))
    del store
    gc.collect()
    assert len(os.listdir(tmp_path / folder)) == 3 and kept.num_stored() == [0, 9]
    del kept
    gc.collect()
    assert os.listdir(tmp_path) == []
    with pytest.raises(LongvidError, match="keep_every"):
        FrameStore.empty(1, keep_every=0)
    with pytest.raises(LongvidError, match="float32 or float16"):
        FrameStore.empty(1, dtype=torch.bfloat16, spill_dir=tmp_path)
