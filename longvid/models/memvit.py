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

Configs are frozen dataclasses (``MeMViTConfig``); presets live in ``PRESETS``.
Field names follow PySlowFast's ``MVIT.*`` / ``MEMVIT.*`` options (see the docstring of
each field); parameter names follow the released checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from longvid.errors import LongvidError
from longvid.memory.kv import KVMemorySpec, KVMemoryState, LayerCache, memory_valid
from longvid.models.heads import AnticipationHead, AVAHead, BoxBlock, ClassificationHead, VerbNounHead, pad_boxes
from longvid.models.mvit import LayerMemory, MultiScaleBlock, PatchEmbed, conv_out_size, round_width

Size3 = tuple[int, int, int]
HEADS = ("linear", "verb_noun", "anticipation", "ava")


@dataclass(frozen=True)
class MeMViTConfig:
    """A MeMViT / MViTv2 model. Defaults: MeMViT-16, 16x4, Kinetics-400 classification."""

    # task
    num_classes: int | tuple[int, ...] = 400  # MODEL.NUM_CLASSES (a pair for verb/noun)
    head: str = "linear"  # linear | verb_noun | anticipation | ava
    head_dropout: float = 0.5  # MODEL.DROPOUT_RATE
    # input (the clip size the position tables and init_state are sized for)
    in_chans: int = 3
    num_frames: int = 16  # DATA.NUM_FRAMES
    crop_size: int = 224  # DATA.TRAIN_CROP_SIZE
    # backbone
    depth: int = 16
    embed_dim: int = 96
    num_heads: int = 1
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    patch_kernel: Size3 = (3, 7, 7)
    patch_stride: Size3 = (2, 4, 4)
    patch_padding: Size3 = (1, 3, 3)
    dim_mul: tuple[tuple[int, float], ...] = ((1, 2.0), (3, 2.0), (14, 2.0))  # (block, width multiplier)
    head_mul: tuple[tuple[int, float], ...] = ((1, 2.0), (3, 2.0), (14, 2.0))  # (block, heads multiplier)
    pool_kernel: Size3 = (3, 3, 3)  # POOL_KVQ_KERNEL
    pool_q_stride: tuple[tuple[int, int, int, int], ...] = ((1, 1, 2, 2), (3, 1, 2, 2), (14, 1, 2, 2))  # (block, t, h, w); others 1
    pool_kv_stride_adaptive: Size3 = (1, 8, 8)
    rel_pos_spatial: bool = True
    rel_pos_temporal: bool = True
    cls_embed: bool = True
    drop_path_rate: float = 0.0
    causal: bool = False  # MVIT.CAUSAL: the anticipation variant
    # memory
    memory_len: int = 2  # M = MEMVIT.ATTN_MAX_LEN - 1; 0 = no memory (MViTv2)
    sampler: str = "gap2"  # consecutive | all | gapN
    memory_blocks: tuple[int, ...] | None = None  # blocks that read memory; None = even blocks (50%)
    compress_kernel: Size3 = (7, 3, 3)
    compress_stride: Size3 = (4, 2, 2)
    # AVA box head
    box_depth: int = 1
    max_boxes: int = 100  # box slots per clip (padded, as released)
    roi_resolution: int = 7
    spatial_scale: float = 1 / 32

    def __post_init__(self) -> None:
        self._check_input_size()
        classes = (self.num_classes,) if isinstance(self.num_classes, int) else tuple(self.num_classes)
        if not classes or min(classes) < 1:
            raise LongvidError(f"num_classes must be >= 1, got {self.num_classes}")
        for name in ("in_chans", "depth", "embed_dim", "num_heads"):
            if getattr(self, name) < 1:
                raise LongvidError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.head not in HEADS:
            raise LongvidError(f"unknown head {self.head!r}: choose from {', '.join(HEADS)}")
        if self.memory_len < 0:
            raise LongvidError(f"memory_len must be >= 0, got {self.memory_len}")
        if self.memory_len:
            KVMemorySpec(self.memory_len, self.sampler)
        bad = [i for i in self.reading_blocks if not 0 <= i < self.depth]
        if bad:
            raise LongvidError(f"memory_blocks {bad} outside 0..{self.depth - 1}")
        if self.head == "verb_noun" and (isinstance(self.num_classes, int) or len(self.num_classes) != 2):
            raise LongvidError(f"head 'verb_noun' needs num_classes=(verbs, nouns), got {self.num_classes}")
        if self.head in ("linear", "ava") and not isinstance(self.num_classes, int):
            raise LongvidError(f"head {self.head!r} needs an integer num_classes, got {self.num_classes}")

    def _check_input_size(self) -> None:
        """Clips the patch embedding and the query pooling stages can divide."""
        (pt, ph, pw), (qt, qh, qw) = self.patch_stride, (1, 1, 1)
        for _, t, h, w in self.pool_q_stride:
            qt, qh, qw = qt * t, qh * h, qw * w
        if self.num_frames < 1 or self.num_frames % pt or self.num_frames // pt < qt:
            raise LongvidError(f"num_frames (clip frames) must be a multiple of {pt} and >= {pt * qt}, got {self.num_frames}")
        if self.crop_size < 1 or self.crop_size % ph or self.crop_size % pw or self.crop_size // max(ph, pw) < max(qh, qw):
            raise LongvidError(f"crop_size must be a multiple of {max(ph, pw)} and >= {max(ph, pw) * max(qh, qw)}, got {self.crop_size}")

    @property
    def reading_blocks(self) -> tuple[int, ...]:
        """Blocks whose attention reads memory (empty without memory)."""
        if not self.memory_len:
            return ()
        return tuple(self.memory_blocks) if self.memory_blocks is not None else tuple(range(0, self.depth, 2))

    @property
    def memory_spec(self) -> KVMemorySpec | None:
        return KVMemorySpec(self.memory_len, self.sampler) if self.memory_len else None


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
        for name, p in self.named_parameters():
            if "rel_pos" in name or name == "cls_token":
                nn.init.trunc_normal_(p, std=0.02)

    # -- memory state ----------------------------------------------------------------

    def memory_shapes(self, clip_size: tuple[int, int, int] | None = None) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Per memory layer: ((N_raw, C), (N_compressed, C)) token counts for a clip size (T, H, W)."""
        layout = block_layout(self.config, clip_size) if clip_size else self.layout
        shapes = []
        for i in self.reading_blocks:
            b = layout[i]
            compressed = self.blocks[i].attn.compressed_size(b.kv_size)
            shapes.append(((self.n_cls + math.prod(b.kv_size), b.dim), (self.n_cls + math.prod(compressed), b.dim)))
        if self.config.head == "ava" and self.memory_spec is not None:
            dim = layout[-1].dim_out
            shapes += [((self.config.max_boxes, dim), (self.config.max_boxes, dim))] * self.config.box_depth
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
        slots = self.memory_spec.cache_len - 1 if self.memory_spec else 0

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
        return self.norm(x), thw, keys, values

    def forward(self, clip: Tensor, state: KVMemoryState | None = None, memory_keep: Tensor | None = None, boxes: Tensor | None = None):
        if clip.dim() != 5:
            raise LongvidError(f"expected a clip batch (B, C, T, H, W), got shape {tuple(clip.shape)}")
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
            return self.head(x[:, 0] if self.n_cls else x.mean(1)), new_state
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
        first = len(self.reading_blocks)
        for i, block in enumerate(self.box_blocks):
            memory = None
            if valid is not None:
                memory = LayerMemory(state.keys[first + i], state.values[first + i], valid, self.memory_spec)
            tokens, caches = block(tokens, memory)
            if caches is not None:
                new_state.keys.append(caches[0])
                new_state.values.append(caches[1])
        return self.head(tokens.flatten(0, 1)[slots])


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# -- presets ---------------------------------------------------------------------------

_MVIT16 = MeMViTConfig(memory_len=0, drop_path_rate=0.4)
_MEMVIT16 = dataclasses.replace(_MVIT16, memory_len=2, sampler="gap2")
_MVIT24 = dataclasses.replace(
    _MVIT16,
    depth=24,
    num_frames=32,
    dim_mul=((2, 2.0), (5, 2.0), (21, 2.0)),
    head_mul=((2, 2.0), (5, 2.0), (21, 2.0)),
    pool_q_stride=((2, 1, 2, 2), (5, 1, 2, 2), (21, 1, 2, 2)),
)
_MEMVIT24 = dataclasses.replace(_MVIT24, memory_len=2, sampler="gap3")
# The tiny released-layout model of shared/reference/memvit_tiny (MeMViT-16 recipe shrunk).
_MEMVIT_TINY = MeMViTConfig(
    num_classes=10,
    crop_size=64,
    depth=4,
    embed_dim=16,
    dim_mul=((1, 2.0), (3, 2.0)),
    head_mul=((1, 2.0), (3, 2.0)),
    pool_q_stride=((1, 1, 2, 2), (3, 1, 2, 2)),
    memory_len=2,
    sampler="gap2",
)

# Presets. Full size: the released MeMViT recipes (16x4: gap2, 32x3: gap3, M = 2, memory in
# the even blocks); ``*_ava`` add the 80-class box head, ``*_epic`` verb/noun heads,
# ``*_anticipation`` the causal variant with a frame-level head. Tiny: the reference
# ``memvit_tiny`` layout (4 blocks, width 16, 16x64x64) -- trains on a CPU at about
# 0.06 s per step for batch 4 of 8x32x32 clips (other clip sizes work: spatial position
# tables are resized at run time; ``num_frames`` / ``crop_size`` size them exactly).
PRESETS: dict[str, MeMViTConfig] = {
    "mvit16_16x4": _MVIT16,
    "memvit16_16x4": _MEMVIT16,
    "mvit24_32x3": _MVIT24,
    "memvit24_32x3": _MEMVIT24,
    "memvit16_16x4_ava": dataclasses.replace(_MEMVIT16, head="ava", num_classes=80, head_dropout=0.5),
    "memvit24_32x3_ava": dataclasses.replace(_MEMVIT24, head="ava", num_classes=80, head_dropout=0.5),
    "memvit16_16x4_epic": dataclasses.replace(_MEMVIT16, head="verb_noun", num_classes=(97, 300)),
    "memvit16_16x4_anticipation": dataclasses.replace(_MEMVIT16, head="anticipation", causal=True, num_classes=(97, 300)),
    "mvit_tiny": dataclasses.replace(_MEMVIT_TINY, memory_len=0),
    "memvit_tiny": _MEMVIT_TINY,
    "memvit_tiny_consecutive": dataclasses.replace(_MEMVIT_TINY, sampler="consecutive"),
    # ``longvid bench``'s MeMViT M=4 (recall of 4 cue classes; 4x32x32 clips of 1 s; memory read
    # by the last block only, so its reach is exactly 4 clips; temporal compression only, the
    # memory keeps its 2x2 pooled spatial tokens); shipped trained in longvid/weights/
    "memvit_tiny_recall": dataclasses.replace(
        _MEMVIT_TINY, num_classes=4, num_frames=4, crop_size=32, head_dropout=0.0, memory_len=4,
        sampler="consecutive", memory_blocks=(3,), compress_stride=(2, 1, 1),
    ),
    "memvit_tiny_causal": dataclasses.replace(_MEMVIT_TINY, head="anticipation", causal=True),
    "memvit_tiny_ava": dataclasses.replace(_MEMVIT_TINY, head="ava", num_classes=10, max_boxes=8, spatial_scale=1 / 32),
}


def get_config(name: str, **overrides) -> MeMViTConfig:
    """A preset's config with fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise LongvidError(f"unknown model preset {name!r}: choose from {', '.join(sorted(PRESETS))}")
    fields = {f.name for f in dataclasses.fields(MeMViTConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise LongvidError(f"unknown config field(s) {', '.join(unknown)} for {name!r}: fields are {', '.join(sorted(fields))}")
    return dataclasses.replace(PRESETS[name], **overrides)


def describe(name: str) -> str:
    """One line about preset ``name``: its size, clip, memory and head."""
    c = PRESETS[name]
    kind = f"MeMViT-{c.depth}" if c.memory_len else f"MViTv2-{c.depth}"
    memory = f"M={c.memory_len} {c.sampler}" if c.memory_len else "no memory"
    classes = "x".join(map(str, c.num_classes)) if isinstance(c.num_classes, tuple) else c.num_classes
    causal = ", causal" if c.causal else ""
    return f"{kind} width {c.embed_dim}, {c.num_frames}x{c.crop_size}x{c.crop_size} clips, {memory}, {c.head} head ({classes} classes){causal}"


def build_model(name: str, **overrides) -> MeMViT:
    """Build a preset (``PRESETS``), e.g. ``build_model("memvit_tiny", num_classes=10)``."""
    return MeMViT(get_config(name, **overrides))
