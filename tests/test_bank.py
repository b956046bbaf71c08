import math

import pytest
import torch
import torch.nn.functional as F

from longvid.errors import LongvidError
from longvid.malmm.bank import MemoryBank, compress_memory_bank, compress_to_length


def naive_compress(bank, counts):
    """MBC written as explicit loops over streams and token positions."""
    B, S, N, C = bank.shape
    out = torch.zeros(B, S - 1, N, C, dtype=bank.dtype)
    out_counts = torch.zeros(B, S - 1, N, dtype=counts.dtype)
    for b in range(B):
        for n in range(N):
            best, best_k = -math.inf, None
            for k in range(S - 1):
                x, y = bank[b, k, n], bank[b, k + 1, n]
                sim = float((x * y).sum() / (x.norm().clamp_min(1e-8) * y.norm().clamp_min(1e-8)))
                if sim > best:  # strict: the earliest maximum wins
                    best, best_k = sim, k
            j = 0
            for k in range(S):
                if k == best_k + 1:
                    continue
                if k == best_k:
                    s0, s1 = counts[b, k, n], counts[b, k + 1, n]
                    out[b, j, n] = (s0 * bank[b, k, n] + s1 * bank[b, k + 1, n]) / (s0 + s1)
                    out_counts[b, j, n] = s0 + s1
                else:
                    out[b, j, n] = bank[b, k, n]
                    out_counts[b, j, n] = counts[b, k, n]
                j += 1
    return out, out_counts


def test_compress_matches_naive_loop_with_unequal_counts():
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(3, 6, 5, 8, generator=g, dtype=torch.float64)
    counts = torch.randint(1, 5, (3, 6, 5), generator=g).double()
    before = bank.clone(), counts.clone()
    got = compress_memory_bank(bank, counts)
    want = naive_compress(bank, counts)
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1], want[1])
    assert torch.equal(bank, before[0]) and torch.equal(counts, before[1])


def test_compress_exact_ties_pick_the_earliest_pair():
    g = torch.Generator().manual_seed(1)
    a, b, c = torch.randn(3, 4, 7, generator=g, dtype=torch.float64)
    # slots [c, a, b, a, b]: the pairs (1,2), (2,3), (3,4) are exact ties (cos is symmetric)
    bank = torch.stack([c, a, b, a, b], 0).unsqueeze(0)  # (1, 5, 4, 7)
    counts = torch.tensor([1.0, 2.0, 3.0, 1.0, 2.0], dtype=torch.float64).view(1, 5, 1).expand(1, 5, 4).clone()
    got = compress_memory_bank(bank, counts)
    want = naive_compress(bank, counts)
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1], want[1])
    tied = F.cosine_similarity(c, a, dim=-1) < F.cosine_similarity(a, b, dim=-1)  # (4,) positions where a tie wins
    assert tied.any()
    assert torch.all(got[1][0, 1][tied] == 5.0)  # counts 2 + 3: the earliest tied pair (1, 2) merged
    # and an all-identical bank merges slots 0 and 1 everywhere
    same = a.expand(1, 4, 4, 7).clone()
    new, new_counts = compress_memory_bank(same, torch.ones(1, 4, 4, dtype=torch.float64))
    assert new_counts[0, :, 0].tolist() == [2.0, 1.0, 1.0]


def test_positions_merge_independently():
    g = torch.Generator().manual_seed(2)
    bank = torch.randn(2, 4, 6, 3, generator=g, dtype=torch.float64)
    new_bank, new_counts = compress_memory_bank(bank, torch.ones(2, 4, 6, dtype=torch.float64))
    merged_slot = new_counts.argmax(1)  # (2, 6)
    assert len(set(merged_slot.flatten().tolist())) > 1  # different positions chose different pairs
    assert torch.all(new_counts.sum(1) == 4)


def test_compress_to_length_and_bank_state():
    g = torch.Generator().manual_seed(3)
    bank = MemoryBank.empty(2, 3, 4, dtype=torch.float64)
    for t in range(9):
        bank = bank.append(torch.randn(2, 3, 4, generator=g, dtype=torch.float64)).compress_to(4)
        assert bank.num_slots == min(t + 1, 4)
        assert torch.all(bank.counts.sum(1) == t + 1)
    slots, counts = compress_to_length(bank.slots, bank.counts, 2)
    assert slots.shape == (2, 2, 3, 4) and torch.all(counts.sum(1) == 9)


def test_empty_slots_are_dropped_before_real_ones():
    g = torch.Generator().manual_seed(4)
    bank = MemoryBank.empty(2, 3, 4, dtype=torch.float64)
    frames = torch.randn(6, 2, 3, 4, generator=g, dtype=torch.float64)
    for t in range(3):
        bank = bank.append(frames[t]).compress_to(3)
    bank = bank.reset(torch.tensor([False, True]))  # stream 1 starts a new video
    assert bank.slot_mask.tolist() == [[True] * 3, [False] * 3]
    alone = MemoryBank.empty(1, 3, 4, dtype=torch.float64)
    for t in range(3, 6):
        bank = bank.append(frames[t]).compress_to(3)
        alone = alone.append(frames[t, 1:]).compress_to(3)
    assert bank.slot_mask[1].tolist() == [True] * 3
    torch.testing.assert_close(bank.slots[1:], alone.slots, rtol=0, atol=0)
    torch.testing.assert_close(bank.counts[1:], alone.counts)


def test_streams_of_different_lengths_share_a_bank():
    """A stream copied into a bank with more slots gets empty slots in front, then compresses
    exactly as it does alone; an empty bank learns its token count from its first frame."""
    g = torch.Generator().manual_seed(5)
    frames = torch.randn(8, 2, 3, 4, generator=g, dtype=torch.float64)
    batch = MemoryBank.empty(2, 3, 4, dtype=torch.float64)
    for t in range(5):
        batch = batch.append(frames[t]).compress_to(3)
    alone = MemoryBank.empty(1, 0, 4, dtype=torch.float64).append(frames[5, 1:])  # (1, 1, 3, 4)
    joined = batch.index_copy(torch.tensor([1]), alone)
    assert joined.slot_mask.tolist() == [[True] * 3, [False, False, True]]
    assert torch.equal(joined.slots[0], batch.slots[0]) and torch.equal(joined.slots[1, 2], frames[5, 1])
    for t in (6, 7):
        joined, alone = joined.append(frames[t]).compress_to(3), alone.append(frames[t, 1:]).compress_to(3)
    assert torch.equal(joined.slots[1:], alone.slots) and torch.equal(joined.counts[1:], alone.counts)


def test_padding_a_bank():
    bank = MemoryBank.empty(1, 2, 4).append(torch.ones(1, 2, 4)).append(2 * torch.ones(1, 2, 4)).compress_to(1)
    wider = bank.pad_tokens(3)  # a new (masked) position with its slot's frame count
    assert wider.slots.shape == (1, 1, 3, 4) and wider.counts.tolist() == [[[2.0, 2.0, 2.0]]] and not wider.slots[0, 0, 2].any()
    longer = bank.pad_slots(3)
    assert longer.slot_mask.tolist() == [[False, False, True]] and torch.equal(longer.slots[:, 2], bank.slots[:, 0])
    with pytest.raises(LongvidError, match="holds 2 tokens per frame, this frame has 3"):
        bank.append(torch.ones(1, 3, 4))


def test_errors():
    with pytest.raises(LongvidError, match="at least 2"):
        compress_memory_bank(torch.zeros(1, 1, 2, 3), torch.ones(1, 1, 2))
    with pytest.raises(LongvidError, match="counts"):
        compress_memory_bank(torch.zeros(1, 3, 2, 3), torch.ones(1, 3))
