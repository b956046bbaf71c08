"""MeMViT key/value memory with pipelined compression, as explicit per-stream state.

A MeMViT attention layer caches the pooled, *un-projected* keys and values of every clip
(cls token included) and, at later clips, attends to ``[selected memory ; current]``.
Each entry is compressed once, by the layer's learnable pooling (fK / fV: depthwise
Conv3d + LayerNorm, paper Algorithm 1), *at the step where it is first read*, with
gradient into fK / fV through that step; older entries are the cached compressed form.
Memory is stop-gradient.

Samplers (which past clips a step reads, oldest first, as distances back from the
current clip ``t``):

- ``consecutive`` (the paper's; ``all`` is the released code's name for it): clips
  ``t-M .. t-1``. The entry of ``t-1`` is compressed this step.
- ``gapN`` (the released configs, e.g. ``gap2``): clips ``t-N*M, .., t-2N, t-N``. The
  entry of ``t-N`` is compressed this step (the released code compresses every entry one
  step after it is cached, ``N - 1`` steps before it is first read, so fK/fV never get a
  gradient there; the values read are the same, the step where fK/fV run differs).

Every layer holds ``cache_len = M * N`` past clips: the ``N`` newest raw (uncompressed,
``t-N .. t-1``) plus ``cache_len - N`` compressed ones. Streams that have seen fewer clips since their video
started read fewer: an entry at distance ``d`` is valid iff ``d <= num_seen``. Invalid
entries stay in the tensors (fixed shapes, batchable) and are excluded from the softmax
with ``-inf`` by the attention.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from longvid.errors import LongvidError

_GAP = re.compile(r"gap([1-9][0-9]*)")


def sampler_gap(sampler: str) -> int:
    """The clip spacing N of a sampler name: ``consecutive``/``all`` -> 1, ``gapN`` -> N."""
    if sampler in ("consecutive", "all"):
        return 1
    match = _GAP.fullmatch(sampler)
    if match is None:
        raise LongvidError(f"unknown memory sampler {sampler!r}: use 'consecutive', 'all' or 'gapN' (e.g. 'gap2')")
    return int(match.group(1))


@dataclass(frozen=True)
class KVMemorySpec:
    """How many past clips a layer reads (``memory_len`` M) and which (``sampler``)."""

    memory_len: int
    sampler: str = "consecutive"

    def __post_init__(self) -> None:
        if self.memory_len < 1:
            raise LongvidError(f"memory_len must be >= 1, got {self.memory_len}")
        sampler_gap(self.sampler)

    @property
    def gap(self) -> int:
        return sampler_gap(self.sampler)

    @property
    def cache_len(self) -> int:
        """Past clips a layer keeps: the raw previous one plus ``cache_len - 1`` compressed."""
        return self.memory_len * self.gap

    @property
    def raw_len(self) -> int:
        """Past clips a layer keeps uncompressed (``t-N .. t-1``): the sampler's gap N."""
        return self.gap

    @property
    def compressed_len(self) -> int:
        """Past clips a layer keeps compressed (``t-cache_len+1 .. t-N-1``)."""
        return self.cache_len - self.gap

    @property
    def read_distances(self) -> tuple[int, ...]:
        """Distances back from the current clip of the entries read, oldest first."""
        return tuple(self.gap * (self.memory_len - m) for m in range(self.memory_len))

    @property
    def read_slots(self) -> tuple[int, ...]:
        """Indices of the read entries in ``cat([compressed cache, compressed t-N])``."""
        return tuple(self.cache_len - d for d in self.read_distances)


def memory_valid(spec: KVMemorySpec, num_seen: Tensor, memory_keep: Tensor | None = None) -> Tensor:
    """Which read entries each stream may attend to.

    Args:
        num_seen: (B,) long, clips of the stream's current video already cached.
        memory_keep: optional (B, M) bool, False drops that entry (memory-drop augmentation).
    Returns:
        (B, M) bool, entries oldest first.
    """
    distances = torch.tensor(spec.read_distances, device=num_seen.device)
    valid = distances[None, :] <= num_seen[:, None]  # (B, M)
    if memory_keep is not None:
        if memory_keep.shape != valid.shape:
            raise LongvidError(f"memory_keep must have shape (batch, memory_len) = {tuple(valid.shape)}, got {tuple(memory_keep.shape)}")
        valid = valid & memory_keep.to(device=valid.device, dtype=torch.bool)
    return valid


def compress_tokens(tokens: Tensor, thw: Sequence[int], conv: Callable[[Tensor], Tensor], norm: Callable[[Tensor], Tensor], n_cls: int) -> tuple[Tensor, tuple[int, int, int]]:
    """Pipelined-compression module fK / fV over one cached entry.

    Args:
        tokens: (B, n_cls + T*H*W, C) pooled keys (or values) of one clip, grid ``thw``.
        conv: depthwise Conv3d over the (T, H, W) grid (kernel 7x3x3, stride 4x2x2 as released).
        norm: LayerNorm over C, applied after the cls token is put back (cls is not pooled).
    Returns:
        (B, n_cls + Tc*Hc*Wc, C) and the compressed grid (Tc, Hc, Wc).
    """
    b, _, c = tokens.shape
    cls, grid = tokens[:, :n_cls], tokens[:, n_cls:]
    grid = conv(grid.reshape(b, *thw, c).permute(0, 4, 1, 2, 3))  # channels-last (B, C, T, H, W) -> (B, C, Tc, Hc, Wc)
    thw_c = tuple(grid.shape[2:])
    grid = grid.permute(0, 2, 3, 4, 1).flatten(1, 3)  # (B, Tc*Hc*Wc, C)
    return norm(torch.cat([cls, grid], dim=1)), thw_c


@dataclass
class LayerCache:
    """One attention layer's cached keys (or values) for B streams.

    ``raw``: (B, gap * N, C) the pooled tokens of the ``gap`` newest past clips
        (``t-gap .. t-1``, N tokens each, oldest first), uncompressed.
    ``compressed``: (B, cache_len - gap, Nc, C) older clips, compressed, oldest first.
    """

    raw: Tensor
    compressed: Tensor


def memory_step(cache: LayerCache, current: Tensor, spec: KVMemorySpec, compress: Callable[[Tensor], Tensor]) -> tuple[Tensor, LayerCache]:
    """One step of pipelined compression for keys or values.

    Compresses the raw entry of clip ``t - gap`` (the newest entry the sampler reads,
    read for the first time now) with gradient into ``compress``, selects the entries the
    sampler reads and rolls the cache forward with the current clip.

    Args:
        cache: the layer's cache before this clip.
        current: (B, N, C) this clip's pooled tokens (the attention's own keys/values).
        compress: maps (B, N, C) -> (B, Nc, C), e.g. ``compress_tokens`` bound to fK.
    Returns:
        read: (B, M, Nc, C) entries to attend to, oldest first (the newest carries
            gradient into ``compress``; older ones are stored detached).
        new cache: raw = clips t-gap+1 .. t (``current`` last), compressed = entries
            t-cache_len+1 .. t-gap, all detached.
    """
    b, n, c = current.shape
    raw = cache.raw.view(b, spec.raw_len, n, c)  # (B, gap, N, C), clips t-gap .. t-1
    newest = compress(raw[:, 0])  # (B, Nc, C), compressed clip t-gap
    entries = torch.cat([cache.compressed, newest[:, None]], dim=1)  # (B, cache_len - gap + 1, Nc, C)
    read = entries[:, list(spec.read_slots)]  # (B, M, Nc, C)
    new_raw = torch.cat([raw[:, 1:], current[:, None]], dim=1).flatten(1, 2)  # (B, gap * N, C)
    new_cache = LayerCache(raw=new_raw.detach(), compressed=entries[:, 1:].detach())
    return read, new_cache


@dataclass
class KVMemoryState:
    """Memory of B independent streams for a MeMViT model (a dataclass of tensors).

    Attributes:
        is_first: (B,) bool, True where the next clip starts a new video: that stream's
            memory is masked out (excluded from the softmax) for the clip.
        num_seen: (B,) long, clips of the current video cached (capped at ``cache_len``).
        keys / values: one ``LayerCache`` per memory layer, in model order.

    The model returns a new state each step and stores only detached tensors.
    ``state_dict()`` gives flat names for ``safetensors.torch.save_file``.
    """

    is_first: Tensor
    num_seen: Tensor
    keys: list[LayerCache]
    values: list[LayerCache]

    @property
    def batch_size(self) -> int:
        return self.is_first.shape[0]

    def _map(self, fn: Callable[[Tensor], Tensor]) -> "KVMemoryState":
        caches = [[LayerCache(fn(c.raw), fn(c.compressed)) for c in group] for group in (self.keys, self.values)]
        return KVMemoryState(fn(self.is_first), fn(self.num_seen), caches[0], caches[1])

    def reset(self, mask: Tensor) -> "KVMemoryState":
        """Streams where ``mask`` (B,) is True start a new video: memory zeroed and masked."""
        mask = torch.as_tensor(mask, dtype=torch.bool, device=self.is_first.device)
        if mask.shape != self.is_first.shape:
            raise LongvidError(f"reset mask must have shape {tuple(self.is_first.shape)}, got {tuple(mask.shape)}")

        def clear(x: Tensor) -> Tensor:
            return x.masked_fill(mask.view(-1, *([1] * (x.dim() - 1))), 0)

        state = self._map(clear)
        return dataclasses.replace(state, is_first=self.is_first | mask)

    def index_select(self, index: Tensor) -> "KVMemoryState":
        """The state of streams ``index`` (LongTensor (b,)), in that order."""
        return self._map(lambda x: x.index_select(0, index))

    def index_copy(self, index: Tensor, rows: "KVMemoryState") -> "KVMemoryState":
        """A copy of this state with streams ``index`` replaced by ``rows`` (b streams)."""
        replaced = iter([full.index_copy(0, index, part) for full, part in zip(self._tensors(), rows._tensors())])
        return self._map(lambda _: next(replaced))

    def _tensors(self) -> list[Tensor]:
        """All tensors in ``_map`` order."""
        found: list[Tensor] = []
        self._map(lambda x: found.append(x) or x)
        return found

    @property
    def nbytes(self) -> int:
        """Bytes held by every tensor of the state (all streams)."""
        return sum(t.numel() * t.element_size() for t in self._tensors())

    def detach(self) -> "KVMemoryState":
        """Stop-gradient copy (the model already stores detached memory)."""
        return self._map(Tensor.detach)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "KVMemoryState":
        """Move to ``device``; ``dtype`` applies to the memory tensors (flags keep theirs)."""
        return self._map(lambda x: x.to(device=device, dtype=dtype if x.is_floating_point() else None))

    def state_dict(self) -> dict[str, Tensor]:
        """Flat ``name -> tensor`` (contiguous) for saving with safetensors."""
        out = {"is_first": self.is_first, "num_seen": self.num_seen}
        for name, group in (("keys", self.keys), ("values", self.values)):
            for i, cache in enumerate(group):
                out[f"{name}.{i}.raw"] = cache.raw
                out[f"{name}.{i}.compressed"] = cache.compressed
        return {k: v.contiguous() for k, v in out.items()}

    @classmethod
    def from_state_dict(cls, tensors: dict[str, Tensor]) -> "KVMemoryState":
        layers = sum(1 for k in tensors if k.startswith("keys.") and k.endswith(".raw"))

        def group(name: str) -> list[LayerCache]:
            return [LayerCache(tensors[f"{name}.{i}.raw"], tensors[f"{name}.{i}.compressed"]) for i in range(layers)]

        return cls(tensors["is_first"].bool(), tensors["num_seen"].long(), group("keys"), group("values"))
