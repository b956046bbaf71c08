"""MeMViT / MViTv2 configs: one frozen dataclass and named presets in a plain dict.

Field names follow PySlowFast's ``MVIT.*`` / ``MEMVIT.*`` options (see the comment of
each field); parameter names of the model follow the released checkpoints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from longvid.errors import LongvidError
from longvid.core.presets import preset_config
from longvid.memvit.memory import KVMemorySpec

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
    # "default": PyTorch's conv init, as released; "average": fK / fV start as average pooling over
    # their kernel, so a memory entry starts as a pooled copy of its clip's keys / values and
    # attention learned on the current clip already reads it
    compress_init: str = "default"
    # Linear layers' initial std: "vit" = 0.02 (as released, for widths of hundreds); "fan_in" =
    # 1 / sqrt(fan_in), so a residual branch of a narrow model starts at the size of its input
    linear_init: str = "vit"
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
        if self.compress_init not in ("default", "average"):
            raise LongvidError(f"compress_init must be 'default' or 'average', got {self.compress_init!r}")
        if self.linear_init not in ("vit", "fan_in"):
            raise LongvidError(f"linear_init must be 'vit' or 'fan_in', got {self.linear_init!r}")
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
    # memory keeps its 2x2 pooled spatial tokens; compression starting as average pooling: with
    # PyTorch's random init, 2 seeds in 3 never learned to read memory; Linear layers at
    # 1/sqrt(fan_in): with ViT's 0.02 at widths 16-64 every residual branch starts near zero and
    # some seeds stayed on a plateau confusing two cue colours); shipped trained in longvid/weights/
    "memvit_tiny_recall": dataclasses.replace(
        _MEMVIT_TINY, num_classes=4, num_frames=4, crop_size=32, head_dropout=0.0, memory_len=4,
        sampler="consecutive", memory_blocks=(3,), compress_stride=(2, 1, 1), compress_init="average",
        linear_init="fan_in",
    ),
    "memvit_tiny_causal": dataclasses.replace(_MEMVIT_TINY, head="anticipation", causal=True),
    "memvit_tiny_ava": dataclasses.replace(_MEMVIT_TINY, head="ava", num_classes=10, max_boxes=8, spatial_scale=1 / 16),  # features at 1/16 of the input
}


def get_config(name: str, **overrides) -> MeMViTConfig:
    """A preset's config with fields replaced by ``overrides``."""
    return preset_config(PRESETS, name, "model", **overrides)


def describe(name: str) -> str:
    """One line about preset ``name``: its size, clip, memory and head."""
    c = PRESETS[name]
    kind = f"MeMViT-{c.depth}" if c.memory_len else f"MViTv2-{c.depth}"
    memory = f"M={c.memory_len} {c.sampler}" if c.memory_len else "no memory"
    classes = "x".join(map(str, c.num_classes)) if isinstance(c.num_classes, tuple) else c.num_classes
    causal = ", causal" if c.causal else ""
    return f"{kind} width {c.embed_dim}, {c.num_frames}x{c.crop_size}x{c.crop_size} clips, {memory}, {c.head} head ({classes} classes){causal}"
