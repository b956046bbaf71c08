"""MA-LMM memory banks and memory bank compression (MBC).

A memory bank stores one slot per past frame (or per run of merged frames): ``slots``
``(B, S, N, C)`` holds N tokens of width C per slot, ``counts`` ``(B, S, N)`` how many
original frames were averaged into each slot at each token position. When a bank holds
more than L slots, :func:`compress_memory_bank` merges, independently at every token
position, the most similar pair of temporally adjacent slots into their count-weighted
mean, so the bank shrinks by exactly one slot.

Streams of one batch may be at different points of their videos: a slot whose count is
0 is empty padding. Empty slots always sit at the front (oldest end) of a stream's bank
(a reset empties every slot, new frames are appended at the end), and compression drops
an empty slot before it merges real ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from longvid.errors import LongvidError


def compress_memory_bank(bank: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One memory-bank-compression step: merge the most similar adjacent slots per position.

    For every stream b and token position n independently: ``sim[k] = cos(bank[b, k, n],
    bank[b, k+1, n])`` over channels (``F.cosine_similarity`` semantics) for k = 0..S-2;
    ``k* = argmax sim`` (ties: the smallest k); slots k* and k*+1 become their mean weighted
    by ``counts``, with count ``counts[k*] + counts[k*+1]``; later slots shift left by one.
    Pairs whose left slot is empty (count 0) rank above every real pair, so empty padding
    is dropped first. Unmerged slots are copied exactly. Inputs are not modified.

    Args:
        bank: ``(B, S, N, C)`` slots, S >= 2.
        counts: ``(B, S, N)`` frames per slot and position (0 = empty slot).

    Returns:
        ``(bank, counts)`` shaped ``(B, S-1, N, C)`` and ``(B, S-1, N)``.
    """
    if bank.dim() != 4 or counts.shape != bank.shape[:3]:
        raise LongvidError(f"memory bank must be (B, S, N, C) with counts (B, S, N), got {tuple(bank.shape)} and {tuple(counts.shape)}")
    B, S, N, C = bank.shape
    if S < 2:
        raise LongvidError(f"cannot compress a memory bank of {S} slot(s); it needs at least 2")
    similarity = F.cosine_similarity(bank[:, :-1], bank[:, 1:], dim=-1)  # (B, S-1, N)
    similarity = similarity.masked_fill(counts[:, :-1] == 0, float("inf"))
    merge_at = similarity.argmax(dim=1, keepdim=True)  # (B, 1, N), first maximum on ties

    slot = torch.arange(S - 1, device=bank.device).view(1, S - 1, 1)
    source = slot + (slot > merge_at).long()  # (B, S-1, N): output slot j copies input slot source[j]
    new_counts = counts.gather(1, source)
    new_bank = bank.gather(1, source.unsqueeze(-1).expand(B, S - 1, N, C))

    left = bank.gather(1, merge_at.unsqueeze(-1).expand(B, 1, N, C))  # (B, 1, N, C)
    right = bank.gather(1, (merge_at + 1).unsqueeze(-1).expand(B, 1, N, C))
    left_count, right_count = counts.gather(1, merge_at), counts.gather(1, merge_at + 1)  # (B, 1, N)
    total = left_count + right_count
    merged = (left * left_count.unsqueeze(-1) + right * right_count.unsqueeze(-1)) / total.clamp_min(1).unsqueeze(-1)
    merged = torch.where((left_count == 0).unsqueeze(-1), right, merged)  # dropping an empty slot keeps its neighbour

    is_merged = slot == merge_at  # (B, S-1, N)
    new_bank = torch.where(is_merged.unsqueeze(-1), merged, new_bank)
    new_counts = torch.where(is_merged, total, new_counts)
    return new_bank, new_counts


def compress_to_length(bank: torch.Tensor, counts: torch.Tensor, max_slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply :func:`compress_memory_bank` until the bank holds at most ``max_slots`` slots.

    Shapes as in :func:`compress_memory_bank`; returns ``(B, min(S, max_slots), N, C)``.
    """
    if max_slots < 1:
        raise LongvidError(f"memory bank length must be >= 1, got {max_slots}")
    while bank.shape[1] > max_slots:
        bank, counts = compress_memory_bank(bank, counts)
    return bank, counts


@dataclass(frozen=True, eq=False)  # tensors: compare them, not states
class MemoryBank:
    """One memory bank for B streams: ``slots`` ``(B, S, N, C)`` and ``counts`` ``(B, S, N)``.

    ``counts[b, s, n]`` is the number of original frames averaged into ``slots[b, s, n]``;
    0 marks an empty slot (a stream that has seen fewer frames than the batch's bank
    holds; empty slots sit at the front). A bank with no slots may not know its token
    count yet (N = 0): the first frame appended sets it. Methods return new banks and
    never modify tensors in place.
    """

    slots: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def empty(cls, batch: int, tokens: int, channels: int, device=None, dtype=torch.float32) -> "MemoryBank":
        """A bank with no slots: ``(batch, 0, tokens, channels)``."""
        return cls(
            torch.zeros(batch, 0, tokens, channels, device=device, dtype=dtype),
            torch.zeros(batch, 0, tokens, device=device, dtype=dtype),
        )

    @property
    def num_slots(self) -> int:
        return self.slots.shape[1]

    @property
    def num_tokens(self) -> int:
        return self.slots.shape[2]

    @property
    def slot_mask(self) -> torch.Tensor:
        """``(B, S)`` bool: True where the slot holds at least one frame."""
        return self.counts.sum(-1) > 0

    def with_tokens(self, tokens: int) -> "MemoryBank":
        """This bank for frames of ``tokens`` tokens: an empty bank takes any count, a filled one must match."""
        if tokens == self.num_tokens:
            return self
        if self.num_slots:
            raise LongvidError(f"the memory bank holds {self.num_tokens} tokens per frame, this frame has {tokens}: "
                               f"keep the encoder (and the instruction length) fixed within a stream")
        return MemoryBank.empty(self.slots.shape[0], tokens, self.slots.shape[3], self.slots.device, self.slots.dtype)

    def append(self, frame: torch.Tensor) -> "MemoryBank":
        """Add ``frame`` ``(B, N, C)`` as the newest slot with count 1 (stored as given)."""
        bank = self.with_tokens(frame.shape[1])
        if frame.shape[0] != bank.slots.shape[0] or frame.shape[2] != bank.slots.shape[3]:
            raise LongvidError(f"cannot append tokens {tuple(frame.shape)} to a memory bank of slots {tuple(bank.slots.shape)}")
        ones = torch.ones(frame.shape[:2], device=frame.device, dtype=bank.counts.dtype)
        return MemoryBank(torch.cat([bank.slots, frame.unsqueeze(1)], 1), torch.cat([bank.counts, ones.unsqueeze(1)], 1))

    def reset(self, mask: torch.Tensor) -> "MemoryBank":
        """Empty every slot of the streams where ``mask`` ``(B,)`` is True."""
        mask = mask.to(self.slots.device).bool()
        return MemoryBank(self.slots.masked_fill(mask.view(-1, 1, 1, 1), 0), self.counts.masked_fill(mask.view(-1, 1, 1), 0))

    def compress_to(self, max_slots: int) -> "MemoryBank":
        """Compress (one merge per surplus slot) to at most ``max_slots`` slots."""
        return MemoryBank(*compress_to_length(self.slots, self.counts, max_slots))

    def pad_slots(self, num_slots: int) -> "MemoryBank":
        """``num_slots`` slots (>= S): empty ones added at the front (the oldest end)."""
        extra = num_slots - self.num_slots
        return MemoryBank(F.pad(self.slots, (0, 0, 0, 0, extra, 0)), F.pad(self.counts, (0, 0, extra, 0)))

    def pad_tokens(self, tokens: int) -> "MemoryBank":
        """``tokens`` token positions (>= N): new positions at the end, zero, with their slot's counts."""
        extra = tokens - self.num_tokens
        counts = torch.cat([self.counts, self.counts[..., :1].expand(-1, -1, extra)], 2) if self.num_tokens else self.counts.new_zeros(*self.counts.shape[:2], tokens)
        return MemoryBank(F.pad(self.slots, (0, 0, 0, extra)), counts)

    def index_copy(self, index: torch.Tensor, rows: "MemoryBank") -> "MemoryBank":
        """A bank with streams ``index`` replaced by ``rows``; the shorter bank gets empty slots at the front."""
        full = self.with_tokens(rows.num_tokens) if self.num_slots == 0 else self
        rows = rows.with_tokens(full.num_tokens)
        S = max(full.num_slots, rows.num_slots)
        full, rows = full.pad_slots(S), rows.pad_slots(S)
        return MemoryBank(full.slots.index_copy(0, index, rows.slots), full.counts.index_copy(0, index, rows.counts))

    def map(self, fn) -> "MemoryBank":
        """``fn`` applied to the slots and the counts."""
        return MemoryBank(fn(self.slots), fn(self.counts))
