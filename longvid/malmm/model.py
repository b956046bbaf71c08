"""MA-LMM (CVPR 2024): a memory-augmented Q-Former between a frozen image encoder and a frozen LLM.

A stream model (``docs/streams.md``)::

    model = build_model("malmm_tiny")
    state = model.init_state(B, instructions=questions)   # the Q-Former instruction per stream
    out, state = model(frames, state)                     # Frames: T frames per stream
    texts = model.answer(state, questions)                # from any state

Frames are processed strictly one at a time. Each frame's encoder tokens go through
``ln_vision`` and get the learned frame position embedding ``image_pe[t]`` (t = the
frame's index in its stream), then the Q-Former runs with its visual and query memory
banks (:mod:`longvid.malmm.qformer`). The current frame's query outputs,
projected by ``llm_proj``, are the LLM's visual prefix. Unlike the released code, which
re-runs the whole clip per call, the model is online: the memory is a
:class:`MALMMState` value per batch of streams, and an answer can be asked from any
state. :meth:`MALMM.step_tokens` is the same step on precomputed encoder tokens (the
encoder is frozen, so training and benchmarks encode each video once).

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
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from longvid.errors import LongvidError
from longvid.malmm.bank import MemoryBank
from longvid.malmm.config import TINY, MALMMConfig, get_config
from longvid.malmm.qformer import QFormer, QFormerMemory, load_qformer_state_dict
from longvid.core.stream import Frames, dummy_frames

DUMMY_FRAMES = 2  # frames per stream in dummy_inputs


@dataclass(frozen=True, eq=False)  # tensors: compare them, not states
class MALMMState:
    """The memory of B streams (a value: operations return new states).

    text_ids / text_mask: ``(B, Lt)`` long / bool, each stream's Q-Former instruction
        (right-padded; Lt = 0 without instructions).
    frames_seen: ``(B,)`` long, frames watched since the stream started.
    queries: with memory ``(B, Q, H)``, the newest frame's query outputs (zeros before the
        first frame); without memory ``(B, S, Q, H)``, every frame's, oldest first: the
        last ``frames_seen[b]`` slots of stream b are its frames, the ones before are empty.
    memory: the Q-Former's visual and query memory banks (None without memory).
    """

    text_ids: torch.Tensor
    text_mask: torch.Tensor
    frames_seen: torch.Tensor
    queries: torch.Tensor
    memory: QFormerMemory | None

    @property
    def batch_size(self) -> int:
        return self.frames_seen.shape[0]

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "MALMMState":
        """``fn`` applied to every tensor."""
        memory = None if self.memory is None else self.memory.map(lambda bank: bank.map(fn))
        return MALMMState(fn(self.text_ids), fn(self.text_mask), fn(self.frames_seen), fn(self.queries), memory)

    def _tensors(self) -> list[torch.Tensor]:
        found: list[torch.Tensor] = []
        self._map(lambda x: found.append(x) or x)
        return found

    @property
    def nbytes(self) -> int:
        """Bytes held by the state (all streams): instructions, counters, queries and banks."""
        return sum(t.numel() * t.element_size() for t in self._tensors())

    def memory_tokens(self) -> int:
        """Stored tokens per stream: visual bank slots x Nv plus every query bank's slots x (Q + Lt);
        without memory, every stored frame's queries."""
        if self.memory is None:
            return self.queries.shape[1] * self.queries.shape[2]
        return sum(bank.num_slots * bank.num_tokens for bank in self.memory.banks())

    def visual_tokens(self) -> torch.Tensor:
        """``(B,)`` long: the visual prefix length each stream gives the LLM now."""
        Q = self.queries.shape[-2]
        return self.frames_seen.clamp_max(1) * Q if self.memory is not None else self.frames_seen * Q

    def reset(self, mask: torch.Tensor) -> "MALMMState":
        """Streams where ``mask`` ``(B,)`` is True start a new video: memory, queries and frame count
        emptied (their instruction stays)."""
        mask = torch.as_tensor(mask, dtype=torch.bool, device=self.frames_seen.device)
        if mask.shape != self.frames_seen.shape:
            raise LongvidError(f"reset mask must have shape {tuple(self.frames_seen.shape)}, got {tuple(mask.shape)}")
        rows = mask.view(-1, *([1] * (self.queries.dim() - 1)))
        memory = None if self.memory is None else self.memory.reset(mask)
        return replace(self, frames_seen=self.frames_seen.masked_fill(mask, 0), queries=self.queries.masked_fill(rows, 0), memory=memory)

    def detach(self) -> "MALMMState":
        return self._map(torch.Tensor.detach)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "MALMMState":
        """Move to ``device``; ``dtype`` applies to the floating-point tensors (queries and banks)."""
        return self._map(lambda x: x.to(device=device, dtype=dtype if x.is_floating_point() else None))

    def index_select(self, index: torch.Tensor) -> "MALMMState":
        """The streams ``index`` ``(b,)``, in that order."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.frames_seen.device)
        return self._map(lambda x: x.index_select(0, index))

    def index_copy(self, index: torch.Tensor, rows: "MALMMState") -> "MALMMState":
        """A state with streams ``index`` replaced by ``rows`` (a state of ``len(index)`` streams).

        Instructions of different lengths are padded to the longer; banks and stored frames
        of different lengths get empty slots in front (the streams' outputs are unchanged,
        to float rounding)."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.frames_seen.device)
        if rows.batch_size != index.numel() or (rows.memory is None) != (self.memory is None):
            raise LongvidError(f"index_copy needs a state of {index.numel()} streams of the same model, got {rows.batch_size}")
        width = max(self.text_ids.shape[1], rows.text_ids.shape[1])
        full, rows = self._pad_text(width), rows._pad_text(width)
        if full.memory is None:
            slots = max(full.queries.shape[1], rows.queries.shape[1])
            full, rows = full._pad_frames(slots), rows._pad_frames(slots)
        memory = None if full.memory is None else full.memory.index_copy(index, rows.memory)
        copied = [a.index_copy(0, index, b) for a, b in zip(
            (full.text_ids, full.text_mask, full.frames_seen, full.queries), (rows.text_ids, rows.text_mask, rows.frames_seen, rows.queries)
        )]  # fmt: skip
        return MALMMState(*copied, memory)

    def _pad_text(self, width: int) -> "MALMMState":
        """Instructions padded (masked) to ``width`` tokens, with the query banks' positions."""
        extra = width - self.text_ids.shape[1]
        if extra == 0:
            return self
        memory = None if self.memory is None else QFormerMemory(
            self.memory.visual, tuple(bank.pad_tokens(bank.num_tokens + extra) for bank in self.memory.query)
        )  # fmt: skip
        return replace(self, text_ids=F.pad(self.text_ids, (0, extra)), text_mask=F.pad(self.text_mask, (0, extra)), memory=memory)

    def _drop_unused_frames(self) -> "MALMMState":
        """Without memory: the stored frames no stream needs (empty in every stream) dropped."""
        return replace(self, queries=self.queries[:, self.queries.shape[1] - int(self.frames_seen.max()) :])

    def _pad_frames(self, slots: int) -> "MALMMState":
        """Without memory: ``slots`` stored frames, empty ones added in front."""
        return replace(self, queries=F.pad(self.queries, (0, 0, 0, 0, slots - self.queries.shape[1], 0)))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat ``name -> tensor`` (``longvid.save_state``)."""
        out = {"text_ids": self.text_ids, "text_mask": self.text_mask, "frames_seen": self.frames_seen, "queries": self.queries}
        if self.memory is not None and self.memory.visual is not None:
            out.update({"visual.slots": self.memory.visual.slots, "visual.counts": self.memory.visual.counts})
        for i, bank in enumerate(self.memory.query if self.memory is not None else ()):
            out.update({f"query.{i}.slots": bank.slots, f"query.{i}.counts": bank.counts})
        return {k: v.contiguous() for k, v in out.items()}

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor]) -> "MALMMState":
        """The state :meth:`state_dict` gave."""
        visual = MemoryBank(tensors["visual.slots"], tensors["visual.counts"]) if "visual.slots" in tensors else None
        layers = sum(1 for k in tensors if k.startswith("query.") and k.endswith(".slots"))
        query = tuple(MemoryBank(tensors[f"query.{i}.slots"], tensors[f"query.{i}.counts"]) for i in range(layers))
        memory = QFormerMemory(visual, query) if visual is not None or query else None
        return cls(tensors["text_ids"].long(), tensors["text_mask"].bool(), tensors["frames_seen"].long(), tensors["queries"], memory)


class MALMM(nn.Module):
    """``out, state = model(frames, state)``: one step of B streams (see the module docstring).

    The encoder (:class:`~longvid.core.encoders.FrozenImageEncoder`), the LLM
    (:class:`~longvid.core.llm.CausalLM`) and the Q-Former's text tokenizer are optional
    attachments; the trainable part is ``ln_vision``, ``image_pe``, ``qformer`` and ``llm_proj``.
    """

    def __init__(self, config: MALMMConfig, encoder=None, llm=None, text_tokenizer=None):
        super().__init__()
        self.config = config
        q = config.qformer
        self.ln_vision = nn.LayerNorm(q.encoder_width, eps=config.vision_layer_norm_eps)
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

    # -- state and inputs -------------------------------------------------------------------

    def tokenize_instructions(self, instructions: Sequence[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids ``(B, Lt)`` and bool mask, truncated from the left to ``max_txt_len``
        (Lt = 0 without a text tokenizer: the Q-Former then sees only its queries)."""
        if self.text_tokenizer is None:
            return _no_instruction(len(instructions), device)
        tok = self.text_tokenizer
        tok.truncation_side = "left"
        tok.padding_side = "right"
        enc = tok(list(instructions), padding="longest", truncation=True, max_length=self.config.max_txt_len, return_tensors="pt")
        if int(enc["input_ids"].max()) >= self.config.qformer.vocab_size:
            raise LongvidError(f"the text tokenizer's ids exceed the Q-Former vocabulary ({self.config.qformer.vocab_size})")
        return enc["input_ids"].to(device), enc["attention_mask"].bool().to(device)

    def init_state(self, batch_size: int, device=None, instructions: Sequence[str] | None = None) -> MALMMState:
        """``batch_size`` fresh streams (device: the model's); ``instructions``: one Q-Former
        instruction per stream (None: the memory is written unconditioned)."""
        device = self.llm_proj.weight.device if device is None else device
        if instructions is None:
            return self.init_state_tokens(*_no_instruction(batch_size, device))
        if isinstance(instructions, str) or len(instructions) != batch_size:
            raise LongvidError(f"give one instruction per stream: a list of {batch_size} strings")
        return self.init_state_tokens(*self.tokenize_instructions(instructions, device))

    def init_state_tokens(self, text_ids: torch.Tensor, text_mask: torch.Tensor | None = None) -> MALMMState:
        """Fresh streams with tokenized instructions: ids ``(B, Lt)`` (right-padded), mask
        ``(B, Lt)`` (None: all real), on the ids' device."""
        if text_ids.dim() != 2:
            raise LongvidError(f"instruction ids must be (B, Lt), got {tuple(text_ids.shape)}")
        mask = torch.ones_like(text_ids, dtype=torch.bool) if text_mask is None else text_mask.to(text_ids.device).bool()
        (B, Lt), device, dtype = text_ids.shape, text_ids.device, self.llm_proj.weight.dtype
        q = self.config.qformer
        memory = self.qformer.init_memory(B, q.num_query_tokens + Lt, 0, device, dtype)  # Nv: set by the first frame
        frames = () if memory is not None else (0,)  # without memory: no frame stored yet
        queries = torch.zeros(B, *frames, q.num_query_tokens, q.hidden_size, device=device, dtype=dtype)
        return MALMMState(text_ids.long(), mask, torch.zeros(B, dtype=torch.long, device=device), queries, memory)

    def dummy_inputs(self, batch_size: int, seed: int = 0) -> Frames:
        """Valid :class:`Frames` for one step: ``DUMMY_FRAMES`` random frames per stream at the
        encoder's size (values from ``seed``; the global RNG is not touched)."""
        encoder = self._need_encoder()
        return dummy_frames(batch_size, DUMMY_FRAMES, encoder.image_size, seed, device=self.llm_proj.weight.device)

    # -- the step -----------------------------------------------------------------------------

    def encode(self, frames: Frames) -> torch.Tensor:
        """Frames ``(B, T, 3, H, W)`` in [0, 1] -> encoder tokens ``(B, T, Nv, Cv)`` (every frame,
        padding included, so a stream's tokens never depend on its neighbours' validity)."""
        encoder = self._need_encoder()
        B, T = frames.pixels.shape[:2]
        tokens = encoder.encode_frames(frames.pixels.flatten(0, 1))  # (B * T, Nv, Cv)
        return tokens.view(B, T, *tokens.shape[1:]).to(self.llm_proj.weight.device)

    def forward(self, frames: Frames, state: MALMMState) -> tuple[dict[str, torch.Tensor], MALMMState]:
        """One step: every stream's T frames (``frames.valid`` False: padding, skipped) through
        the encoder and the Q-Former memory. Timestamps are not used (MA-LMM positions frames
        by their index in the stream). Returns ``{"queries": (B, Q, H)}`` (each stream's newest
        frame's query outputs) and the new state; ``state`` is not modified."""
        if not isinstance(frames, Frames):
            raise LongvidError(f"MA-LMM steps on longvid.core.stream.Frames, got {type(frames).__name__} "
                               f"(precomputed encoder tokens go to step_tokens)")
        return self.step_tokens(self.encode(frames), state, frames.valid)

    def step_tokens(
        self, tokens: torch.Tensor, state: MALMMState, valid: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], MALMMState]:
        """:meth:`forward` on encoder tokens ``(B, T, Nv, Cv)`` (before ``ln_vision``); ``valid``
        ``(B, T)`` bool or None."""
        if tokens.dim() != 4:
            raise LongvidError(f"frame tokens must be (B, T, N, C), got {tuple(tokens.shape)}")
        if tokens.shape[0] != state.batch_size:
            raise LongvidError(f"the state holds {state.batch_size} streams but the step has {tokens.shape[0]}")
        if valid is not None:
            valid = valid.to(state.frames_seen.device).bool()
        for t in range(tokens.shape[1]):
            state = self._step_frame(tokens[:, t], state, None if valid is None else valid[:, t])
        newest = state.queries if self.uses_memory else state.queries[:, -1]  # (B, Q, H)
        return {"queries": newest}, state

    def _step_frame(self, frame: torch.Tensor, state: MALMMState, valid: torch.Tensor | None) -> MALMMState:
        """One frame ``(B, Nv, Cv)``; streams where ``valid`` ``(B,)`` is False keep their state."""
        if valid is None or bool(valid.all()):
            new = self._frame(frame, state)
        elif not bool(valid.any()):
            return state
        else:
            kept = (~valid).nonzero().squeeze(1)
            new = self._frame(frame, state).index_copy(kept, state.index_select(kept))
        return new if self.uses_memory else new._drop_unused_frames()

    def _frame(self, frame: torch.Tensor, state: MALMMState) -> MALMMState:
        """Every stream watches one frame ``(B, Nv, Cv)``."""
        tokens = self.ln_vision(frame.to(self.ln_vision.weight.dtype))  # (B, Nv, Cv); the encoder gives float32
        Q = self.config.qformer.num_query_tokens
        if self.uses_memory:
            position = state.frames_seen.clamp_max(self.config.max_num_frames - 1)
            tokens = tokens + self.image_pe(position)[:, None, :]
            hidden, memory = self.qformer(tokens, state.text_ids, state.text_mask, state.memory)
            return replace(state, frames_seen=state.frames_seen + 1, queries=hidden[:, :Q], memory=memory)
        hidden, _ = self.qformer(tokens, state.text_ids, state.text_mask)
        return replace(state, frames_seen=state.frames_seen + 1, queries=torch.cat([state.queries, hidden[:, None, :Q]], 1))  # (B, S + 1, Q, H)

    # -- the language model ---------------------------------------------------------------------

    def visual_prefixes(self, state: MALMMState) -> list[torch.Tensor]:
        """Each stream's visual prefix, ``llm_proj`` of its queries: B tensors ``(Q, D)`` with memory;
        without, ``(t_b * Q, D)`` for the ``t_b`` frames stream b has seen (ragged)."""
        seen = state.frames_seen
        if bool((seen == 0).any()):
            empty = ", ".join(str(i) for i in (seen == 0).nonzero().flatten().tolist())
            raise LongvidError(f"stream(s) {empty} have seen no frame yet")
        if self.uses_memory:
            return list(self.llm_proj(state.queries).unbind(0))  # B x (Q, D)
        S, Q = state.queries.shape[1:3]
        projected = self.llm_proj(state.queries.flatten(1, 2))  # (B, S * Q, D): the newest t_b frames are stream b's
        return [row[(S - count) * Q :] for row, count in zip(projected, seen.tolist())]

    def visual_prefix(self, state: MALMMState) -> torch.Tensor:
        """The streams' visual prefixes as one tensor ``(B, Q, D)`` (``(B, t * Q, D)`` without memory,
        when every stream has seen t frames)."""
        prefixes = self.visual_prefixes(state)
        if len({len(p) for p in prefixes}) > 1:
            raise LongvidError("the streams have seen different numbers of frames, so their visual prefixes differ in length")
        return torch.stack(prefixes)

    def _need_llm(self):
        if self.llm is None:
            raise LongvidError("this MA-LMM has no language model attached")
        return self.llm

    def _need_encoder(self):
        if self.encoder is None:
            raise LongvidError("this MA-LMM has no image encoder attached (build_model(name, encoder=...), or step_tokens on encoder tokens)")
        return self.encoder

    def loss(self, frame_tokens: torch.Tensor, prompts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
        """Answer cross-entropy for videos ``(B, T, Nv, Cv)`` with the prompt as Q-Former instruction."""
        llm = self._need_llm()
        state = self.init_state(frame_tokens.shape[0], frame_tokens.device, instructions=prompts)
        _, state = self.step_tokens(frame_tokens, state)
        return llm.loss(self.visual_prefixes(state), prompts, answers)

    @torch.no_grad()
    def answer(self, state: MALMMState, questions: Sequence[str]) -> list[str]:
        """The best beam-search answer per stream from the current state (decoding settings from the config)."""
        llm, c = self._need_llm(), self.config
        _check_questions(state, questions)
        beams = llm.generate(
            self.visual_prefixes(state), list(questions), num_beams=c.num_beams, max_new_tokens=c.max_new_tokens,
            min_new_tokens=c.min_new_tokens, repetition_penalty=c.repetition_penalty, length_penalty=c.length_penalty,
        )  # fmt: skip
        return [best[0] for best in beams]

    @torch.no_grad()
    def score(self, state: MALMMState, questions: Sequence[str], candidates: Sequence[str]) -> torch.Tensor:
        """Log-likelihood ``(B, K)`` of each closed-set candidate answer given the current state."""
        llm = self._need_llm()
        _check_questions(state, questions)
        return llm.score(self.visual_prefixes(state), list(questions), candidates)


def _no_instruction(batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Empty instructions: ids ``(B, 0)`` and mask."""
    ids = torch.zeros(batch_size, 0, dtype=torch.long, device=device)
    return ids, ids.bool()


def _check_questions(state: MALMMState, questions: Sequence[str]) -> None:
    if isinstance(questions, str) or len(questions) != state.batch_size:
        raise LongvidError(f"give one question per stream: a list of {state.batch_size} strings")


def load_malmm_weights(model: MALMM, path_or_state: str | os.PathLike | dict, strict: bool = True) -> None:
    """Load a released MA-LMM / InstructBLIP checkpoint (``.pth`` with a ``model`` dict, or
    safetensors) or one saved from :meth:`MALMM.trainable_state_dict`.

    Released names: ``Qformer.bert.*``, ``query_tokens``, ``ln_vision.*``, ``llm_proj.*``,
    ``image_pe.weight`` (absent from InstructBLIP checkpoints: it stays zero).
    """
    from longvid.core.checkpoints import read_state_dict

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


# -- building -------------------------------------------------------------------------------


def build_model(name: str, encoder=None, llm=None, checkpoint: str | os.PathLike | None = None, seed: int = 0, device=None,
                pretrained: str | os.PathLike | None = None, dtype: torch.dtype | None = None, **overrides) -> MALMM:
    """Preset ``name`` (fields replaced by ``overrides``, see :func:`get_config`) with its frozen parts.

    ``pretrained``: a ``transformers`` InstructBLIP checkpoint (folder or hub id) giving the
    vision tower, Q-Former, query tokens, ``ln_vision``, ``llm_proj``, LLM, tokenizers and image
    statistics (:mod:`longvid.malmm.instructblip`; ``dtype`` for its frozen parts); the
    preset then sets only the memory, sampling and decoding. Otherwise ``encoder`` / ``llm``: a
    path or hub id (replacing the preset's), or a ready
    :class:`~longvid.core.encoders.FrozenImageEncoder` / :class:`~longvid.core.llm.CausalLM`;
    by default the preset's (``"tiny"``: random tiny ones built in memory from ``seed``;
    None: none attached). The Q-Former's ``encoder_width`` and ``llm_hidden`` follow the
    attached parts. Trainable weights are drawn from ``seed`` without touching the global
    RNG, then ``checkpoint`` (ours, or a released MA-LMM / LAVIS ``.pth``) is loaded if given.
    What each weights file gave is in ``model.weight_reports`` (missing / unexpected tensors).
    """
    from longvid.malmm.instructblip import read_instructblip

    parts = read_instructblip(pretrained, dtype=dtype, device=device) if pretrained is not None else None
    if parts is not None:
        config = get_config(name, **{**parts.config_fields, "encoder": os.fspath(pretrained), "llm": os.fspath(pretrained),
                                     "qformer_tokenizer": os.fspath(pretrained), **overrides})
        vision, language, tokenizer = parts.encoder, parts.llm, parts.qformer_tokenizer
    else:
        names = {k: v for k, v in (("encoder", encoder), ("llm", llm)) if isinstance(v, str)}
        config = get_config(name, **names, **overrides)
        vision = encoder if isinstance(encoder, nn.Module) else _load_encoder(config, seed, device)
        language = llm if isinstance(llm, nn.Module) else _load_llm(config, seed, device)
        if vision is not None:
            config = replace(config, qformer=replace(config.qformer, encoder_width=vision.width))
        if language is not None:
            config = replace(config, llm_hidden=language.hidden_size)
        tokenizer = _load_qformer_tokenizer(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MALMM(config, vision, language, tokenizer)
    model.weight_reports = []
    if parts is not None:
        model.weight_reports.append(_load_lavis(model, parts.weights).line(os.fspath(pretrained)))
    if checkpoint:
        model.weight_reports.append(load_checkpoint(model, checkpoint))
    return model.to(device) if device else model


def _load_lavis(model: MALMM, state: dict[str, torch.Tensor]):
    from longvid.malmm.instructblip import load_lavis_weights

    return load_lavis_weights(model, state)


def load_checkpoint(model: MALMM, path: str | os.PathLike) -> str:
    """Load weights file ``path`` into ``model``: a released MA-LMM / LAVIS ``.pth`` (names
    ``Qformer.bert.*`` ...: loaded where they fit, see
    :func:`~longvid.malmm.instructblip.load_lavis_weights`) or longvid's own (all
    trainable tensors required). Returns a one-line report of loaded / missing / unexpected tensors."""
    from longvid.core.checkpoints import read_state_dict

    state = read_state_dict(path)
    if any(k.startswith("Qformer.") for k in state):
        return _load_lavis(model, state).line(os.fspath(path))
    load_malmm_weights(model, state)
    return f"{os.fspath(path)}: loaded {len(state)} tensors; missing 0; unexpected 0"


def _load_encoder(config: MALMMConfig, seed: int, device):
    from longvid.core.encoders import FrozenImageEncoder
    from longvid.core.tiny import tiny_vision

    if config.encoder == TINY:
        return tiny_vision(hidden=config.qformer.encoder_width, seed=seed)
    return FrozenImageEncoder.from_pretrained(config.encoder, device=device) if config.encoder else None


def _load_llm(config: MALMMConfig, seed: int, device):
    from longvid.core.llm import CausalLM
    from longvid.core.tiny import tiny_llm

    if config.llm == TINY:
        return tiny_llm(hidden=config.llm_hidden, seed=seed)
    return CausalLM.from_pretrained(config.llm, device=device) if config.llm else None


def _load_qformer_tokenizer(config: MALMMConfig):
    """The Q-Former's instruction tokenizer (BERT ones get InstructBLIP's extra ``[DEC]`` token)."""
    from longvid.core.tiny import tiny_tokenizer

    if config.qformer_tokenizer == TINY:
        tokenizer = tiny_tokenizer()
    elif config.qformer_tokenizer:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(config.qformer_tokenizer)
        except (OSError, ValueError) as err:
            raise LongvidError(f"cannot load the Q-Former tokenizer {config.qformer_tokenizer!r}: {err}") from err
        if "bert" in type(tokenizer).__name__.lower():
            tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    else:
        return None
    if len(tokenizer) > config.qformer.vocab_size:
        raise LongvidError(f"the Q-Former tokenizer has {len(tokenizer)} tokens, more than the Q-Former vocabulary ({config.qformer.vocab_size})")
    return tokenizer
