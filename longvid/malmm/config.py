"""MA-LMM configuration: the Q-Former, the memory, the attached parts and decoding; presets.

A preset names everything a model needs. ``encoder`` / ``llm`` / ``qformer_tokenizer``
say where the frozen parts come from: ``"tiny"`` (tiny random ones built in memory by
:mod:`longvid.core.tiny`, nothing downloaded), a local path or hub id, or None (none
attached: give one to :func:`longvid.malmm.build_model`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from longvid.errors import LongvidError

TINY = "tiny"  # an encoder / LLM / tokenizer built in memory from the config


@dataclass(frozen=True)
class SparseMemoryConfig:
    """Native sparse attention over the memory banks (blocks are runs of memory slots)."""

    block_slots: int = 2  # memory slots per block (compression and selection unit)
    top_blocks: int = 2  # blocks each query position selects
    window_slots: int = 2  # newest memory slots in the sliding-window branch
    query: bool = True  # the query-memory self-attention is sparse
    visual: bool = True  # the cross-attention to the visual memory is sparse


@dataclass(frozen=True)
class QFormerConfig:
    """Q-Former shape and memory settings; defaults are InstructBLIP's (BERT-base)."""

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    cross_attention_freq: int = 2  # layers 0, f, 2f, ... cross-attend to the visual tokens
    encoder_width: int = 1408  # visual token width Cv
    num_query_tokens: int = 32
    vocab_size: int = 30523
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1  # hidden and attention-probability dropout
    memory_bank_length: int = 0  # L; 0: no memory, every frame on its own
    visual_memory: bool = True
    query_memory: bool = True
    sparse: SparseMemoryConfig | None = None  # native sparse attention over the memory banks

    @property
    def uses_memory(self) -> bool:
        return self.memory_bank_length > 0 and (self.visual_memory or self.query_memory)


@dataclass(frozen=True)
class MALMMConfig:
    """Model, memory, attached parts and decoding settings (defaults: the released QA setting)."""

    qformer: QFormerConfig = QFormerConfig(memory_bank_length=10)
    llm_hidden: int = 4096  # D: llm_proj output width (the LLM's embedding width)
    max_num_frames: int = 120  # rows of image_pe; later frames reuse the last row
    num_frames: int = 20  # T frames sampled per video (offline protocol)
    max_txt_len: int = 128  # Q-Former instruction tokens (truncated from the left)
    vision_layer_norm_eps: float = 1e-5  # ln_vision's eps (LAVIS: 1e-5; transformers' InstructBLIP: its vision config's)
    num_beams: int = 5
    max_new_tokens: int = 10
    min_new_tokens: int = 1
    repetition_penalty: float = 1.5
    length_penalty: float = 0.0
    encoder: str | None = None  # image encoder: "tiny", a path or hub id, or None (attach one)
    llm: str | None = None  # language model: "tiny", a path or hub id, or None (attach one)
    qformer_tokenizer: str | None = "bert-base-uncased"  # Q-Former instruction tokenizer ("tiny"; None: no instruction)


_TINY_QFORMER = QFormerConfig(
    hidden_size=64, num_layers=4, num_heads=4, intermediate_size=128, encoder_width=48,
    num_query_tokens=8, vocab_size=128, max_position_embeddings=64, memory_bank_length=5,
)  # fmt: skip
_TINY = MALMMConfig(
    qformer=_TINY_QFORMER, llm_hidden=32, max_num_frames=16, num_frames=12, max_txt_len=32, num_beams=2, max_new_tokens=4,
    encoder=TINY, llm=TINY, qformer_tokenizer=TINY,
)  # fmt: skip

PRESETS: dict[str, MALMMConfig] = {
    # paper / released settings (EVA ViT-g 1408-wide tokens, BERT-base Q-Former, Vicuna-7B)
    "malmm": MALMMConfig(),  # the released model's defaults (= malmm_qa); start it from InstructBLIP with pretrained=
    "malmm_qa": MALMMConfig(),
    "malmm_cls": MALMMConfig(qformer=QFormerConfig(memory_bank_length=20), num_frames=100, max_txt_len=30, max_new_tokens=20, length_penalty=1.0),
    "malmm_caption": MALMMConfig(qformer=QFormerConfig(memory_bank_length=40), num_frames=80, max_new_tokens=50, length_penalty=1.0),
    "malmm_nsa": MALMMConfig(
        qformer=QFormerConfig(memory_bank_length=20, sparse=SparseMemoryConfig(block_slots=4, top_blocks=2, window_slots=4)),
        num_frames=100, max_txt_len=30, max_new_tokens=20, length_penalty=1.0,
    ),  # the MA-LMM study's native-sparse-attention Q-Former on the LVU setting
    "instructblip_qa": MALMMConfig(qformer=QFormerConfig(memory_bank_length=0)),
    # tiny self-contained models (random CLIP encoder, LLaMA LLM and word tokenizer built in memory)
    "malmm_tiny": _TINY,
    "malmm_tiny_nsa": replace(
        _TINY, qformer=replace(_TINY_QFORMER, memory_bank_length=8, sparse=SparseMemoryConfig(block_slots=2, top_blocks=1, window_slots=2))
    ),
    "instructblip_tiny": replace(_TINY, qformer=replace(_TINY_QFORMER, memory_bank_length=0)),
}

_FIELDS = {f.name for f in fields(MALMMConfig)}
_QFORMER_FIELDS = {f.name for f in fields(QFormerConfig)}


def get_config(name: str, **overrides) -> MALMMConfig:
    """Preset ``name`` with fields replaced by ``overrides``: a field of :class:`MALMMConfig`
    or of its :class:`QFormerConfig` (e.g. ``memory_bank_length=3``, ``encoder_width=1024``)."""
    if name not in PRESETS:
        raise LongvidError(f"unknown MA-LMM preset {name!r}; choose one of {', '.join(PRESETS)}")
    unknown = sorted(set(overrides) - _FIELDS - _QFORMER_FIELDS)
    if unknown:
        raise LongvidError(f"unknown config field(s) {', '.join(unknown)} for {name!r}: fields are {', '.join(sorted(_FIELDS | _QFORMER_FIELDS))}")
    qformer = {k: v for k, v in overrides.items() if k in _QFORMER_FIELDS}
    config = replace(PRESETS[name], **{k: v for k, v in overrides.items() if k in _FIELDS})
    return replace(config, qformer=replace(config.qformer, **qformer)) if qformer else config


def describe(name: str) -> str:
    """One line about preset ``name``: Q-Former, memory, LLM width and where the frozen parts come from."""
    c = PRESETS[name]
    q = c.qformer
    kind = "MA-LMM" if q.uses_memory else "InstructBLIP (no memory)"
    memory = f"memory bank L={q.memory_bank_length}{', native sparse attention over the memory' if q.sparse else ''}, " if q.uses_memory else ""
    parts = "tiny random encoder and LLM built in memory" if c.encoder == TINY else "encoder and LLM by path or hub id, or all from InstructBLIP (pretrained=)"
    return (f"{kind}: Q-Former {q.num_layers}x{q.hidden_size}, {q.num_query_tokens} queries, {memory}"
            f"{q.encoder_width}-wide frames -> {c.llm_hidden}-wide LLM; {parts}")
