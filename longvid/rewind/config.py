"""ReWind's configuration: sizes of the memory and of the whole system, and the named presets.

``rewind_paper`` is the paper's system (EVA-CLIP ViT-g features, LLaMA-2 7B); it needs an
image encoder and an LLM given to :func:`longvid.rewind.build_model`. ``rewind_tiny``
has tiny widths and the same structure, and builds its own tiny random backbones
(:data:`TINY_BACKBONES`) when none are given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from longvid.errors import LongvidError
from longvid.core.presets import preset_config


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


@dataclass(frozen=True)
class RewindConfig:
    """A whole ReWind system. ``memory.text_dim`` must equal ``llm_dim``: the
    instruction's text encoding is the LLM's input embeddings of its tokens."""

    memory: RewindMemoryConfig = field(default_factory=RewindMemoryConfig)
    llm_dim: int = 4096  # LLaMA-2 7B hidden size
    clip_frames: int = 16  # F frames per sub-clip at 1 fps
    top_l: int = 64  # L frames kept by instruction relevance
    num_select: int = 8  # K_c frames kept by DPC-KNN
    dpc_k: int = 5  # DPC-KNN neighbours
    relevance_cut: bool = False  # not in the paper: cut the top L at their largest relevance drop before DPC-KNN
    frame_pool: tuple[int, int] = (4, 8)  # patch grid of a selected frame pooled to 4 x 8 = 32 tokens
    lora_rank: int = 64  # 0: no LoRA
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    embed_dim: int = 256  # stage-1 contrastive embedding width
    ground_dim: int = 256  # grounding head's pointer width

    def __post_init__(self):
        if self.memory.text_dim != self.llm_dim:
            raise LongvidError(f"memory.text_dim ({self.memory.text_dim}) must equal llm_dim ({self.llm_dim})")
        if not 1 <= self.clip_frames <= self.memory.max_clip_frames:
            raise LongvidError(f"clip_frames {self.clip_frames} must be in 1..memory.max_clip_frames ({self.memory.max_clip_frames})")

    @property
    def frame_tokens(self) -> int:
        """Tokens per selected frame."""
        return self.frame_pool[0] * self.frame_pool[1]


PRESETS: dict[str, RewindConfig] = {
    # The paper: EVA-CLIP ViT-g features (1408), LLaMA-2 7B, N_R=32, N_W=2, L=64, K_c=8, 32 tokens/frame, LoRA 64/32.
    "rewind_paper": RewindConfig(),
    # Tests and CPU demos: tiny widths, the same structure.
    "rewind_tiny": RewindConfig(
        memory=RewindMemoryConfig(dim=32, vision_dim=32, text_dim=64, num_read=4, num_write=2, num_heads=4,
                                  perceiver_layers=1, mlp_ratio=2.0, max_clip_frames=16),
        llm_dim=64, clip_frames=8, top_l=8, num_select=2, dpc_k=2, frame_pool=(2, 2),
        lora_rank=4, lora_alpha=8, lora_dropout=0.0, embed_dim=16, ground_dim=32,
    ),
}

# Presets that build their own backbones when no encoder / LLM is given: keyword arguments of
# longvid.core.tiny.tiny_vision (its width is the preset's memory.vision_dim) and tiny_llm
# (its width is llm_dim).
TINY_BACKBONES: dict[str, dict[str, dict]] = {
    "rewind_tiny": {"vision": {"arch": "clip", "image_size": 32, "patch": 8}, "llm": {"arch": "llama", "layers": 2}},
}


def get_config(name: str, **overrides) -> RewindConfig:
    """A preset by name, with fields replaced by ``overrides``."""
    return preset_config(PRESETS, name, "ReWind", **overrides)


def describe(name: str) -> str:
    """One line about preset ``name``: memory, selection, LLM and where its backbones come from."""
    c = PRESETS[name]
    m = c.memory
    backbones = "tiny random CLIP + LLaMA built in memory" if name in TINY_BACKBONES else "needs encoder= and llm="
    return (f"ReWind, memory D={m.dim} N_R={m.num_read}, {m.num_write} tokens per frame, {c.clip_frames}-frame sub-clips, "
            f"DFS L={c.top_l}{' cut at the largest relevance drop' if c.relevance_cut else ''} -> K_c={c.num_select} frames x {c.frame_tokens} tokens, LLM width {c.llm_dim}, "
            f"LoRA r={c.lora_rank}; {backbones}")
