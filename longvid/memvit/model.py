"""MeMViT (CVPR 2022): a multiscale ViT that reads cached keys/values of past clips.

Usage (the shared memory-model contract)::

    model = longvid.build_model("memvit_tiny", num_classes=10)
    state = model.init_state(batch_size)          # empty memory, all streams is_first
    for clip in clips:                            # clip (B, C, T, H, W) float
        out, state = model(clip, state)           # out: logits (B, K) (dict for multi-head presets)
    state = state.reset(new_video_mask)           # (B,) bool: those streams start a new video
    out, state = model(clip, state, memory_keep=keep)  # (B, M) bool: False drops that memory entry

``state`` is a ``KVMemoryState`` (dataclass of tensors, detached); the model keeps no
tensors between calls. ``memory_len=0`` gives plain MViTv2 (the state then only tracks
``is_first``).

Configs and presets: :mod:`longvid.memvit.config`; parameter names follow the
released checkpoints.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from longvid.core.checkpoints import CheckpointError, load_checkpoint, read_metadata, stored_config
from longvid.errors import LongvidError
from longvid.memvit.attention import LayerMemory, MultiScaleBlock, PatchEmbed, conv_out_size, round_width
from longvid.memvit.config import MeMViTConfig, Size3, get_config
from longvid.memvit.heads import AnticipationHead, AVAHead, BoxBlock, ClassificationHead, VerbNounHead, pad_boxes
from longvid.memvit.memory import KVMemoryState, LayerCache, memory_valid


@dataclass(frozen=True)
class BlockLayout:
    """Derived per-block shapes (at the config's clip size)."""

    dim: int
    dim_out: int
    num_heads: int
    input_size: Size3
    stride_q: Size3
    stride_kv: Size3
    kv_size: Size3


def block_layout(cfg: MeMViTConfig, clip_size: tuple[int, int, int] | None = None) -> list[BlockLayout]:
    """Widths, heads, strides and token grids per block, as PySlowFast's MViT builds them
    (``DIM_MUL_IN_ATT``: the width changes in the attention of the listed block)."""
    frames, height, width = clip_size or (cfg.num_frames, cfg.crop_size, cfg.crop_size)
    grid = (frames // cfg.patch_stride[0], height // cfg.patch_stride[1], width // cfg.patch_stride[2])
    dim_mul = dict(cfg.dim_mul)
    head_mul = dict(cfg.head_mul)
    stride_q = {s[0]: tuple(s[1:]) for s in cfg.pool_q_stride}
    stride_kv = tuple(cfg.pool_kv_stride_adaptive)
    dim, heads = cfg.embed_dim, cfg.num_heads
    out = []
    padding = tuple(k // 2 for k in cfg.pool_kernel)
    for i in range(cfg.depth):
        heads = round_width(heads, head_mul.get(i, 1.0))
        dim_out = round_width(dim, dim_mul.get(i, 1.0), divisor=heads)
        sq = stride_q.get(i, (1, 1, 1))
        stride_kv = tuple(max(s // q, 1) for s, q in zip(stride_kv, sq))
        kv = conv_out_size(grid, cfg.pool_kernel, stride_kv, padding)
        out.append(BlockLayout(dim, dim_out, heads, grid, sq, stride_kv, kv))
        grid = tuple(g // s for g, s in zip(grid, sq))
        dim = dim_out
    return out


class MeMViT(nn.Module):
    """MeMViT / MViTv2 video model with explicit per-stream memory state.

    ``forward(clip, state, memory_keep=None, boxes=None) -> (out, state)``:
        clip: (B, C, T, H, W) float.
        state: ``KVMemoryState`` from ``init_state`` or the previous call (None: fresh).
        memory_keep: optional (B, M) bool; False drops that memory entry (oldest first)
            for this step (memory-drop augmentation).
        boxes: AVA head only, (N, 5) ``[batch_index, x1, y1, x2, y2]`` in input pixels.
        out: ``linear``: logits (B, K); ``verb_noun``: {"verb", "noun"};
            ``anticipation``: {"logits" (B, K) last frame, "frame_logits" (B, T', K)};
            ``ava``: logits (N, K) per box, in the order of ``boxes``.
    """

    def __init__(self, config: MeMViTConfig):
        super().__init__()
        cfg = self.config = config
        layout = self.layout = block_layout(cfg)
        self.n_cls = 1 if cfg.cls_embed else 0
        if cfg.cls_embed:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.patch_embed = PatchEmbed(cfg.in_chans, cfg.embed_dim, cfg.patch_kernel, cfg.patch_stride, cfg.patch_padding, causal=cfg.causal)
        drop_path = torch.linspace(0, cfg.drop_path_rate, cfg.depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            MultiScaleBlock(
                b.dim,
                b.dim_out,
                b.num_heads,
                b.input_size,
                mlp_ratio=cfg.mlp_ratio,
                drop_path=drop_path[i],
                kernel_q=cfg.pool_kernel,
                kernel_kv=cfg.pool_kernel,
                stride_q=b.stride_q,
                stride_kv=b.stride_kv,
                qkv_bias=cfg.qkv_bias,
                has_cls=cfg.cls_embed,
                rel_pos_spatial=cfg.rel_pos_spatial,
                rel_pos_temporal=cfg.rel_pos_temporal,
                memory_len=cfg.memory_len,
                compress_kernel=cfg.compress_kernel,
                compress_stride=cfg.compress_stride,
                causal=cfg.causal,
            )
            for i, b in enumerate(layout)
        )
        dim, heads = layout[-1].dim_out, layout[-1].num_heads
        if cfg.head == "ava":
            box_drop_path = torch.linspace(0, 0.1, cfg.box_depth, device="cpu").tolist()
            self.box_blocks = nn.ModuleList(BoxBlock(dim, heads, cfg.mlp_ratio, drop_path=p) for p in box_drop_path)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        if cfg.head == "linear":
            self.head = ClassificationHead(dim, cfg.num_classes, cfg.head_dropout)
        elif cfg.head == "verb_noun":
            self.head = VerbNounHead(dim, tuple(cfg.num_classes), cfg.head_dropout)
        elif cfg.head == "anticipation":
            self.head = AnticipationHead(dim, cfg.num_classes, cfg.head_dropout)
        else:
            self.head = AVAHead(dim, cfg.num_classes, cfg.roi_resolution, cfg.spatial_scale, cfg.head_dropout)
        self.reading_blocks = cfg.reading_blocks
        self.memory_spec = cfg.memory_spec
        self.apply(_init_weights)
        if cfg.linear_init == "fan_in":
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=m.in_features**-0.5)
        for name, p in self.named_parameters():
            if "rel_pos" in name or name == "cls_token":
                nn.init.trunc_normal_(p, std=0.02)
        if cfg.compress_init == "average":
            for block in self.blocks:
                for conv in (getattr(block.attn, "compress_k", None), getattr(block.attn, "compress_v", None)):
                    if conv is not None:
                        nn.init.constant_(conv.weight, 1.0 / math.prod(conv.kernel_size))

    def float32_modules(self) -> list[nn.Module]:
        """Modules that stay float32 when the model runs in bf16 (``longvid.precision.for_inference``):
        the final norm and the head, so logits are not rounded to bf16 (a logit of 8 has a bf16
        spacing of 0.03, a probability error up to ~1.5%); they cost almost nothing."""
        return [self.norm, self.head]

    # -- memory state ----------------------------------------------------------------

    def memory_shapes(self, clip_size: tuple[int, int, int] | None = None) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Per memory layer: ((raw tokens, C), (N_compressed, C)) for a clip size (T, H, W); the raw
        cache holds the sampler's ``gap`` newest clips side by side (``gap * N_raw`` tokens)."""
        layout = block_layout(self.config, clip_size) if clip_size else self.layout
        raw_len = self.memory_spec.raw_len if self.memory_spec else 1
        shapes = []
        for i in self.reading_blocks:
            b = layout[i]
            compressed = self.blocks[i].attn.compressed_size(b.kv_size)
            shapes.append(((raw_len * (self.n_cls + math.prod(b.kv_size)), b.dim), (self.n_cls + math.prod(compressed), b.dim)))
        if self.config.head == "ava" and self.memory_spec is not None:
            dim = layout[-1].dim_out
            shapes += [((raw_len * self.config.max_boxes, dim), (self.config.max_boxes, dim))] * self.config.box_depth
        return shapes

    def dummy_inputs(self, batch_size: int, seed: int = 0) -> Tensor:
        """A valid clip batch ``(B, C, T, H, W)`` for one step (random values from ``seed``; the
        global RNG is not touched), on the model's device and dtype."""
        ref = next(self.parameters())
        c = self.config
        generator = torch.Generator().manual_seed(seed)
        clip = torch.randn(batch_size, c.in_chans, c.num_frames, c.crop_size, c.crop_size, generator=generator)
        return clip.to(device=ref.device, dtype=ref.dtype)

    def init_state(self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None, clip_size: tuple[int, int, int] | None = None) -> KVMemoryState:
        """Empty memory for ``batch_size`` streams, all ``is_first``; device/dtype follow the model.

        ``clip_size`` (T, H, W) defaults to the config's; a fresh state is re-sized
        automatically on the first clip if the clip size differs.
        """
        ref = next(self.parameters())
        device = ref.device if device is None else device
        dtype = ref.dtype if dtype is None else dtype
        slots = self.memory_spec.compressed_len if self.memory_spec else 0

        def caches() -> list[LayerCache]:
            return [
                LayerCache(torch.zeros(batch_size, *raw, device=device, dtype=dtype), torch.zeros(batch_size, slots, *comp, device=device, dtype=dtype))
                for raw, comp in self.memory_shapes(clip_size)
            ]

        return KVMemoryState(
            is_first=torch.ones(batch_size, dtype=torch.bool, device=device),
            num_seen=torch.zeros(batch_size, dtype=torch.long, device=device),
            keys=caches(),
            values=caches(),
        )

    def _check_state(self, state: KVMemoryState, clip: Tensor) -> KVMemoryState:
        if state.batch_size != clip.shape[0]:
            raise LongvidError(f"state holds {state.batch_size} streams but the clip batch has {clip.shape[0]}")
        clip_size = tuple(clip.shape[2:])
        expected = self.memory_shapes(clip_size)
        have = [(tuple(k.raw.shape[1:]), tuple(k.compressed.shape[2:])) for k in state.keys]
        if have == expected:
            if state.keys and state.keys[0].raw.dtype != clip.dtype and not torch.is_autocast_enabled(clip.device.type):
                state = state.to(dtype=clip.dtype)  # memory in the weights' dtype (e.g. a float32 state given to a bf16 model)
            return state
        if bool(state.is_first.all()):
            return self.init_state(clip.shape[0], state.is_first.device, clip.dtype, clip_size)
        raise LongvidError(f"the memory state was built for another clip size than {clip_size}; start a new state (init_state) for it")

    # -- forward ---------------------------------------------------------------------

    def forward_features(self, clip: Tensor, state: KVMemoryState, valid: Tensor | None) -> tuple[Tensor, Size3, list[LayerCache], list[LayerCache]]:
        """Backbone with memory.

        Args:
            clip: (B, C, T, H, W); state: matching ``KVMemoryState``; valid: (B, M) bool
                readable memory entries (None without memory).
        Returns:
            normed tokens (B, n_cls + T'H'W', C), their grid (T', H', W'), and the new
            key / value caches of the memory-reading blocks.
        """
        x, thw = self.patch_embed(clip)  # (B, T'H'W', C)
        if self.n_cls:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            memory = None
            if i in self.reading_blocks:
                j = len(keys)
                memory = LayerMemory(state.keys[j], state.values[j], valid, self.memory_spec)
            x, thw, caches = block(x, thw, memory)
            if caches is not None:
                keys.append(caches[0])
                values.append(caches[1])
        return self.norm(x.to(self.norm.weight.dtype)), thw, keys, values  # float32 with float32_modules

    def forward(self, clip: Tensor, state: KVMemoryState | None = None, memory_keep: Tensor | None = None, boxes: Tensor | None = None):
        if clip.dim() != 5:
            raise LongvidError(f"expected a clip batch (B, C, T, H, W), got shape {tuple(clip.shape)}")
        clip = clip.to(self.patch_embed.proj.weight.dtype)  # bf16 weights take float32 clips as they come
        if state is None:
            state = self.init_state(clip.shape[0], clip.device, clip.dtype, tuple(clip.shape[2:]))
        state = self._check_state(state, clip)
        if memory_keep is not None and self.memory_spec is None:
            raise LongvidError("memory_keep given but the model has no memory (memory_len=0)")
        num_seen = torch.where(state.is_first, 0, state.num_seen)  # clips of the current video in memory
        valid = memory_valid(self.memory_spec, num_seen, memory_keep) if self.memory_spec else None
        x, thw, keys, values = self.forward_features(clip, state, valid)
        cache_len = self.memory_spec.cache_len if self.memory_spec else 0
        new_state = KVMemoryState(torch.zeros_like(state.is_first), (num_seen + 1).clamp(max=cache_len), keys, values)

        head = self.config.head
        if head in ("linear", "verb_noun"):
            return self.head(x[:, 0] if self.n_cls else x.mean(1)), new_state  # x: the head's dtype (norm's)
        grid = x[:, self.n_cls :]
        if head == "anticipation":
            return self.head(grid.reshape(x.shape[0], *thw, -1)), new_state
        return self._boxes(grid, thw, boxes, state, valid, new_state), new_state

    def _boxes(self, grid: Tensor, thw: Size3, boxes: Tensor | None, state: KVMemoryState, valid: Tensor | None, new_state: KVMemoryState) -> Tensor:
        """AVA: per-box logits (N, K); appends the box blocks' caches to ``new_state``."""
        if boxes is None:
            raise LongvidError("the AVA head needs boxes: (N, 5) rows [batch_index, x1, y1, x2, y2]")
        b = grid.shape[0]
        features = grid.transpose(1, 2).reshape(b, -1, *thw)  # (B, C, T', H', W')
        box_features = self.head.pool(features, boxes)  # (N, C)
        tokens, slots = pad_boxes(box_features, boxes[:, 0].long(), b, self.config.max_boxes)  # (B, P, C)
        tokens = tokens.to(self.box_blocks[0].norm1.weight.dtype)
        first = len(self.reading_blocks)
        for i, block in enumerate(self.box_blocks):
            memory = None
            if valid is not None:
                memory = LayerMemory(state.keys[first + i], state.values[first + i], valid, self.memory_spec)
            tokens, caches = block(tokens, memory)
            if caches is not None:
                new_state.keys.append(caches[0])
                new_state.values.append(caches[1])
        return self.head(tokens.flatten(0, 1)[slots].to(self.norm.weight.dtype))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# -- presets ---------------------------------------------------------------------------


def build_model(name: str, **overrides) -> MeMViT:
    """Build a preset (``PRESETS``), e.g. ``build_model("memvit_tiny", num_classes=10)``."""
    return MeMViT(get_config(name, **overrides))


def load_model(path: str | os.PathLike):
    """Rebuild a MeMViT saved by :func:`longvid.core.checkpoints.save_checkpoint` (config from
    the file) and load it."""
    meta = read_metadata(path)
    if meta.get("architecture") != "MeMViT" or "config" not in meta:
        raise CheckpointError(f"{path}: no MeMViT config in the file's metadata; build the model and use load_checkpoint")
    config = stored_config(MeMViTConfig, meta["config"], os.fspath(path))
    try:
        model = MeMViT(config)
    except (ArithmeticError, RuntimeError, TypeError, ValueError) as err:  # values the config's own checks let through
        raise CheckpointError(f"{path}: the stored config does not build a model ({type(err).__name__}: {err})") from None
    load_checkpoint(model, path)
    return model
