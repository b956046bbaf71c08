"""ReWind's read-perceive-write memory, and its state as a value.

A stream is cut into sub-clips of ``F`` frames (``clip_frames``) counted from its first
frame. For each sub-clip:

* **read**: ``N_R`` learned read queries cross-attend to the stream's memory ``M``
  (a summary of what is stored so far; the queries themselves while ``M`` is empty);
* **perceive**: for every frame, a Perceiver whose initial latents are that summary
  cross-attends to the frame's ViT features and the instruction's text encoding,
  then self-attends; then the latents self-attend along time over the sub-clip;
* **write**: ``N_W`` learned write queries cross-attend to each frame's latents,
  giving ``N_W`` tokens per frame, appended to ``M`` in temporal order.

The memory is explicit per-stream state (:class:`MemoryState`); the module keeps no
tensors between calls. A step may bring any number of frames: the state carries the open
sub-clip (its summary and its frames' latents), so the sub-clips, and the memory, are the
same however a stream is cut into steps. With ``causal_time`` (the default) a frame's
tokens depend only on that frame and earlier ones: they are written as soon as the frame
arrives and never change, and a question asked at time ``t`` (breakpoint mode) sees
exactly what an online viewer had seen at ``t``. Without it, the tokens of the open
sub-clip's frames are rewritten as the sub-clip fills.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from longvid.errors import LongvidError
from longvid.rewind.config import RewindMemoryConfig


@dataclass(frozen=True)
class MemoryState:
    """The memory of ``B`` streams (tensors; a step returns a new value).

    tokens:      ``(B, N_W * F_max, D)`` memory tokens, frame-major: frame ``f`` of
                 stream ``b`` owns rows ``N_W*f .. N_W*f + N_W - 1``; rows past
                 ``N_W * num_frames[b]`` are padding (zeros).
    times:       ``(B, F_max)`` float64 seconds of each written frame (0 past the end).
    num_frames:  ``(B,)`` long, frames written per stream.
    summary:     ``(B, N_R, D)`` the read of the memory at the start of the open sub-clip.
    open:        ``(B, F, N_R, D)`` perceived latents of the open sub-clip's
                 ``num_frames % F`` frames; zeros after them.
    num_write:   ``N_W``, tokens per frame.
    """

    tokens: Tensor
    times: Tensor
    num_frames: Tensor
    summary: Tensor
    open: Tensor
    num_write: int

    @property
    def batch_size(self) -> int:
        return self.num_frames.shape[0]

    @property
    def clip_frames(self) -> int:
        """``F``, frames per sub-clip."""
        return self.open.shape[1]

    @property
    def lengths(self) -> Tensor:
        """``(B,)`` valid memory tokens per stream."""
        return self.num_frames * self.num_write

    @property
    def valid(self) -> Tensor:
        """``(B, N_W * F_max)`` bool, True for written memory tokens."""
        positions = torch.arange(self.tokens.shape[1], device=self.tokens.device)
        return positions[None, :] < self.lengths[:, None]

    def frame_tokens(self, stream: int, until: float | None = None) -> tuple[Tensor, Tensor]:
        """One stream's memory as ``(n, N_W, D)`` tokens and ``(n,)`` timestamps.

        ``until``: keep only frames with timestamp ``<= until`` (breakpoint mode).
        """
        count = int(self.num_frames[stream])
        times = self.times[stream, :count]
        if until is not None:
            count = int((times <= until + 1e-9).sum())
            times = times[:count]
        tokens = self.tokens[stream, : count * self.num_write].reshape(count, self.num_write, -1)
        return tokens, times

    def _tensors(self) -> dict[str, Tensor]:
        return {"tokens": self.tokens, "times": self.times, "num_frames": self.num_frames, "summary": self.summary,
                "open": self.open}

    def _map(self, fn) -> "MemoryState":
        """A state with ``fn(name, tensor)`` applied to every tensor."""
        return dataclasses.replace(self, **{name: fn(name, t) for name, t in self._tensors().items()})

    def reset(self, mask: Tensor) -> "MemoryState":
        """Rows where ``mask (B,)`` is True emptied."""
        mask = mask.to(device=self.num_frames.device, dtype=torch.bool)
        return self._map(lambda _, t: t.masked_fill(mask.view(-1, *[1] * (t.dim() - 1)), 0))

    def index_select(self, index: Tensor) -> "MemoryState":
        index = index.to(self.num_frames.device)
        return self._map(lambda _, t: t.index_select(0, index))

    def index_copy(self, index: Tensor, rows: "MemoryState") -> "MemoryState":
        """Rows ``index`` replaced by ``rows`` (the padded frame axis grows to the longer one)."""
        if (rows.num_write, rows.clip_frames) != (self.num_write, self.clip_frames):
            raise LongvidError("index_copy: the rows come from a ReWind memory of other sizes")
        index = index.to(self.num_frames.device)
        frames = max(self.times.shape[1], rows.times.shape[1])
        width = {"tokens": frames * self.num_write, "times": frames}
        theirs = rows._tensors()

        def copy(name: str, mine: Tensor) -> Tensor:
            if name in width:
                return _pad(mine, width[name]).index_copy(0, index, _pad(theirs[name], width[name]).to(mine.dtype))
            return mine.index_copy(0, index, theirs[name].to(mine.dtype))

        return self._map(copy)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "MemoryState":
        """Move to ``device``; ``dtype`` applies to the memory's activations (not times or counts)."""
        return self._map(lambda name, t: t.to(device=device, dtype=dtype if name in ("tokens", "summary", "open") else None))

    def detach(self) -> "MemoryState":
        return self._map(lambda _, t: t.detach())

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.numel() for t in self._tensors().values())

    def state_dict(self) -> dict[str, Tensor]:
        return {**self._tensors(), "num_write": torch.tensor(self.num_write)}

    @classmethod
    def from_state_dict(cls, tensors: dict[str, Tensor]) -> "MemoryState":
        return cls(tensors["tokens"], tensors["times"].double(), tensors["num_frames"].long(), tensors["summary"],
                   tensors["open"], int(tensors["num_write"]))


def _pad(tensor: Tensor, width: int) -> Tensor:
    """``tensor`` with its axis 1 zero-padded to ``width``."""
    return F.pad(tensor, (0, 0) * (tensor.dim() - 2) + (0, width - tensor.shape[1]))


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

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
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

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        h = self.norm_x(x)
        x = x + self.attn(h, h if context is None else self.norm_context(context), mask)
        return x + self.mlp(self.norm_mlp(x))


# -- the memory ------------------------------------------------------------------------


class RewindMemory(nn.Module):
    """Read-perceive-write memory: ``written, state = memory.step(state, frames, text, text_mask, times, count)``."""

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

    def init_state(self, batch_size: int, clip_frames: int, device=None, dtype: torch.dtype | None = None) -> MemoryState:
        """Empty memory for ``batch_size`` streams cut into sub-clips of ``clip_frames``."""
        if not 1 <= clip_frames <= self.config.max_clip_frames:
            raise LongvidError(f"sub-clips of {clip_frames} frames: must be 1..max_clip_frames={self.config.max_clip_frames}")
        device = self.read_queries.device if device is None else device
        dtype = self.read_queries.dtype if dtype is None else dtype
        c = self.config
        return MemoryState(
            tokens=torch.zeros(batch_size, 0, c.dim, device=device, dtype=dtype),
            times=torch.zeros(batch_size, 0, dtype=torch.float64, device=device),
            num_frames=torch.zeros(batch_size, dtype=torch.long, device=device),
            summary=torch.zeros(batch_size, c.num_read, c.dim, device=device, dtype=dtype),
            open=torch.zeros(batch_size, clip_frames, c.num_read, c.dim, device=device, dtype=dtype),
            num_write=c.num_write,
        )

    def step(self, state: MemoryState, frames: Tensor, text: Tensor, text_mask: Tensor, times: Tensor,
             count: Tensor) -> tuple[Tensor, MemoryState]:
        """Write the first ``count[b]`` of ``frames`` of each stream into its memory.

        Args:
            state: the streams' memory.
            frames: ``(B, T, P, D_v)`` ViT features of each frame's ``P`` patches.
            text: ``(B, L_t, D_t)`` instruction encoding; ``text_mask (B, L_t)`` bool (True = token).
            times: ``(B, T)`` seconds of each frame.
            count: ``(B,)`` long, real frames per stream (a prefix; the rest is padding).

        Returns the tokens written for each frame ``(B, T, N_W, D)`` (zeros at padding) and
        the new state. The frames are split at the streams' sub-clip boundaries.
        """
        batch, steps = frames.shape[:2]
        written = frames.new_zeros(batch, steps, self.config.num_write, self.config.dim)
        done = torch.zeros_like(count)
        while True:
            take = torch.minimum(count - done, state.clip_frames - state.num_frames % state.clip_frames)  # (B,)
            if not bool((take > 0).any()):
                return written, state
            state = self._sub_step(state, frames, text, text_mask, times, done, take, written)
            done = done + take

    def _sub_step(self, state: MemoryState, frames, text, text_mask, times, done: Tensor, take: Tensor,
                  written: Tensor) -> MemoryState:
        """Frames ``done[b] .. done[b] + take[b] - 1`` of the step, all in each stream's open sub-clip
        (one that opens here reads the memory first); fills ``written`` and returns the new state."""
        clip = state.clip_frames
        position = state.num_frames % clip  # (B,) frames already in the open sub-clip
        opening = (position == 0) & (take > 0)
        summary = torch.where(opening[:, None, None], self.read_memory(state), state.summary)  # (B, N_R, D)
        latents = state.open.masked_fill(opening[:, None, None, None], 0)  # (B, F, N_R, D)
        width = int(take.max())
        offset = torch.arange(width, device=take.device)
        rows = torch.arange(len(take), device=take.device)[:, None]
        index = (done[:, None] + offset).clamp(max=frames.shape[1] - 1)  # (B, width) frames of the step
        slot = (position[:, None] + offset).clamp(max=clip - 1)  # (B, width) positions in the sub-clip
        new = self.perceive(frames[rows, index], text, text_mask, summary)  # (B, width, N_R, D)
        stream, j = (offset[None] < take[:, None]).nonzero(as_tuple=True)
        latents = latents.index_put((stream, slot[stream, j]), new[stream, j])
        filled = position + take  # (B,)
        tokens = self.write_tokens(self.mix_time(latents, filled))  # (B, F, N_W, D)
        written[stream, index[stream, j]] = tokens[stream, slot[stream, j]]
        first = position if self.config.causal_time else torch.zeros_like(position)
        return _store(state, tokens, first, filled, times[rows, index], take, summary, latents)

    def read_memory(self, state: MemoryState) -> Tensor:
        """The read queries over each stream's memory: ``(B, N_R, D)``."""
        queries = self.read_queries.expand(state.batch_size, -1, -1)  # (B, N_R, D)
        return self.read(queries, state.tokens, state.valid[:, None, :])

    def perceive(self, frames: Tensor, text: Tensor, text_mask: Tensor, summary: Tensor) -> Tensor:
        """Per frame, the Perceiver from ``summary (B, N_R, D)`` over the frame's features
        ``frames (B, n, P, D_v)`` and the instruction ``text (B, L_t, D_t)``: ``(B, n, N_R, D)``."""
        batch, num_clip, num_patches, _ = frames.shape
        visual = self.vision_proj(frames).flatten(0, 1)  # (B*n, P, D)
        words = self.text_proj(text).repeat_interleave(num_clip, dim=0)  # (B*n, L_t, D)
        context = torch.cat([visual, words], dim=1)  # (B*n, P + L_t, D)
        patch_mask = torch.ones(batch * num_clip, num_patches, dtype=torch.bool, device=frames.device)
        context_mask = torch.cat([patch_mask, text_mask.repeat_interleave(num_clip, dim=0)], dim=1)[:, None, :]
        latents = summary.repeat_interleave(num_clip, dim=0)  # (B*n, N_R, D)
        for cross, self_attn in zip(self.perceive_cross, self.perceive_self):
            latents = cross(latents, context, context_mask)
            latents = self_attn(latents)
        return latents.reshape(batch, num_clip, -1, latents.shape[-1])

    def mix_time(self, latents: Tensor, filled: Tensor) -> Tensor:
        """Self-attention along time over the open sub-clip ``latents (B, F, N_R, D)`` (time embedding
        added here), each latent slot over the first ``filled (B,)`` frames (earlier ones only with
        ``causal_time``)."""
        batch, num_clip, num_read, dim = latents.shape
        latents = latents + self.time_embed[:num_clip, None]
        sequence = latents.transpose(1, 2).flatten(0, 1)  # (B*N_R, F, D)
        sequence = self.temporal(sequence, mask=self._time_mask(filled, num_clip).repeat_interleave(num_read, dim=0))
        return sequence.reshape(batch, num_read, num_clip, dim).transpose(1, 2)  # (B, F, N_R, D)

    def _time_mask(self, filled: Tensor, num_clip: int) -> Tensor:
        """``(B, F, F)`` bool: query frame ``i`` may attend to key frame ``j``."""
        frame = torch.arange(num_clip, device=filled.device)
        mask = (frame[None, :] < filled[:, None])[:, None, :].expand(-1, num_clip, -1)  # real key frames
        if self.config.causal_time:
            mask = mask & (frame[None, :] <= frame[:, None])[None]
        return mask

    def write_tokens(self, latents: Tensor) -> Tensor:
        """``N_W`` tokens per frame from its latents: ``(B, F, N_R, D) -> (B, F, N_W, D)``."""
        batch, num_clip, num_read, dim = latents.shape
        queries = self.write_queries.expand(batch * num_clip, -1, -1)  # (B*F, N_W, D)
        written = self.write(queries, latents.reshape(batch * num_clip, num_read, dim))
        return self.norm(written).reshape(batch, num_clip, -1, dim)


def _store(state: MemoryState, tokens: Tensor, first: Tensor, filled: Tensor, new_times: Tensor, take: Tensor,
           summary: Tensor, latents: Tensor) -> MemoryState:
    """``state`` with the open sub-clip's tokens ``(B, F, N_W, D)`` at positions ``first .. filled - 1``
    written (over any written before), the times ``new_times (B, width)`` of its ``take`` new
    frames, and its ``summary`` and ``latents``."""
    batch, clip, num_write, dim = tokens.shape
    start = state.num_frames - state.num_frames % clip  # (B,) the open sub-clip's first frame
    num_frames = state.num_frames + take
    max_frames = max(int(num_frames.max()), state.times.shape[1])
    memory = tokens.new_zeros(batch, max_frames * num_write, dim)
    memory[:, : state.tokens.shape[1]] = state.tokens
    times = state.times.new_zeros(batch, max_frames)
    times[:, : state.times.shape[1]] = state.times
    position = torch.arange(clip, device=tokens.device)
    stream, slot = ((position >= first[:, None]) & (position < filled[:, None])).nonzero(as_tuple=True)
    rows = ((start[stream] + slot)[:, None] * num_write + torch.arange(num_write, device=tokens.device)).flatten()
    memory[stream.repeat_interleave(num_write), rows] = tokens[stream, slot].flatten(0, 1)
    stream, j = (torch.arange(new_times.shape[1], device=take.device)[None] < take[:, None]).nonzero(as_tuple=True)
    times[stream, state.num_frames[stream] + j] = new_times[stream, j].to(torch.float64)
    return MemoryState(memory, times, num_frames, summary, latents, num_write)
