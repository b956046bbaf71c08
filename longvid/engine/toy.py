"""A tiny recurrent memory model that follows the memory-model contract.

It exists to exercise the engine without a real backbone (tests, the CLI's
``toy`` model, the speed benchmark's baseline): ``out, state = model(clip, state,
memory_keep=keep)`` with a memory of the last ``memory_len`` clip embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ToyState:
    """memory ``(B, M, D)`` oldest first; filled bool ``(B, M)``."""

    memory: torch.Tensor
    filled: torch.Tensor

    def reset(self, mask: torch.Tensor) -> "ToyState":
        """Empty the memory of the streams where ``mask`` (B,) is True."""
        keep = ~mask.view(-1, 1)
        return ToyState(self.memory * keep.unsqueeze(2).to(self.memory.dtype), self.filled & keep)

    def detach(self) -> "ToyState":
        return ToyState(self.memory.detach(), self.filled)


class ToyMemoryModel(nn.Module):
    """Pooled clip -> embedding; logits from the embedding and the mean kept memory.

    Like MeMViT's pipelined compression, the memory stores the newest step raw and
    compresses it at the next call (inside that call's graph), so the compression
    is trained while the stored memory itself is detached by the engine.
    """

    def __init__(self, in_channels: int = 3, dim: int = 16, num_classes: int = 4, memory_len: int = 3):
        super().__init__()
        self.memory_len = memory_len
        self.dim = dim
        self.embed = nn.Linear(in_channels, dim)
        self.compress = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(2 * dim, num_classes)

    def init_state(self, batch_size: int, device=None, dtype=None) -> ToyState:
        memory = torch.zeros(batch_size, self.memory_len, self.dim, device=device, dtype=dtype or torch.float32)
        return ToyState(memory, torch.zeros(batch_size, self.memory_len, dtype=torch.bool, device=device))

    def forward(self, clip: torch.Tensor, state: ToyState, memory_keep: torch.Tensor | None = None):
        x = self.norm(self.embed(clip.mean(dim=(2, 3, 4))))  # (B, D)
        newest = torch.tanh(self.compress(state.memory[:, -1]))  # (B, D) compress the previous clip's raw entry
        memory = torch.cat([state.memory[:, :-1], newest.unsqueeze(1)], dim=1)  # (B, M, D), all compressed
        keep = state.filled if memory_keep is None else state.filled & memory_keep  # (B, M)
        weights = keep.to(x.dtype).unsqueeze(2)  # (B, M, 1)
        read = (memory * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, D)
        out = self.head(torch.cat([x, read], dim=1))  # (B, K)
        memory = torch.cat([memory[:, 1:], x.unsqueeze(1)], dim=1)  # drop the oldest, append this clip raw
        filled = torch.cat([state.filled[:, 1:], torch.ones_like(state.filled[:, :1])], dim=1)
        return out, ToyState(memory, filled)
