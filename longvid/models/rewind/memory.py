"""ReWind's read-perceive-write memory and the feature buffer of original frame features.

For each sub-clip of ``F`` frames (``B`` streams at once):

* **read**: ``N_R`` learned read queries cross-attend to the stream's memory ``M``
  (a summary of what is stored so far; the queries themselves while ``M`` is empty);
* **perceive**: for every frame, a Perceiver whose initial latents are that summary
  cross-attends to the frame's ViT features and the instruction's text encoding,
  then self-attends; then the latents self-attend along time over the sub-clip;
* **write**: ``N_W`` learned write queries cross-attend to each frame's latents,
  giving ``N_W`` tokens per frame, appended to ``M`` in temporal order.

The memory is explicit per-stream state (:class:`RewindState`): the module keeps no
tensors between calls. With ``causal_time`` (the default) a frame's tokens depend
only on that frame and earlier ones, so the memory of the first ``n`` frames is the
same whether or not later frames were fed: a question asked at time ``t``
(breakpoint mode) sees exactly what an online viewer had seen at ``t``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from longvid.errors import LongvidError


@dataclass(frozen=True)
class RewindMemoryConfig:
    """Sizes of the read-perceive-write memory."""

    dim: int = 768  # memory / Perceiver width D
    vision_dim: int = 1408  # ViT feature width D_v (EVA-CLIP ViT-g)
    text_dim: int = 4096  # instruction encoding width D_t (the LLM's embeddings)
    num_read: int = 32  # N_R read queries = Perceiver latents
    num_write: int = 2  # N_W tokens written per frame
    num_heads: int = 12
    perceiver_layers: int = 2
    mlp_ratio: float = 4.0
    max_clip_frames: int = 64  # sub-clip length F the temporal positions cover
    causal_time: bool = True  # temporal self-attention sees only earlier frames of the sub-clip


@dataclass
class RewindState:
    """One batch of streams' memory.

    tokens:      ``(B, N_W * max_frames, D)`` memory tokens, frame-major: frame ``f`` of
                 stream ``b`` owns rows ``N_W*f .. N_W*f + N_W - 1``; rows past
                 ``N_W * num_frames[b]`` are padding (zeros).
    num_frames:  ``(B,)`` long, frames written per stream.
    timestamps:  ``(B, max_frames)`` float64 seconds of each written frame (0 past the end).
    num_write:   ``N_W``, tokens per frame.
    """

    tokens: torch.Tensor
    num_frames: torch.Tensor
    timestamps: torch.Tensor
    num_write: int

    @property
    def lengths(self) -> torch.Tensor:
        """``(B,)`` valid memory tokens per stream."""
        return self.num_frames * self.num_write

    @property
    def valid(self) -> torch.Tensor:
        """``(B, N_W * max_frames)`` bool, True for written memory tokens."""
        positions = torch.arange(self.tokens.shape[1], device=self.tokens.device)
        return positions[None, :] < self.lengths[:, None]

    def frame_tokens(self, stream: int, until: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One stream's memory as ``(n, N_W, D)`` tokens and ``(n,)`` timestamps.

        ``until``: keep only frames with timestamp ``<= until`` (breakpoint mode).
        """
        count = int(self.num_frames[stream])
        times = self.timestamps[stream, :count]
        if until is not None:
            count = int((times <= until + 1e-9).sum())
            times = times[:count]
        tokens = self.tokens[stream, : count * self.num_write].reshape(count, self.num_write, -1)
        return tokens, times

    def reset(self, is_first: torch.Tensor) -> "RewindState":
        """A new state with the streams flagged in ``is_first (B,)`` emptied."""
        keep = ~is_first.to(torch.bool)
        return RewindState(
            tokens=self.tokens * keep[:, None, None],
            num_frames=self.num_frames * keep,
            timestamps=self.timestamps * keep[:, None],
            num_write=self.num_write,
        )

    def nbytes(self) -> int:
        return sum(t.element_size() * t.numel() for t in (self.tokens, self.num_frames, self.timestamps))


# -- attention blocks ------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention of ``x (N, Lq, D)`` over ``context (N, Lk, D)``.

    ``mask (N, Lq, Lk)`` or ``(N, 1, Lk)`` bool, True where a query may attend. A query
    with no key to attend to (empty memory) gets zero attention before the output
    projection, the same whether its context is empty or fully masked.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise LongvidError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n, lq, dim = x.shape
        if context.shape[1] == 0:
            return self.out(x.new_zeros(n, lq, dim))
        heads = self.num_heads
        q = self.q(x).reshape(n, lq, heads, -1).transpose(1, 2)  # (N, h, Lq, d)
        k, v = self.kv(context).reshape(n, context.shape[1], 2, heads, -1).permute(2, 0, 3, 1, 4)  # (N, h, Lk, d)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            mask = mask.expand(n, lq, context.shape[1])
            has_key = mask.any(dim=-1)  # (N, Lq)
            safe = mask | ~has_key[..., None]  # rows without keys attend anywhere, then are zeroed
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe[:, None])
            out = out * has_key[:, None, :, None]
        return self.out(out.transpose(1, 2).reshape(n, lq, dim))


class Block(nn.Module):
    """Pre-norm attention (cross when ``context`` is given, else self) + MLP, residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm_x = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm_x(x)
        x = x + self.attn(h, h if context is None else self.norm_context(context), mask)
        return x + self.mlp(self.norm_mlp(x))


# -- the memory ------------------------------------------------------------------------


class RewindMemory(nn.Module):
    """Read-perceive-write memory: ``tokens, state = memory(frames, text, text_mask, times, state)``."""

    def __init__(self, config: RewindMemoryConfig):
        super().__init__()
        self.config = config
        dim = config.dim
        self.read_queries = nn.Parameter(torch.randn(config.num_read, dim) * 0.02)
        self.write_queries = nn.Parameter(torch.randn(config.num_write, dim) * 0.02)
        self.vision_proj = nn.Linear(config.vision_dim, dim)
        self.text_proj = nn.Linear(config.text_dim, dim)
        self.time_embed = nn.Parameter(torch.zeros(config.max_clip_frames, dim))
        self.read = Block(dim, config.num_heads, config.mlp_ratio)
        self.perceive_cross = nn.ModuleList(Block(dim, config.num_heads, config.mlp_ratio) for _ in range(config.perceiver_layers))
        self.perceive_self = nn.ModuleList(Block(dim, config.num_heads, config.mlp_ratio) for _ in range(config.perceiver_layers))
        self.temporal = Block(dim, config.num_heads, config.mlp_ratio)
        self.write = Block(dim, config.num_heads, config.mlp_ratio)
        self.norm = nn.LayerNorm(dim)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> RewindState:
        """Empty memory for ``batch_size`` streams."""
        device = device if device is not None else self.read_queries.device
        return RewindState(
            tokens=torch.zeros(batch_size, 0, self.config.dim, device=device, dtype=self.read_queries.dtype),
            num_frames=torch.zeros(batch_size, dtype=torch.long, device=device),
            timestamps=torch.zeros(batch_size, 0, dtype=torch.float64, device=device),
            num_write=self.config.num_write,
        )

    def forward(
        self,
        frames: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor | None,
        timestamps: torch.Tensor,
        state: RewindState | None = None,
        num_valid: torch.Tensor | None = None,
        is_first: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, RewindState]:
        """Process one sub-clip per stream.

        Args:
            frames: ``(B, F, P, D_v)`` ViT features of each frame's ``P`` patches.
            text: ``(B, L_t, D_t)`` instruction encoding; ``text_mask (B, L_t)`` bool (True = token).
            timestamps: ``(B, F)`` seconds of each frame.
            state: the streams' memory (None: empty).
            num_valid: ``(B,)`` real frames per stream (a prefix; the rest is padding).
            is_first: ``(B,)`` bool, streams whose memory is emptied before this sub-clip.

        Returns the written tokens ``(B, F, N_W, D)`` and the new state.
        """
        batch, num_clip, _, _ = frames.shape
        if num_clip > self.config.max_clip_frames:
            raise LongvidError(f"sub-clip of {num_clip} frames is longer than max_clip_frames={self.config.max_clip_frames}")
        state = self.init_state(batch, frames.device) if state is None else state
        if is_first is not None:
            state = state.reset(is_first)
        if num_valid is None:
            num_valid = torch.full((batch,), num_clip, dtype=torch.long, device=frames.device)
        summary = self._read(state)  # (B, N_R, D)
        latents = self._perceive(frames, text, text_mask, summary, num_valid)  # (B, F, N_R, D)
        written = self._write(latents)  # (B, F, N_W, D)
        return written, self._append(state, written, timestamps, num_valid)

    def _read(self, state: RewindState) -> torch.Tensor:
        queries = self.read_queries.expand(state.tokens.shape[0], -1, -1)  # (B, N_R, D)
        return self.read(queries, state.tokens, state.valid[:, None, :])

    def _perceive(self, frames, text, text_mask, summary, num_valid) -> torch.Tensor:
        batch, num_clip, num_patches, _ = frames.shape
        visual = self.vision_proj(frames).flatten(0, 1)  # (B*F, P, D)
        words = self.text_proj(text).repeat_interleave(num_clip, dim=0)  # (B*F, L_t, D)
        context = torch.cat([visual, words], dim=1)  # (B*F, P + L_t, D)
        if text_mask is None:
            text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        patch_mask = torch.ones(batch * num_clip, num_patches, dtype=torch.bool, device=frames.device)
        context_mask = torch.cat([patch_mask, text_mask.repeat_interleave(num_clip, dim=0)], dim=1)[:, None, :]
        latents = summary.repeat_interleave(num_clip, dim=0)  # (B*F, N_R, D)
        for cross, self_attn in zip(self.perceive_cross, self.perceive_self):
            latents = cross(latents, context, context_mask)
            latents = self_attn(latents)
        # Self-attention along time: each latent slot attends over the sub-clip's frames.
        latents = latents.reshape(batch, num_clip, -1, latents.shape[-1]) + self.time_embed[:num_clip, None]
        num_read = latents.shape[2]
        sequence = latents.transpose(1, 2).flatten(0, 1)  # (B*N_R, F, D)
        sequence = self.temporal(sequence, mask=self._time_mask(num_valid, num_clip).repeat_interleave(num_read, dim=0))
        return sequence.reshape(batch, num_read, num_clip, -1).transpose(1, 2)  # (B, F, N_R, D)

    def _time_mask(self, num_valid: torch.Tensor, num_clip: int) -> torch.Tensor:
        """``(B, F, F)`` bool: query frame ``i`` may attend to key frame ``j``."""
        frame = torch.arange(num_clip, device=num_valid.device)
        mask = (frame[None, :] < num_valid[:, None])[:, None, :].expand(-1, num_clip, -1)  # real key frames
        if self.config.causal_time:
            mask = mask & (frame[None, :] <= frame[:, None])[None]
        return mask

    def _write(self, latents: torch.Tensor) -> torch.Tensor:
        batch, num_clip, num_read, dim = latents.shape
        queries = self.write_queries.expand(batch * num_clip, -1, -1)  # (B*F, N_W, D)
        written = self.write(queries, latents.reshape(batch * num_clip, num_read, dim))
        return self.norm(written).reshape(batch, num_clip, -1, dim)  # (B, F, N_W, D)

    @staticmethod
    def _append(state: RewindState, written: torch.Tensor, timestamps: torch.Tensor, num_valid: torch.Tensor) -> RewindState:
        """Copy of ``state`` with each stream's first ``num_valid`` frames of ``written`` appended."""
        batch, num_clip, num_write, dim = written.shape
        num_frames = state.num_frames + num_valid  # (B,)
        max_frames = max(int(num_frames.max()), state.timestamps.shape[1])
        tokens = written.new_zeros(batch, max_frames * num_write, dim)
        tokens[:, : state.tokens.shape[1]] = state.tokens
        times = timestamps.new_zeros(batch, max_frames, dtype=torch.float64)
        times[:, : state.timestamps.shape[1]] = state.timestamps
        frame = torch.arange(num_clip, device=written.device)
        real = frame[None, :] < num_valid[:, None]  # (B, F)
        stream, offset = real.nonzero(as_tuple=True)
        slot = state.num_frames[stream] + offset  # frame index in the stream
        times[stream, slot] = timestamps[stream, offset].to(torch.float64)
        rows = (slot[:, None] * num_write + torch.arange(num_write, device=written.device)).flatten()
        tokens[stream.repeat_interleave(num_write), rows] = written[stream, offset].flatten(0, 1)
        return RewindState(tokens=tokens, num_frames=num_frames, timestamps=times, num_write=num_write)


# -- feature buffer --------------------------------------------------------------------


class FeatureBuffer:
    """The original ViT features of every frame seen, per stream, for the selected frames.

    Policies: ``keep_every=1`` keeps every frame, ``keep_every=k`` keeps frames
    ``0, k, 2k, ...`` (a frame that was not kept is served by the last kept frame
    before it, which stays causal); ``spill_dir`` writes the features to one file per
    stream and reads them back through a memory map (``np.memmap``), so RAM holds
    none of them. Storage is indexed by frame number, so writing frames again
    (re-feeding a state) overwrites them and drops anything after.

    This is the mutable side of a stream's state: one buffer belongs to one batch of
    streams; :meth:`reset` empties a stream.
    """

    def __init__(self, batch_size: int, keep_every: int = 1, spill_dir: str | os.PathLike | None = None, dtype: torch.dtype | None = None):
        if keep_every < 1:
            raise LongvidError(f"feature buffer keep_every must be >= 1, got {keep_every}")
        if dtype is not None and spill_dir is not None and dtype not in _NUMPY_DTYPES:
            raise LongvidError(f"a spilled feature buffer stores float32 or float16, not {dtype}")
        self.keep_every = keep_every
        self.dtype = dtype
        self._tempdir = None
        if spill_dir is not None:
            os.makedirs(spill_dir, exist_ok=True)
            self._tempdir = tempfile.TemporaryDirectory(prefix="longvid-buffer-", dir=spill_dir)
        self._stores = [self._new_store(b) for b in range(batch_size)]

    def _new_store(self, stream: int) -> "_RamStore | _DiskStore":
        if self._tempdir is None:
            return _RamStore()
        return _DiskStore(os.path.join(self._tempdir.name, f"stream{stream}.f"))

    def write(self, first_frame: torch.Tensor, features: torch.Tensor, num_valid: torch.Tensor) -> None:
        """Store frames ``first_frame[b] .. + num_valid[b] - 1`` of each stream.

        ``first_frame (B,)`` long, ``features (B, F, P, D_v)``, ``num_valid (B,)`` long.
        """
        if self.dtype is not None:
            features = features.to(self.dtype)
        for stream, store in enumerate(self._stores):
            start, count = int(first_frame[stream]), int(num_valid[stream])
            first_slot = -(-start // self.keep_every)  # ceil: first kept frame >= start
            end_slot = -(-(start + count) // self.keep_every)
            kept = torch.arange(first_slot, end_slot) * self.keep_every - start  # positions in this sub-clip
            store.write(first_slot, features[stream, kept].detach().cpu())

    def read(self, stream: int, frames: torch.Tensor) -> torch.Tensor:
        """Features ``(n, P, D_v)`` of frames ``frames (n,)`` of one stream."""
        slots = torch.div(frames, self.keep_every, rounding_mode="floor")
        if len(slots) and int(slots.max()) >= self._stores[stream].count:
            raise LongvidError(f"frame {int(frames.max())} of stream {stream} is not in the feature buffer")
        return self._stores[stream].read(slots.cpu())

    def stored_frame(self, frames: torch.Tensor) -> torch.Tensor:
        """The frame whose features :meth:`read` returns for each of ``frames``."""
        return torch.div(frames, self.keep_every, rounding_mode="floor") * self.keep_every

    def reset(self, stream: int) -> None:
        self._stores[stream].truncate(0)

    @property
    def ram_bytes(self) -> int:
        """Bytes of features held in RAM (allocated)."""
        return sum(store.ram_bytes for store in self._stores)

    @property
    def disk_bytes(self) -> int:
        """Bytes of features in spill files."""
        return sum(store.disk_bytes for store in self._stores)

    @property
    def num_stored(self) -> list[int]:
        """Frames stored per stream."""
        return [store.count for store in self._stores]


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16}


class _RamStore:
    """Frames ``(count, P, D_v)`` in a tensor that grows by doubling."""

    def __init__(self):
        self.data: torch.Tensor | None = None
        self.count = 0

    def write(self, slot: int, features: torch.Tensor) -> None:
        end = slot + features.shape[0]
        if self.data is None:
            self.data = features.new_empty(max(end, 1), *features.shape[1:])
        elif end > self.data.shape[0]:
            grown = self.data.new_empty(max(end, 2 * self.data.shape[0]), *self.data.shape[1:])
            grown[: self.count] = self.data[: self.count]
            self.data = grown
        self.data[slot:end] = features
        self.count = end

    def read(self, slots: torch.Tensor) -> torch.Tensor:
        return self.data[slots].clone()

    def truncate(self, count: int) -> None:
        self.count = min(self.count, count)

    @property
    def ram_bytes(self) -> int:
        return 0 if self.data is None else self.data.element_size() * self.data.numel()

    disk_bytes = 0


class _DiskStore:
    """Frames appended to a raw file, read back through ``np.memmap``."""

    def __init__(self, path: str):
        self.path = path
        self.count = 0
        self.frame_shape: tuple[int, ...] = ()
        self.dtype = np.float32

    def write(self, slot: int, features: torch.Tensor) -> None:
        if features.dtype not in _NUMPY_DTYPES:
            features = features.float()
        array = features.numpy()
        if len(array) == 0:
            self.truncate(slot)
            return
        self.frame_shape, self.dtype = array.shape[1:], array.dtype
        frame_bytes = array[:1].nbytes
        with open(self.path, "r+b" if os.path.exists(self.path) else "wb") as f:
            f.seek(slot * frame_bytes)
            f.write(array.tobytes())
            f.truncate((slot + len(array)) * frame_bytes)
        self.count = slot + len(array)

    def read(self, slots: torch.Tensor) -> torch.Tensor:
        mapped = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.count, *self.frame_shape))
        return torch.from_numpy(np.array(mapped[slots.numpy()]))

    def truncate(self, count: int) -> None:
        self.count = min(self.count, count)
        if os.path.exists(self.path):
            with open(self.path, "r+b") as f:
                f.truncate(self.count * int(np.prod(self.frame_shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize)

    ram_bytes = 0

    @property
    def disk_bytes(self) -> int:
        return os.path.getsize(self.path) if os.path.exists(self.path) else 0
