"""Parity with the official MA-LMM implementation on the tiny reference model (malmm_tiny)."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from longvid.errors import LongvidError
from longvid.malmm import QFormer, QFormerConfig, SparseMemoryConfig, load_qformer_state_dict

torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared machine

REF = os.environ.get("LONGVID_REFERENCE", "/work/shared/reference") + "/malmm_tiny/qformer_memory_ref.npz"
needs_ref = pytest.mark.skipif(not os.path.exists(REF), reason="malmm_tiny reference not available")


def tiny_config(memory_bank_length: int, **overrides) -> QFormerConfig:
    return QFormerConfig(
        hidden_size=64, num_layers=4, num_heads=4, intermediate_size=128, cross_attention_freq=2,
        encoder_width=48, num_query_tokens=8, vocab_size=120, max_position_embeddings=64,
        memory_bank_length=memory_bank_length, **overrides,
    )


@pytest.fixture(scope="module")
def ref():
    data = np.load(REF)
    params = {k[len("param::"):]: torch.from_numpy(data[k]) for k in data.files if k.startswith("param::")}
    return data, params


def run_reference_case(data, params, case: str, memory_bank_length: int):
    qformer = QFormer(tiny_config(memory_bank_length)).eval()
    load_qformer_state_dict(qformer, params)
    frames = torch.from_numpy(data[f"{case}::frames"])  # (B, T, Nv, Cv) before ln_vision
    ids = torch.from_numpy(data[f"{case}::qformer_input_ids"])
    mask = torch.from_numpy(data[f"{case}::qformer_attention_mask"])
    memory, outputs = None, []
    with torch.no_grad():
        for t in range(frames.shape[1]):
            tokens = F.layer_norm(frames[:, t], (48,), params["ln_vision.weight"], params["ln_vision.bias"], eps=1e-5)
            tokens = tokens + params["image_pe.weight"][t]
            hidden, memory = qformer(tokens, ids, mask, memory)
            outputs.append(hidden)
    return torch.stack(outputs), memory


@needs_ref
@pytest.mark.parametrize("case, length", [("A", 5), ("B", 5), ("C", 1)])
def test_matches_official_per_frame_outputs_and_llm_inputs(ref, case, length):
    data, params = ref
    outputs, memory = run_reference_case(data, params, case, length)
    want = torch.from_numpy(data[f"{case}::per_frame_last_hidden"])  # (T, B, Q + Lt, H)
    torch.testing.assert_close(outputs, want, rtol=0, atol=1e-4)
    visual = F.linear(outputs[-1][:, :8], params["llm_proj.weight"], params["llm_proj.bias"])  # (B, Q, D)
    prompt = F.embedding(torch.from_numpy(data[f"{case}::llm_prompt_ids"]), params["llm_embed.weight"])
    torch.testing.assert_close(torch.cat([visual, prompt], 1), torch.from_numpy(data[f"{case}::llm_inputs_embeds"]), rtol=0, atol=1e-4)
    T = outputs.shape[0]
    assert memory.visual.num_slots == min(T, length)
    assert all(bank.num_slots == min(T, length) for bank in memory.query)
    assert torch.all(memory.visual.counts.sum(1) == T)


@needs_ref
def test_reference_meta_is_what_the_test_assumes(ref):
    meta = json.loads(str(ref[0]["meta_json"]))
    cfg = meta["config"]
    assert (cfg["hidden"], cfg["layers"], cfg["num_query_token"], cfg["encoder_width"]) == (64, 4, 8, 48)


def test_no_memory_frames_are_independent():
    torch.manual_seed(0)
    qformer = QFormer(tiny_config(0)).eval()
    frames = torch.randn(3, 10, 48)
    ids = torch.randint(1, 120, (3, 5))
    together, memory = qformer(frames, ids)
    alone, _ = qformer(frames[1:2], ids[1:2])
    assert memory is None and together.shape == (3, 13, 64)
    torch.testing.assert_close(together[1:2], alone, rtol=0, atol=1e-5)


def test_padding_and_streams_do_not_leak():
    """Changing one stream's frames or its padded text positions leaves the other stream unchanged."""
    torch.manual_seed(0)
    qformer = QFormer(tiny_config(2)).eval()
    frames = torch.randn(5, 2, 10, 48)
    ids = torch.randint(1, 120, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    other = frames.clone()
    other[:, 1] = torch.randn(5, 10, 48)
    ids2 = ids.clone()
    ids2[0, 4:] = 7  # padding content must not matter
    with torch.no_grad():
        memory_a = memory_b = None
        for t in range(5):
            out_a, memory_a = qformer(frames[t], ids, mask, memory_a)
            out_b, memory_b = qformer(other[t], ids2, mask, memory_b)
            torch.testing.assert_close(out_a[0, :12], out_b[0, :12], rtol=0, atol=1e-5)
            assert not torch.allclose(out_a[1], out_b[1])


def run_frames(qformer, frames, ids, mask=None):
    memory, outputs = None, []
    with torch.no_grad():
        for t in range(frames.shape[0]):
            out, memory = qformer(frames[t], ids, mask, memory)
            outputs.append(out)
    return torch.stack(outputs), memory


def test_sparse_variant_reduces_to_dense_memory_attention_when_nothing_is_dropped():
    """Blocks of one slot, every block selected, a window over the whole memory and gates of
    1/3 each: all three branches equal dense memory attention, so the outputs must too."""
    torch.manual_seed(0)
    dense = QFormer(tiny_config(3)).eval()
    sparse = QFormer(tiny_config(3, sparse=SparseMemoryConfig(block_slots=1, top_blocks=3, window_slots=3))).eval()
    sparse.load_state_dict(dense.state_dict(), strict=False)
    assert all(layer.attention.gate.bias.eq(-np.log(2.0)).all() for layer in sparse.layers)  # gates start at 1/3
    frames = torch.randn(6, 2, 10, 48)
    ids = torch.randint(1, 120, (2, 4))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    want, _ = run_frames(dense, frames, ids, mask)
    got, _ = run_frames(sparse, frames, ids, mask)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_sparse_variant_differs_when_it_drops_memory_and_stays_bounded():
    torch.manual_seed(0)
    cfg = tiny_config(4, sparse=SparseMemoryConfig(block_slots=2, top_blocks=1, window_slots=1))
    sparse = QFormer(cfg).eval()
    dense = QFormer(tiny_config(4)).eval()
    dense.load_state_dict(sparse.state_dict(), strict=False)
    for layer in sparse.layers:
        torch.nn.init.constant_(layer.attention.gate.bias, -np.log(2.0))
    frames = torch.randn(7, 2, 10, 48)
    ids = torch.randint(1, 120, (2, 3))
    got, memory = run_frames(sparse, frames, ids)
    want, _ = run_frames(dense, frames, ids)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-5)  # empty memory: identical
    assert not torch.allclose(got[-1], want[-1], atol=1e-3)
    assert all(bank.num_slots == 4 for bank in memory.query)


def test_load_rejects_wrong_shapes():
    qformer = QFormer(tiny_config(0))
    with pytest.raises(LongvidError, match="lacks"):
        load_qformer_state_dict(qformer, {"query_tokens": torch.zeros(1, 8, 64)})


def test_sparse_attention_covers_the_visual_memory():
    """With ``visual`` sparse only, the cross-attention layers read the visual bank through the gated
    branches (the self-attention stays dense): identical to dense on the first frame, different once
    blocks are dropped, and the visual bank stays at L slots."""
    from longvid.malmm.qformer import SparseMemoryAttention

    torch.manual_seed(0)
    cfg = tiny_config(4, sparse=SparseMemoryConfig(block_slots=2, top_blocks=1, window_slots=1, query=False))
    sparse = QFormer(cfg).eval()
    assert all(isinstance(layer.crossattention, SparseMemoryAttention) for layer in sparse.layers[::2])
    assert not any(isinstance(layer.attention, SparseMemoryAttention) for layer in sparse.layers)
    dense = QFormer(tiny_config(4)).eval()
    dense.load_state_dict(sparse.state_dict(), strict=False)
    frames = torch.randn(7, 2, 10, 48)
    ids = torch.randint(1, 120, (2, 3))
    got, memory = run_frames(sparse, frames, ids)
    want, _ = run_frames(dense, frames, ids)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-5)
    assert not torch.allclose(got[-1], want[-1], atol=1e-3)
    assert memory.visual.num_slots == 4


def naive_sparse_attention(att, hidden, now, now_mask, slots, counts):
    """SparseMemoryAttention by loops over streams, heads and query positions (the module's own weights)."""
    sp, heads = att.sparse, att.self.num_heads
    B, N, H = hidden.shape
    S, M, d = slots.shape[1], now.shape[1], H // heads
    lin = lambda layer, x: x @ layer.weight.T + layer.bias  # noqa: E731
    context = torch.zeros(B, N, H)
    for b in range(B):
        q, k_now, v_now = lin(att.self.query, hidden[b]), lin(att.self.key, now[b]), lin(att.self.value, now[b])  # (N, H), (M, H)
        k_mem, v_mem = lin(att.self.key, slots[b]), lin(att.self.value, slots[b])  # (S, M, H)
        slot_ok = [bool(counts[b, s].sum() > 0) for s in range(S)]
        tok_ok = [bool(now_mask[b, m]) for m in range(M)]
        pad = (-S) % sp.block_slots
        blocks = [[p - pad for p in range(j * sp.block_slots, (j + 1) * sp.block_slots)] for j in range((S + pad) // sp.block_slots)]
        gates = torch.sigmoid(lin(att.gate, hidden[b]))  # (N, 3 * heads)

        def attend(qv, keys, values):  # lists of (d,) tensors
            scores = torch.stack([qv @ k for k in keys]) / d**0.5
            return scores.softmax(0), sum(p * v for p, v in zip(scores.softmax(0), values))

        block_mass = torch.zeros(N, len(blocks))
        branches = torch.zeros(3, heads, N, d)
        for h in range(heads):
            cut = slice(h * d, (h + 1) * d)
            for n in range(N):
                keys, values, owner = [], [], []
                for j, block in enumerate(blocks):
                    for m in range(M):
                        if tok_ok[m] and any(0 <= s and slot_ok[s] for s in block):
                            pooled = [(i, s) for i, s in enumerate(block) if s >= 0 and slot_ok[s]]
                            keys.append(sum(att.block_pool[0, i] * k_mem[s, m, cut] for i, s in pooled))
                            values.append(sum(att.block_pool[1, i] * v_mem[s, m, cut] for i, s in pooled))
                            owner.append(j)
                keys += [k_now[m, cut] for m in range(M) if tok_ok[m]]
                values += [v_now[m, cut] for m in range(M) if tok_ok[m]]
                probs, branches[0, h, n] = attend(q[n, cut], keys, values)
                for p, j in zip(probs, owner):
                    block_mass[n, j] += p
        for n in range(N):
            top = block_mass[n].topk(min(sp.top_blocks, len(blocks))).indices.tolist()
            chosen = {s for j in top for s in blocks[j] if s >= 0}
            window = set(range(max(0, S - sp.window_slots), S))
            for h in range(heads):
                cut = slice(h * d, (h + 1) * d)
                for branch, kept in ((1, chosen), (2, window)):
                    pairs = [(s, m) for s in sorted(kept) for m in range(M) if slot_ok[s] and tok_ok[m]]
                    keys = [k_mem[s, m, cut] for s, m in pairs] + [k_now[m, cut] for m in range(M) if tok_ok[m]]
                    values = [v_mem[s, m, cut] for s, m in pairs] + [v_now[m, cut] for m in range(M) if tok_ok[m]]
                    branches[branch, h, n] = attend(q[n, cut], keys, values)[1]
        for n in range(N):
            for h in range(heads):
                mix = sum(gates[n, branch * heads + h] * branches[branch, h, n] for branch in range(3))
                context[b, n, h * d : (h + 1) * d] = mix
    return att.output(context, hidden)


@pytest.mark.parametrize("kv_width, masked", [(64, True), (48, False)])  # query-memory self-attention / visual cross-attention
def test_sparse_attention_equals_a_naive_loop(kv_width, masked):
    from longvid.malmm.bank import MemoryBank
    from longvid.malmm.qformer import SparseMemoryAttention

    torch.manual_seed(0)
    att = SparseMemoryAttention(tiny_config(5), SparseMemoryConfig(block_slots=2, top_blocks=1, window_slots=2), kv_width).eval()
    with torch.no_grad():
        att.block_pool.copy_(torch.rand(2, 2) + 0.2)
        att.gate.weight.normal_(0, 0.3)
    B, N, M, S = 2, 3, 4, 5
    hidden = torch.randn(B, N, 64)
    now = hidden if kv_width == 64 else torch.randn(B, M, kv_width)
    M = now.shape[1]
    now_mask = torch.tensor([[True] * M, [True] * (M - 1) + [False]]) if masked else torch.ones(B, M, dtype=torch.bool)
    counts = torch.ones(B, S, M)
    counts[1, :2] = 0  # stream 1 has seen 3 frames: two empty slots in front
    slots = torch.randn(B, S, M, kv_width) * (counts[..., None] > 0)
    with torch.no_grad():
        got = att.forward_with_memory(hidden, now, now_mask if masked else None, MemoryBank(slots, counts))
        want = naive_sparse_attention(att, hidden, now, now_mask, slots, counts)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
