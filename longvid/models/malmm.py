"""MA-LMM (CVPR 2024): a memory-augmented Q-Former between a frozen image encoder and a frozen LLM.

Frames are processed strictly one at a time. Each frame's encoder tokens go through
``ln_vision`` and get the learned frame position embedding ``image_pe[t]`` (t = the
frame's index in its stream), then the Q-Former runs with its visual and query memory
banks (:mod:`longvid.models.qformer`). The current frame's query outputs, projected by
``llm_proj``, are the LLM's visual prefix. Unlike the released code, which re-runs the
whole clip per call, the model is online: ``queries, state = model(tokens, ...,
state)`` carries a :class:`MALMMState` per stream, and an answer can be asked from any
state with :meth:`MALMM.answer` / :meth:`MALMM.score`.

Without memory (``memory_bank_length = 0``, the InstructBLIP baseline) frames are
independent, get no position embedding, and the LLM receives every frame's queries in
frame order (so the state grows with the video).

Training (:meth:`MALMM.loss`) is next-token cross-entropy on the answer with the LLM
frozen; memories are detached, so gradients flow through the last frame's pass only,
as in the released code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Sequence

import torch
import torch.nn as nn

from longvid.errors import LongvidError
from longvid.models.qformer import QFormer, QFormerConfig, QFormerMemory, SparseMemoryConfig, load_qformer_state_dict


@dataclass(frozen=True)
class MALMMConfig:
    """Model, memory and decoding settings (defaults: the released QA setting)."""

    qformer: QFormerConfig = QFormerConfig(memory_bank_length=10)
    llm_hidden: int = 4096  # D: llm_proj output width (the LLM's embedding width)
    max_num_frames: int = 120  # rows of image_pe; later frames reuse the last row
    num_frames: int = 20  # T frames sampled per video (offline protocol)
    max_txt_len: int = 128  # Q-Former instruction tokens (truncated from the left)
    num_beams: int = 5
    max_new_tokens: int = 10
    min_new_tokens: int = 1
    repetition_penalty: float = 1.5
    length_penalty: float = 0.0


_TINY_QFORMER = QFormerConfig(
    hidden_size=64, num_layers=4, num_heads=4, intermediate_size=128, encoder_width=48,
    num_query_tokens=8, vocab_size=128, max_position_embeddings=64, memory_bank_length=5,
)

PRESETS: dict[str, MALMMConfig] = {
    # paper / released settings (EVA ViT-g 1408-wide tokens, BERT-base Q-Former, Vicuna-7B)
    "malmm_qa": MALMMConfig(),
    "malmm_cls": MALMMConfig(qformer=QFormerConfig(memory_bank_length=20), num_frames=100, max_txt_len=30, max_new_tokens=20, length_penalty=1.0),
    "malmm_caption": MALMMConfig(qformer=QFormerConfig(memory_bank_length=40), num_frames=80, max_new_tokens=50, length_penalty=1.0),
    "instructblip_qa": MALMMConfig(qformer=QFormerConfig(memory_bank_length=0)),
    # tiny models for tests and the benchmark
    "malmm_tiny": MALMMConfig(qformer=_TINY_QFORMER, llm_hidden=32, max_num_frames=16, num_frames=12, max_txt_len=32, num_beams=2, max_new_tokens=4),
    "malmm_tiny_nsa": MALMMConfig(
        qformer=replace(_TINY_QFORMER, memory_bank_length=8, sparse=SparseMemoryConfig(block_slots=2, top_blocks=2, window_slots=2)),
        llm_hidden=32, max_num_frames=16, num_frames=12, max_txt_len=32, num_beams=2, max_new_tokens=4,
    ),
    "instructblip_tiny": MALMMConfig(qformer=replace(_TINY_QFORMER, memory_bank_length=0), llm_hidden=32, max_num_frames=16, num_frames=12, max_txt_len=32, num_beams=2, max_new_tokens=4),
}


def get_config(name: str, **overrides) -> MALMMConfig:
    """A preset by name, with top-level fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise LongvidError(f"unknown MA-LMM preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


@dataclass
class MALMMState:
    """One batch of streams: Q-Former memory, frames seen, and the latest query outputs.

    ``frames_seen`` ``(B,)`` long; ``queries`` ``(B, Q, H)`` the current frame's query
    outputs with memory, ``(B, t * Q, H)`` all frames' without (None before any frame).
    """

    memory: QFormerMemory | None
    frames_seen: torch.Tensor
    queries: torch.Tensor | None

    def _tensors(self) -> list[torch.Tensor]:
        banks = [] if self.memory is None else [b for b in (self.memory.visual, *self.memory.query) if b is not None]
        return [t for b in banks for t in (b.slots, b.counts)] + ([] if self.queries is None else [self.queries])

    def nbytes(self) -> int:
        """Bytes held by the state (all streams): banks, counts and the latest queries."""
        return sum(t.numel() * t.element_size() for t in self._tensors()) + self.frames_seen.numel() * self.frames_seen.element_size()

    def memory_tokens(self) -> int:
        """Stored tokens per stream: visual bank slots x Nv plus every query bank's slots x (Q + Lt)."""
        if self.memory is None:
            return 0 if self.queries is None else self.queries.shape[1]
        banks = [b for b in (self.memory.visual, *self.memory.query) if b is not None]
        return sum(b.slots.shape[1] * b.slots.shape[2] for b in banks)


class MALMM(nn.Module):
    """``queries, state = model(frame_tokens, text_ids, text_mask, state, is_first)``.

    The encoder (:class:`~longvid.models.encoders.FrozenImageEncoder`), the LLM
    (:class:`~longvid.models.llm.CausalLM`) and the Q-Former's text tokenizer are optional
    attachments; the trainable part is ``ln_vision``, ``image_pe``, ``qformer`` and ``llm_proj``.
    """

    def __init__(self, config: MALMMConfig, encoder=None, llm=None, text_tokenizer=None):
        super().__init__()
        self.config = config
        q = config.qformer
        self.ln_vision = nn.LayerNorm(q.encoder_width, eps=1e-5)
        self.image_pe = nn.Embedding(config.max_num_frames, q.encoder_width)
        nn.init.zeros_(self.image_pe.weight)
        self.qformer = QFormer(q)
        self.llm_proj = nn.Linear(q.hidden_size, config.llm_hidden)
        self.encoder = encoder
        self.llm = llm
        self.text_tokenizer = text_tokenizer
        if llm is not None and llm.hidden_size != config.llm_hidden:
            raise LongvidError(f"the language model is {llm.hidden_size} wide but the config says llm_hidden={config.llm_hidden}")

    @property
    def uses_memory(self) -> bool:
        return self.config.qformer.uses_memory

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Parameters of the trainable part (no encoder, no LLM)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(("encoder.", "llm."))}

    # -- instruction text for the Q-Former --------------------------------------------------

    def tokenize_instructions(self, prompts: Sequence[str], device=None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Right-padded ``(B, Lt)`` ids and mask, truncated from the left to ``max_txt_len``
        (None, None without a text tokenizer: the Q-Former then sees only its queries)."""
        if self.text_tokenizer is None:
            return None, None
        tok = self.text_tokenizer
        tok.truncation_side = "left"
        tok.padding_side = "right"
        enc = tok(list(prompts), padding="longest", truncation=True, max_length=self.config.max_txt_len, return_tensors="pt")
        if int(enc["input_ids"].max()) >= self.config.qformer.vocab_size:
            raise LongvidError(f"the text tokenizer's ids exceed the Q-Former vocabulary ({self.config.qformer.vocab_size})")
        return enc["input_ids"].to(device), enc["attention_mask"].to(device)

    # -- the frame loop ---------------------------------------------------------------------

    def init_state(self, batch: int, device=None) -> MALMMState:
        return MALMMState(None, torch.zeros(batch, dtype=torch.long, device=device), None)

    def step(
        self,
        frame_tokens: torch.Tensor,
        text_ids: torch.Tensor | None,
        text_mask: torch.Tensor | None,
        state: MALMMState,
        is_first: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, MALMMState]:
        """One frame per stream: frame_tokens ``(B, Nv, Cv)`` (encoder output, before ln_vision)
        -> this frame's query outputs ``(B, Q, H)`` and the new state."""
        B = frame_tokens.shape[0]
        frames_seen, previous = state.frames_seen, state.queries
        if is_first is not None:
            is_first = is_first.to(frames_seen.device).bool()
            frames_seen = frames_seen.masked_fill(is_first, 0)
        tokens = self.ln_vision(frame_tokens)  # (B, Nv, Cv)
        Q = self.config.qformer.num_query_tokens
        if self.uses_memory:
            position = frames_seen.clamp_max(self.config.max_num_frames - 1)
            tokens = tokens + self.image_pe(position)[:, None, :]
            hidden, memory = self.qformer(tokens, text_ids, text_mask, state.memory, is_first)
            queries = hidden[:, :Q]  # (B, Q, H)
            return queries, MALMMState(memory, frames_seen + 1, queries)
        hidden, _ = self.qformer(tokens, text_ids, text_mask)
        queries = hidden[:, :Q]
        restart = previous is None or (is_first is not None and bool(is_first.all()))
        if not restart and is_first is not None and bool(is_first.any()):
            raise LongvidError("without memory, the streams of a batch must start together (is_first all True or all False)")
        stacked = queries if restart else torch.cat([previous, queries], 1)  # (B, t * Q, H)
        return queries, MALMMState(None, frames_seen + 1, stacked)

    def forward(
        self,
        frame_tokens: torch.Tensor,
        text_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        state: MALMMState | None = None,
        is_first: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, MALMMState]:
        """Frames ``(B, T, Nv, Cv)`` in order -> the LLM-bound queries of the state after the
        last of them (``(B, Q, H)``; ``(B, frames * Q, H)`` without memory) and the state.
        ``is_first`` ``(B,)`` resets streams before the first of these frames."""
        if frame_tokens.dim() != 4:
            raise LongvidError(f"frame tokens must be (B, T, N, C), got {tuple(frame_tokens.shape)}")
        if state is None:
            state = self.init_state(frame_tokens.shape[0], frame_tokens.device)
        for t in range(frame_tokens.shape[1]):
            _, state = self.step(frame_tokens[:, t], text_ids, text_mask, state, is_first if t == 0 else None)
        return state.queries, state

    def encode_pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """frames ``(B, T, 3, H, W)`` in [0, 1] -> encoder tokens ``(B, T, Nv, Cv)`` (needs an encoder)."""
        if self.encoder is None:
            raise LongvidError("this MA-LMM has no image encoder attached")
        B, T = frames.shape[:2]
        tokens = self.encoder.encode_frames(frames.flatten(0, 1))  # (B * T, Nv, Cv)
        return tokens.view(B, T, *tokens.shape[1:])

    # -- the language model ---------------------------------------------------------------------

    def visual_prefix(self, state: MALMMState) -> torch.Tensor:
        """``llm_proj`` of the state's queries: ``(B, Q, D)`` (``(B, t * Q, D)`` without memory)."""
        if state.queries is None:
            raise LongvidError("the stream has seen no frame yet")
        return self.llm_proj(state.queries)

    def _need_llm(self):
        if self.llm is None:
            raise LongvidError("this MA-LMM has no language model attached")
        return self.llm

    def loss(self, frame_tokens: torch.Tensor, prompts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
        """Answer cross-entropy for videos ``(B, T, Nv, Cv)`` with the prompt as Q-Former instruction."""
        llm = self._need_llm()
        text_ids, text_mask = self.tokenize_instructions(prompts, frame_tokens.device)
        _, state = self(frame_tokens, text_ids, text_mask)
        return llm.loss(self.visual_prefix(state), prompts, answers)

    @torch.no_grad()
    def answer(self, state: MALMMState, prompts: Sequence[str], num_return_sequences: int = 1) -> list[list[str]]:
        """Beam-search answers from the current state (decoding settings from the config)."""
        c = self.config
        return self._need_llm().generate(
            self.visual_prefix(state), prompts, num_beams=c.num_beams, max_new_tokens=c.max_new_tokens,
            min_new_tokens=c.min_new_tokens, repetition_penalty=c.repetition_penalty, length_penalty=c.length_penalty,
            num_return_sequences=num_return_sequences,
        )

    @torch.no_grad()
    def score(self, state: MALMMState, prompts: Sequence[str], candidates: Sequence[str]) -> torch.Tensor:
        """Log-likelihood ``(B, K)`` of each closed-set candidate answer given the current state."""
        return self._need_llm().score(self.visual_prefix(state), prompts, candidates)


def load_malmm_weights(model: MALMM, path_or_state: str | os.PathLike | dict, strict: bool = True) -> None:
    """Load a released MA-LMM / InstructBLIP checkpoint (``.pth`` with a ``model`` dict, or
    safetensors) or one saved from :meth:`MALMM.trainable_state_dict`.

    Released names: ``Qformer.bert.*``, ``query_tokens``, ``ln_vision.*``, ``llm_proj.*``,
    ``image_pe.weight`` (absent from InstructBLIP checkpoints: it stays zero).
    """
    from longvid.checkpoints import read_state_dict

    state = path_or_state if isinstance(path_or_state, dict) else read_state_dict(path_or_state)
    if not any(k.startswith("Qformer.") for k in state):
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith(("encoder.", "llm."))]
        if strict and (missing or result.unexpected_keys):
            raise LongvidError(f"checkpoint does not fit this MA-LMM: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
        return
    load_qformer_state_dict(model.qformer, state, strict=strict)
    for name in ("ln_vision.weight", "ln_vision.bias", "llm_proj.weight", "llm_proj.bias", "image_pe.weight"):
        if name in state:
            target = model.get_parameter(name)
            if target.shape != state[name].shape:
                raise LongvidError(f"checkpoint {name} is {tuple(state[name].shape)}, the model's is {tuple(target.shape)}")
            with torch.no_grad():
                target.copy_(state[name])
        elif strict and name != "image_pe.weight":
            raise LongvidError(f"checkpoint lacks {name}")


def build_malmm(
    preset: str = "malmm_qa",
    encoder: str | None = None,
    llm: str | None = None,
    qformer_tokenizer: str | None = "bert-base-uncased",
    checkpoint: str | None = None,
    device=None,
    **overrides,
) -> MALMM:
    """A ready MA-LMM: preset + encoder and LLM by path or hub id (+ trained weights).

    ``llm_hidden`` and the Q-Former's ``encoder_width`` follow the loaded LLM and encoder.
    ``qformer_tokenizer`` (None: no instruction text in the Q-Former) gets InstructBLIP's
    extra ``[DEC]`` token when it is a BERT tokenizer.
    """
    from longvid.models.encoders import FrozenImageEncoder
    from longvid.models.llm import CausalLM

    config = get_config(preset, **overrides)
    vision = FrozenImageEncoder.from_pretrained(encoder, device=device) if encoder else None
    language = CausalLM.from_pretrained(llm, device=device) if llm else None
    if vision is not None:
        config = replace(config, qformer=replace(config.qformer, encoder_width=vision.width))
    if language is not None:
        config = replace(config, llm_hidden=language.hidden_size)
    tokenizer = None
    if qformer_tokenizer:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(qformer_tokenizer)
        except (OSError, ValueError) as err:
            raise LongvidError(f"cannot load the Q-Former tokenizer {qformer_tokenizer!r}: {err}") from err
        if "bert" in type(tokenizer).__name__.lower():
            tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    model = MALMM(config, vision, language, tokenizer)
    if checkpoint:
        load_malmm_weights(model, checkpoint)
    return model.to(device) if device else model


@torch.no_grad()
def answer_stream(model: MALMM, frames, question: str, state: MALMMState | None = None) -> tuple[list[str], MALMMState]:
    """Watch ``frames`` (an iterable of ``(3, H, W)`` tensors in [0, 1]) one at a time with
    ``question`` as the Q-Former instruction, then answer it. Returns (beams, state)."""
    if model.encoder is None:
        raise LongvidError("this MA-LMM has no image encoder attached")
    model.eval()
    device = next(model.parameters()).device
    text_ids, text_mask = model.tokenize_instructions([question], device)
    state = state or model.init_state(1, device)
    for frame in frames:
        tokens = model.encoder.encode_frames(frame[None]).to(device)  # (1, Nv, Cv)
        _, state = model.step(tokens, text_ids, text_mask, state)
    if state.queries is None:
        raise LongvidError("no frames were read from the video")
    return model.answer(state, [question], num_return_sequences=1)[0], state
