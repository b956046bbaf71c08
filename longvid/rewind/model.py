"""ReWind (CVPR 2025): read-perceive-write memory + dynamic frame selection + a LoRA-tuned LLM.

A stream model (``docs/streams.md``)::

    model = build_model("rewind_tiny")
    state = model.init_state(B, instructions=["what happens?"] * B)  # or None: unconditioned
    out, state = model(frames, state)        # Frames: T frames per stream (pixels, timestamps, valid)
    texts = model.answer(state, ["what happens?"] * B)

A step encodes each frame with the frozen image encoder; the frame's patch features go
to the state's frame store and, with the stream's instruction, through the
read-perceive-write memory (2 tokens per frame, ``out["memory_tokens"]``). When a
question is asked (from any state; ``until`` seconds: breakpoint mode) a frame selector
(dynamic frame selection by default) picks ``K_c`` stored frames whose original features
are pooled to 32 tokens each; the LLM reads::

    [memory tokens (N_W * frames)] [separator (1)] [frames (K_c * 32)] [question]

A re-read frame's tokens carry two learned codes (where the paper is silent): the frame's
place among the frames read (in temporal order) and each token's cell in the pooled grid,
so the LLM can tell which frame came first and where in the frame a thing is.

Frame relevance is the attention score between the pooled question and each frame's
memory tokens through the DFS projections (``select_query``, ``select_key``): the scaled
cosine of the two projections, the same score the frame-level stage-1 loss
(:meth:`ReWind.frame_contrastive_loss`) trains to match frames with their captions.

Training: stage 1 aligns the memory's Perceiver with captions through a SigLIP
sigmoid contrastive loss (:meth:`ReWind.contrastive_loss` for sub-clips and their
captions, :meth:`ReWind.frame_contrastive_loss` for frames and the captions of what each
shows); stage 2 tunes memory, projections (DFS ones included), separator and LoRA with
next-token cross-entropy on answers (:meth:`ReWind.answer_loss`). :meth:`ReWind.set_stage`
freezes the rest.

The hard top-``L`` choice passes no gradient to the DFS projections, and the paper does
not say how its stage 2 trains them; here the cross-entropy reaches them through a
score-function (REINFORCE) estimator: with ``policy_weight``, training reads ``K_c``
frames drawn from the relevance softmax and weighs the draw's log-probability by how
much worse its answer cross-entropy is than with the frames DFS would pick.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from longvid.errors import LongvidError
from longvid.core.llm import CausalLM, pad_ids
from longvid.core.seeding import seeded
from longvid.rewind.config import TINY_BACKBONES, RewindConfig, RewindMemoryConfig, get_config
from longvid.rewind.grounding import GroundingHead, best_span, pointer_loss, span_scores, span_seconds
from longvid.rewind.memory import MemoryState, RewindMemory
from longvid.rewind.selection import DFS, Candidates, relevance_scores, sample_top_indices
from longvid.rewind.store import FrameStore
from longvid.core.stream import Frames, dummy_frames


@dataclass(frozen=True)
class RewindState:
    """``B`` ReWind streams: memory, stored frame features and each stream's instruction.

    memory:           :class:`~longvid.rewind.memory.MemoryState`.
    frames:           :class:`~longvid.rewind.store.FrameStore`, the original features
                      of the kept frames (host memory or disk, whatever the state's device).
    instruction_ids:  ``(B, L)`` long, each stream's instruction tokens, right-padded.
    instruction_mask: ``(B, L)`` bool, True at real tokens (``L = 0``: unconditioned).

    A value: every method returns a new state. ``reset`` keeps the instructions.
    """

    memory: MemoryState
    frames: FrameStore
    instruction_ids: Tensor
    instruction_mask: Tensor

    @property
    def batch_size(self) -> int:
        return self.memory.batch_size

    def _check_mask(self, mask: Tensor) -> Tensor:
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if tuple(mask.shape) != (self.batch_size,):
            raise LongvidError(f"reset mask must have shape ({self.batch_size},), got {tuple(mask.shape)}")
        return mask

    def reset(self, mask: Tensor) -> "RewindState":
        """Streams where ``mask (B,)`` is True start a new video (memory and frames emptied)."""
        mask = self._check_mask(mask)
        return dataclasses.replace(self, memory=self.memory.reset(mask), frames=self.frames.reset(mask))

    def detach(self) -> "RewindState":
        return dataclasses.replace(self, memory=self.memory.detach())

    def index_select(self, index: Tensor) -> "RewindState":
        """The streams ``index`` (LongTensor ``(b,)``), in that order."""
        index = torch.as_tensor(index, dtype=torch.long)
        device = self.instruction_ids.device
        return RewindState(self.memory.index_select(index), self.frames.index_select(index),
                           self.instruction_ids[index.to(device)], self.instruction_mask[index.to(device)])

    def index_copy(self, index: Tensor, rows: "RewindState") -> "RewindState":
        """A copy with streams ``index`` replaced by the streams of ``rows``."""
        index = torch.as_tensor(index, dtype=torch.long)
        length = max(self.instruction_ids.shape[1], rows.instruction_ids.shape[1])
        ids, mask = (_pad_tokens(t, length).index_copy(0, index.to(t.device), _pad_tokens(r, length).to(t.device))
                     for t, r in ((self.instruction_ids, rows.instruction_ids), (self.instruction_mask, rows.instruction_mask)))
        return RewindState(self.memory.index_copy(index, rows.memory), self.frames.index_copy(index, rows.frames), ids, mask)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "RewindState":
        """Memory and instructions to ``device`` (``dtype``: the memory's activations); the
        frame store stays in host memory or on disk."""
        return RewindState(self.memory.to(device, dtype), self.frames, self.instruction_ids.to(device),
                           self.instruction_mask.to(device))

    @property
    def nbytes(self) -> int:
        """Bytes held: memory, instructions and stored frame features (RAM and disk)."""
        instruction = sum(t.element_size() * t.numel() for t in (self.instruction_ids, self.instruction_mask))
        return self.memory.nbytes + instruction + self.frames.ram_nbytes + self.frames.disk_nbytes

    def state_dict(self) -> dict[str, Tensor]:
        """Flat tensors: ``memory.*``, ``frames.*`` (spilled features read into it) and ``instruction.*``."""
        out = {f"memory.{k}": v for k, v in self.memory.state_dict().items()}
        out.update({f"frames.{k}": v for k, v in self.frames.state_dict().items()})
        out.update({"instruction.ids": self.instruction_ids, "instruction.mask": self.instruction_mask})
        return {k: v.contiguous() for k, v in out.items()}

    @classmethod
    def from_state_dict(cls, tensors: dict[str, Tensor]) -> "RewindState":
        """The state of :meth:`state_dict` (its frame store in RAM)."""
        def part(prefix: str) -> dict[str, Tensor]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        return cls(MemoryState.from_state_dict(part("memory.")), FrameStore.from_state_dict(part("frames.")),
                   tensors["instruction.ids"].long(), tensors["instruction.mask"].bool())


def _pad_tokens(tokens: Tensor, length: int) -> Tensor:
    """``(B, L)`` padded on the right with zeros (pad id 0 / False) to ``(B, length)``."""
    return F.pad(tokens, (0, length - tokens.shape[1]))


def pool_frame_features(features: Tensor, grid: tuple[int, int]) -> Tensor:
    """Average-pool each frame's patch grid to ``grid``: ``(n, P, D_v) -> (n, gh * gw, D_v)``.

    ``P`` is a square patch grid, optionally after a leading CLS token (dropped).
    """
    num_patches = features.shape[1]
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        side = math.isqrt(num_patches - 1)
        if side * side != num_patches - 1:
            raise LongvidError(f"cannot pool {num_patches} frame tokens: not a square patch grid (with or without CLS)")
        features = features[:, 1:]
    patches = features.reshape(features.shape[0], side, side, -1).permute(0, 3, 1, 2)  # (n, D_v, s, s)
    pooled = F.adaptive_avg_pool2d(patches, grid)  # (n, D_v, gh, gw)
    return pooled.flatten(2).transpose(1, 2)  # (n, gh * gw, D_v)


def sigmoid_contrastive_loss(video: Tensor, text: Tensor, log_scale: Tensor, bias: Tensor) -> Tensor:
    """SigLIP loss of ``B`` matching pairs ``video (B, E)``, ``text (B, E)`` (L2-normalised here).

    ``-1/B * sum_ij log sigmoid(z_ij * (exp(log_scale) * <v_i, t_j> + bias))`` with
    ``z_ii = 1`` and ``z_ij = -1`` for ``i != j``.
    """
    logits = F.normalize(video, dim=-1) @ F.normalize(text, dim=-1).T * log_scale.exp() + bias  # (B, B)
    labels = 2 * torch.eye(len(video), device=video.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / len(video)


def add_lora(llm: CausalLM, config: RewindConfig) -> CausalLM:
    """Wrap ``llm.model`` with peft LoRA (rank, alpha, dropout and targets from ``config``); returns ``llm``."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets))
    with warnings.catch_warnings():  # peft calls a transformers 5 API it deprecated; nothing for a user to do
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        llm.model = get_peft_model(llm.model, lora)
    return llm


class ReWind(nn.Module):
    """The whole ReWind system on a frozen image encoder and a causal LLM.

    Args:
        config: sizes and selection settings (LoRA on the LLM when ``lora_rank > 0``).
        encoder: the frozen image encoder (:class:`longvid.core.encoders.FrozenImageEncoder`
            or anything with ``encode_frames``: frames ``(N, 3, H, W)`` in [0, 1] -> ``(N, P, D_v)``).
        llm: the causal-LM adapter (:class:`longvid.core.llm.CausalLM`).
        selector: which stored frames the LLM reads (default: dynamic frame selection with the
            config's ``L``, ``K_c`` and DPC-KNN ``k``); see :mod:`longvid.rewind.selection`.
    """

    def __init__(self, config: RewindConfig, encoder: nn.Module, llm: CausalLM, selector=None):
        super().__init__()
        if llm.hidden_size != config.llm_dim:
            raise LongvidError(f"the language model's width {llm.hidden_size} does not match llm_dim={config.llm_dim}")
        self.config = config
        self.encoder = encoder.requires_grad_(False).eval()
        self.llm = add_lora(llm, config) if config.lora_rank else llm
        mem = config.memory
        self.memory = RewindMemory(mem)
        self.memory_proj = nn.Linear(mem.dim, config.llm_dim)
        self.frame_proj = nn.Linear(mem.vision_dim, config.llm_dim)
        self.separator = nn.Parameter(torch.randn(config.llm_dim) * 0.02)
        self.video_head = nn.Linear(mem.dim, config.embed_dim)
        self.text_head = nn.Linear(config.llm_dim, config.embed_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))  # SigLIP init t' = log 10, b = -10
        self.bias = nn.Parameter(torch.tensor(-10.0))
        self.grounding = GroundingHead(config.llm_dim, config.ground_dim)
        # DFS projections: relevance = exp(log_scale) * cos(select_query(pooled instruction),
        # select_key(a frame's mean memory token)), trained by the frame-level stage-1 loss.
        self.select_query = nn.Linear(config.llm_dim, mem.dim)
        self.select_key = nn.Linear(mem.dim, mem.dim)
        self.selector = DFS(config.top_l, config.num_select, config.dpc_k, cut=config.relevance_cut) if selector is None else selector
        # Where a re-read token comes from, added to it (zero at init): the frame's place among the frames
        # read (in temporal order; the last row for any further frame) and the token's cell in the pooled grid.
        self.frame_order = nn.Parameter(torch.zeros(config.num_select, config.llm_dim))
        self.frame_cell = nn.Parameter(torch.zeros(config.frame_tokens, config.llm_dim))

    # -- training stages -------------------------------------------------------------

    def set_stage(self, stage: int) -> list[nn.Parameter]:
        """Freeze everything but stage ``1`` (Perceiver, contrastive heads and DFS projections) or
        ``2`` (memory, projections, DFS projections and their scale, separator, re-read frame codes, grounding head,
        LoRA); returns the trainable parameters."""
        if stage not in (1, 2):
            raise LongvidError(f"ReWind has training stages 1 and 2, not {stage}")
        self.requires_grad_(False)
        if stage == 1:
            trainable = [self.memory, self.video_head, self.text_head, self.select_query, self.select_key]
        else:
            trainable = [self.memory, self.memory_proj, self.frame_proj, self.grounding, self.select_query, self.select_key]
            for param in (self.separator, self.frame_order, self.frame_cell):
                param.requires_grad_(True)
            for name, param in self.llm.named_parameters():
                param.requires_grad_("lora_" in name)
        for module in trainable:
            module.requires_grad_(True)
        self.log_scale.requires_grad_(True)
        self.bias.requires_grad_(True)
        return [p for p in self.parameters() if p.requires_grad]

    # -- the stream contract -------------------------------------------------------------

    def init_state(self, batch_size: int, device=None, instructions: Sequence[str] | None = None, keep_every: int = 1,
                   spill_dir: str | os.PathLike | None = None, feature_dtype: torch.dtype | None = None) -> RewindState:
        """Fresh streams: empty memory and frame store, one instruction per stream (the text the
        memory is written for; None: unconditioned). ``keep_every``, ``spill_dir``, ``feature_dtype``:
        the frame store's policy (:mod:`longvid.rewind.store`)."""
        device = self.separator.device if device is None else device
        if instructions is None:
            ids = torch.zeros(batch_size, 0, dtype=torch.long, device=device)
            mask = torch.zeros(batch_size, 0, dtype=torch.bool, device=device)
        elif isinstance(instructions, str) or len(instructions) != batch_size:
            raise LongvidError(f"give one instruction per stream: a list of {batch_size} strings")
        else:
            ids, mask = (t.to(device) for t in self.tokenize(list(instructions)))
        memory = self.memory.init_state(batch_size, self.config.clip_frames, device)
        return RewindState(memory, FrameStore.empty(batch_size, keep_every, feature_dtype, spill_dir), ids, mask)

    def dummy_inputs(self, batch_size: int, seed: int = 0) -> Frames:
        """``clip_frames`` random frames per stream at 1 fps (values from ``seed``; the global RNG is not touched)."""
        size = getattr(self.encoder, "image_size", 224)
        return dummy_frames(batch_size, self.config.clip_frames, size, seed=seed, device=self.separator.device)

    def forward(self, frames: Frames, state: RewindState) -> tuple[dict[str, Tensor], RewindState]:
        """One step: ``T`` frames per stream read into the memory and the frame store.

        Returns ``{"memory_tokens": (B, T, N_W, D)}`` (the tokens written for each frame; zeros at
        padded frames) and the new state. Padded frames (``frames.valid`` False) leave their stream as it was.
        """
        return self.observe_features(self.encode_frames(frames.pixels), frames.timestamps, state, frames.valid)

    @torch.no_grad()
    def encode_frames(self, pixels: Tensor) -> Tensor:
        """Frozen encoder features: pixels ``(B, T, 3, H, W)`` in [0, 1] -> ``(B, T, P, D_v)``."""
        features = self.encoder.encode_frames(pixels.flatten(0, 1))  # (B*T, P, D_v)
        return features.reshape(*pixels.shape[:2], *features.shape[1:]).to(self.separator.device)

    def observe_features(self, features: Tensor, timestamps: Tensor, state: RewindState,
                         valid: Tensor | None = None) -> tuple[dict[str, Tensor], RewindState]:
        """:meth:`forward` on frozen-encoder features ``(B, T, P, D_v)`` (e.g. cached ones), their
        ``timestamps (B, T)`` seconds and ``valid (B, T)`` bool (None: all real)."""
        if features.shape[0] != state.batch_size or tuple(timestamps.shape) != tuple(features.shape[:2]):
            raise LongvidError(f"a step of {state.batch_size} streams needs features (B, T, P, D_v) and timestamps (B, T), "
                               f"got {tuple(features.shape)} and {tuple(timestamps.shape)}")
        count = _valid_count(valid, features.shape[:2], features.device)  # (B,)
        text = self.embed_text(state.instruction_ids)  # (B, L, llm_dim)
        written, memory = self.memory.step(state.memory, features, text, state.instruction_mask,
                                           timestamps.to(features.device), count)
        stored = state.frames.append(state.memory.num_frames, features, count)
        return {"memory_tokens": written}, dataclasses.replace(state, memory=memory, frames=stored)

    def watch(self, frames: Frames, state: RewindState) -> RewindState:
        """Step through whole videos ``frames`` (``T`` = all their frames) ``clip_frames`` at a time."""
        for start in range(0, frames.num_frames, self.config.clip_frames):
            part = slice(start, start + self.config.clip_frames)
            valid = None if frames.valid is None else frames.valid[:, part]
            _, state = self(Frames(frames.pixels[:, part], frames.timestamps[:, part], valid), state)
        return state

    def watch_features(self, features: Tensor, timestamps: Tensor, state: RewindState) -> RewindState:
        """:meth:`watch` on frozen-encoder features ``(B, N, P, D_v)`` at ``timestamps (B, N)``."""
        for start in range(0, features.shape[1], self.config.clip_frames):
            part = slice(start, start + self.config.clip_frames)
            _, state = self.observe_features(features[:, part], timestamps[:, part], state)
        return state

    # -- text ----------------------------------------------------------------------------

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Token ids ``(B, L)`` (right-padded) and mask ``(B, L)`` bool of prompts (with BOS)."""
        return pad_ids(self.llm.tokenize_prompts(texts), self.llm.pad_id, self.separator.device)

    def embed_text(self, ids: Tensor) -> Tensor:
        """LLM input embeddings ``(B, L) -> (B, L, llm_dim)``."""
        return self.llm.embed(ids)

    def pooled_text(self, ids: Tensor, mask: Tensor | None) -> Tensor:
        """Mean LLM input embedding of each text's real tokens: ``(B, L) -> (B, llm_dim)``."""
        words = self.embed_text(ids)  # (B, L, llm_dim)
        if mask is None:
            return words.mean(dim=1)
        weights = mask.to(words.dtype)[..., None]
        return (words * weights).sum(1) / weights.sum(1).clamp(min=1)

    # -- frame selection -------------------------------------------------------------------

    def instruction_query(self, ids: Tensor, mask: Tensor | None) -> Tensor:
        """The DFS query ``(B, L) -> (B, D)``: the pooled question embedding through ``select_query``,
        unit length times ``exp(log_scale) * sqrt(D)`` (so that :func:`relevance_scores` against
        :meth:`frame_keys` is the stage-1 logit without its bias)."""
        query = F.normalize(self.select_query(self.pooled_text(ids, mask)), dim=-1)
        return query * self.log_scale.exp() * math.sqrt(query.shape[-1])

    def frame_keys(self, frame_tokens: Tensor) -> Tensor:
        """The DFS key of each frame, ``(n, N_W, D) -> (n, 1, D)``: its mean memory token through
        ``select_key``, unit length (the memory itself gets no gradient from selection)."""
        return F.normalize(self.select_key(frame_tokens.detach().mean(1)), dim=-1)[:, None]

    def frame_candidates(self, state: RewindState, ids: Tensor, mask: Tensor | None, until: float | None = None) -> list[Candidates]:
        """What a selector chooses from, per stream: the frames in memory (up to ``until``), their
        relevance to the questions ``ids (B, L)`` and their mean memory tokens."""
        query = self.instruction_query(ids, mask).detach()  # (B, D)
        found = []
        for stream in range(state.batch_size):
            tokens, times = state.memory.frame_tokens(stream, until)  # (n, N_W, D), (n,)
            relevance = relevance_scores(self.frame_keys(tokens).detach(), query[stream])  # (n,)
            found.append(Candidates(times, relevance, tokens.detach().mean(dim=1)))
        return found

    def select_ids(self, state: RewindState, ids: Tensor, mask: Tensor | None, until: float | None = None,
                   selector=None) -> list[Tensor]:
        """Each stream's frames for questions ``ids (B, L)``: indices ascending (``selector``: default the model's)."""
        _check_batch(state, len(ids))
        return (self.selector if selector is None else selector)(self.frame_candidates(state, ids, mask, until))

    def select(self, state: RewindState, questions: list[str], until: float | None = None, selector=None) -> list[Tensor]:
        """The frames each stream's LLM reads for ``questions`` (frame indices in its memory, ascending)."""
        return self.select_ids(state, *self.tokenize(questions), until, selector)

    def sample_selection(self, state: RewindState, ids: Tensor, mask: Tensor | None = None, until: float | None = None,
                         generator: torch.Generator | None = None) -> tuple[list[Tensor], Tensor]:
        """Training-time selection: per stream ``K_c`` frames drawn from the softmax of the relevance
        scores (:func:`longvid.rewind.selection.sample_top_indices`; drawing straight from the
        relevance lets training try every frame, where DPC-KNN would keep only density peaks).

        Returns the frames per stream (ascending) and the draws' log-probabilities ``(B,)``,
        differentiable in the DFS projections. ``generator`` defaults to one seeded from the
        global RNG.
        """
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        query = self.instruction_query(ids, mask)  # (B, D)
        chosen, log_probs = [], []
        for stream in range(query.shape[0]):
            tokens, _ = state.memory.frame_tokens(stream, until)  # (n, N_W, D)
            scores = relevance_scores(self.frame_keys(tokens), query[stream])  # (n,)
            frames, log_prob = sample_top_indices(scores, self.config.num_select, generator)
            chosen.append(frames)
            log_probs.append(log_prob)
        return chosen, torch.stack(log_probs)

    # -- the LLM -------------------------------------------------------------------------

    def prompt_embeddings(self, state: RewindState, ids: Tensor, mask: Tensor | None = None, until: float | None = None,
                          frames: list[Tensor] | None = None) -> list[Tensor]:
        """Each stream's LLM input before the answer: ``(N_W * n + 1 + K_c * 32 + L_b, llm_dim)`` (the
        shared adapter, :class:`~longvid.core.llm.CausalLM`, reads these ragged prompts left-padded).

        ``until``: breakpoint mode, only frames with timestamp ``<= until`` are used.
        ``frames``: the frames each stream's LLM reads (default: the model's selector's).
        """
        chosen = self.select_ids(state, ids, mask, until) if frames is None else frames
        instruction = self.embed_text(ids)  # (B, L, llm_dim)
        prompts = []
        for stream, picked in enumerate(chosen):
            tokens, _ = state.memory.frame_tokens(stream, until)
            memory = self.memory_proj(tokens.flatten(0, 1))  # (N_W * n, llm_dim)
            pooled = memory.new_zeros(0, self.config.llm_dim)  # (K_c * 32, llm_dim)
            if len(picked):
                features = state.frames.read(stream, picked).to(self.separator.device, self.separator.dtype)
                pooled = self.reread_tokens(features).flatten(0, 1)
            words = instruction[stream] if mask is None else instruction[stream][mask[stream].bool()]
            prompts.append(torch.cat([memory, self.separator[None], pooled, words]))
        return prompts

    def reread_tokens(self, features: Tensor) -> Tensor:
        """The LLM tokens of re-read frames, features ``(k, P, D_v)`` of ``k`` frames in temporal order ->
        ``(k, gh * gw, llm_dim)``: each pooled cell projected, plus the frame's order code (``frame_order``,
        the last row for frames past ``K_c``) and the cell's code (``frame_cell``)."""
        pooled = self.frame_proj(pool_frame_features(features, self.config.frame_pool))  # (k, gh * gw, llm_dim)
        order = torch.arange(len(features), device=pooled.device).clamp(max=len(self.frame_order) - 1)  # (k,)
        return pooled + self.frame_order[order][:, None] + self.frame_cell[None]

    @torch.no_grad()
    def generate(self, state: RewindState, ids: Tensor, mask: Tensor | None = None, until: float | None = None,
                 max_new_tokens: int = 32, frames: list[Tensor] | None = None, **kwargs) -> Tensor:
        """Generated answer token ids ``(B, <= max_new_tokens)`` (greedy unless ``kwargs`` say otherwise)."""
        prompts = self.prompt_embeddings(state, ids, mask, until, frames)
        return self.llm.generate_ids(prompts, None, max_new_tokens=max_new_tokens, do_sample=False, **kwargs)

    def answer(self, state: RewindState, questions: list[str], until: float | None = None, max_new_tokens: int = 32,
               selector=None, frames: list[Tensor] | None = None, **kwargs) -> list[str]:
        """Answer one question per stream, from the state as it is (asked at ``until`` seconds in
        breakpoint mode); ``selector`` / ``frames``: which stored frames the LLM reads.

        The memory is instruction-aware: it answers best the instructions it was written for.
        """
        ids, mask = self.tokenize(questions)
        frames = self.select_ids(state, ids, mask, until, selector) if frames is None else frames
        out = self.generate(state, ids, mask, until, max_new_tokens, frames, **kwargs)
        return [t.strip() for t in self.llm.tokenizer.batch_decode(out, skip_special_tokens=True)]

    @torch.no_grad()
    def score(self, state: RewindState, questions: list[str], candidates: list[str], until: float | None = None,
              selector=None, frames: list[Tensor] | None = None) -> Tensor:
        """Log-likelihood ``(B, K)`` (on the CPU) of each candidate answer (closed-set QA), every
        candidate read with the same frames (chosen once)."""
        ids, mask = self.tokenize(questions)
        frames = self.select_ids(state, ids, mask, until, selector) if frames is None else frames
        return self.llm.score(self.prompt_embeddings(state, ids, mask, until, frames), None, candidates, padding="left")

    # -- stage 2 ---------------------------------------------------------------------------

    def answer_loss(self, state: RewindState, questions: list[str], answers: list[str], until: float | None = None,
                    policy_weight: float | None = None, selector=None, frames: list[Tensor] | None = None) -> Tensor:
        """Stage-2 next-token cross-entropy of ``answers`` (+ EOS) given the streams and questions.

        ``policy_weight=None``, explicit ``frames``, or a selector that is not learned (random,
        oracle, ...): the LLM reads the frames the selector picks. A number (with DFS): it reads
        ``K_c`` frames drawn from the relevance softmax (:meth:`sample_selection`), and the
        gradient adds ``policy_weight`` times the REINFORCE term
        ``mean_b (ce_b(drawn) - ce_b(selected)) * grad log p_b(drawn)`` (the selected frames'
        cross-entropy is the baseline) that trains the DFS projections; ``0`` draws frames without
        training them. The value returned is the drawn frames' cross-entropy either way.
        """
        selector = self.selector if selector is None else selector
        ids, mask = self.tokenize(questions)
        if frames is not None or policy_weight is None or not selector.learned:
            frames = self.select_ids(state, ids, mask, until, selector) if frames is None else frames
            return self.llm.loss(self.prompt_embeddings(state, ids, mask, until, frames), None, answers, padding="left")

        def mean_nll(chosen: list[Tensor]) -> Tensor:  # (B,) each stream's mean cross-entropy over its answer (+ EOS)
            prompts = self.prompt_embeddings(state, ids, mask, until, chosen)
            return -self.llm.log_likelihood(prompts, None, answers, normalize=True, padding="left")

        drawn_frames, log_probs = self.sample_selection(state, ids, mask, until)
        drawn = mean_nll(drawn_frames)  # (B,)
        if policy_weight == 0:
            return drawn.mean()
        with torch.no_grad():
            baseline = mean_nll(self.select_ids(state, ids, mask, until, selector))  # (B,)
        # log p - sg(log p) is 0 with the gradient of log p: the loss still reads as a cross-entropy.
        surrogate = (drawn.detach() - baseline) * (log_probs - log_probs.detach())
        return drawn.mean() + policy_weight * surrogate.mean()

    # -- temporal grounding --------------------------------------------------------------

    def ground_logits(self, state: RewindState, ids: Tensor, mask: Tensor | None = None, until: float | None = None,
                      frames: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Start/end pointer logits over each stream's memory frames ``(B, 2, n_max)`` and
        their validity ``(B, n_max)`` bool, from the LLM's last hidden states: a frame is the
        mean of its ``N_W`` memory-token states, the pointer queries come from the last position."""
        hidden = self.llm.hidden_states(self.prompt_embeddings(state, ids, mask, until, frames))  # B x (L_b, llm_dim)
        counts = [len(state.memory.frame_tokens(b, until)[1]) for b in range(len(hidden))]
        num_write = self.config.memory.num_write
        frames = hidden[0].new_zeros(len(hidden), max(counts), hidden[0].shape[-1])  # (B, n_max, llm_dim)
        valid = torch.zeros(len(hidden), max(counts), dtype=torch.bool, device=frames.device)
        for b, (states, count) in enumerate(zip(hidden, counts)):  # a prompt starts with its memory tokens
            frames[b, :count] = states[: num_write * count].reshape(count, num_write, -1).mean(1)
            valid[b, :count] = True
        last = torch.stack([states[-1] for states in hidden])  # (B, llm_dim)
        return self.grounding(frames, last, valid), valid

    def grounding_loss(self, state: RewindState, questions: list[str], target_frames: Tensor,
                       until: float | None = None) -> Tensor:
        """Cross-entropy of the start and end pointers against ``target_frames (B, 2)`` frame indices."""
        ids, mask = self.tokenize(questions)
        logits, _ = self.ground_logits(state, ids, mask, until)
        return pointer_loss(logits, target_frames)

    @torch.no_grad()
    def ground(self, state: RewindState, questions: list[str], until: float | None = None) -> Tensor:
        """Predicted intervals ``(B, 2)`` in seconds: the most likely frame span ``start <= end``,
        widened by half a frame spacing on each side."""
        ids, mask = self.tokenize(questions)
        logits, valid = self.ground_logits(state, ids, mask, until)
        intervals = []
        for b in range(len(questions)):
            _, times = state.memory.frame_tokens(b, until)
            start, end = best_span(logits[b][:, valid[b]])
            intervals.append(span_seconds(times, start, end))
        return torch.tensor(intervals, dtype=torch.float64)

    @torch.no_grad()
    def score_spans(self, state: RewindState, questions: list[str], spans: Tensor, until: float | None = None) -> Tensor:
        """Scores ``(B, S)`` of the time spans ``spans (S, 2)`` seconds (e.g. DiDeMo's 21 proposals)
        by the grounding pointers: :func:`longvid.rewind.grounding.span_scores` of each stream."""
        ids, mask = self.tokenize(questions)
        logits, valid = self.ground_logits(state, ids, mask, until)
        rows = []
        for b in range(len(questions)):
            _, times = state.memory.frame_tokens(b, until)
            rows.append(span_scores(logits[b][:, valid[b]], times, spans))
        return torch.stack(rows)

    # -- stage 1 -----------------------------------------------------------------------

    def contrastive_loss(self, written: Tensor, num_valid: Tensor, caption_ids: Tensor, caption_mask: Tensor) -> Tensor:
        """SigLIP loss between sub-clips and their captions.

        ``written (B, F, N_W, D)`` the memory tokens written for each sub-clip (mean over
        its ``num_valid (B,)`` real frames), ``caption_ids / caption_mask (B, L)``.
        """
        real = (torch.arange(written.shape[1], device=written.device)[None] < num_valid[:, None]).to(written.dtype)
        video = (written.mean(2) * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp(min=1)  # (B, D)
        text = self.pooled_text(caption_ids, caption_mask)  # (B, llm_dim)
        return sigmoid_contrastive_loss(self.video_head(video), self.text_head(text), self.log_scale, self.bias)


    def frame_contrastive_loss(self, frame_tokens: Tensor, positives: Tensor, caption_ids: Tensor,
                               caption_mask: Tensor) -> Tensor:
        """Frame-level SigLIP loss: each frame's memory tokens against every caption, through the
        DFS projections (so it trains the relevance that selection reads, and the memory).

        ``frame_tokens (n, N_W, D)`` the tokens written for ``n`` frames, ``caption_ids / caption_mask
        (C, L)`` the captions, ``positives (n, C)`` bool: which captions describe which frame (a
        frame may match several captions, or none: then every caption is a negative for it).
        The loss is ``-1/n * sum_ij log sigmoid(z_ij * (exp(log_scale) * <v_i, t_j> + bias))``
        with ``z_ij = 1`` where ``positives`` and ``-1`` elsewhere.
        """
        video = F.normalize(self.select_key(frame_tokens.mean(1)), dim=-1)  # (n, D)
        text = F.normalize(self.select_query(self.pooled_text(caption_ids, caption_mask)), dim=-1)  # (C, D)
        logits = video @ text.T * self.log_scale.exp() + self.bias  # (n, C)
        labels = 2 * positives.to(logits.dtype) - 1
        return -F.logsigmoid(labels * logits).sum() / len(video)


def _valid_count(valid: Tensor | None, shape: torch.Size, device) -> Tensor:
    """Real frames per stream ``(B,)`` from ``valid (B, T)`` (None: all), which must be a prefix."""
    batch, steps = shape
    if valid is None:
        return torch.full((batch,), steps, dtype=torch.long, device=device)
    valid = valid.to(device=device, dtype=torch.bool)
    count = valid.sum(1)
    if not torch.equal(valid, torch.arange(steps, device=device)[None] < count[:, None]):
        raise LongvidError("Frames.valid must mark padding after a stream's last frame only (True, ..., True, False, ...)")
    return count


def _check_batch(state: RewindState, count: int) -> None:
    if count != state.batch_size:
        raise LongvidError(f"{count} questions for {state.batch_size} streams: ask one question per stream")


# -- building ----------------------------------------------------------------------------


def _encoder(name: str, encoder, config: RewindConfig, seed: int, device) -> nn.Module:
    """The image encoder: a module as given, loaded from a path or hub id, or the preset's tiny one."""
    from longvid.core.encoders import FrozenImageEncoder

    if isinstance(encoder, nn.Module):
        return encoder
    if encoder is not None:
        return FrozenImageEncoder.from_pretrained(os.fspath(encoder), device=device)
    if name not in TINY_BACKBONES:
        raise LongvidError(f"{name} needs an image encoder: build_model({name!r}, encoder=PATH_OR_HUB_ID_OR_MODULE, llm=...)")
    from longvid.core.tiny import tiny_vision

    return tiny_vision(hidden=config.memory.vision_dim, seed=seed, **TINY_BACKBONES[name]["vision"])


def _language_model(name: str, llm, config: RewindConfig, seed: int, device) -> CausalLM:
    """The LLM: a :class:`CausalLM` as given, loaded from a path or hub id, or the preset's tiny one."""
    if isinstance(llm, nn.Module):
        return llm
    if llm is not None:
        return CausalLM.from_pretrained(os.fspath(llm), device=device)
    if name not in TINY_BACKBONES:
        raise LongvidError(f"{name} needs a language model: build_model({name!r}, encoder=..., llm=PATH_OR_HUB_ID_OR_MODULE)")
    from longvid.core.tiny import tiny_llm

    return tiny_llm(hidden=config.llm_dim, seed=seed, **TINY_BACKBONES[name]["llm"])


def _read_checkpoint(path: str | os.PathLike | None) -> dict[str, Tensor] | None:
    from longvid.core.checkpoints import read_state_dict

    if path is None:
        return None
    if not os.path.isfile(path):
        raise LongvidError(f"{os.fspath(path)}: no such weights file")
    return read_state_dict(path)


def build_model(name: str, encoder=None, llm=None, checkpoint: str | os.PathLike | None = None, selector=None,
                seed: int = 0, device=None, **overrides) -> ReWind:
    """ReWind preset ``name`` on an image encoder and an LLM, with config fields replaced by ``overrides``.

    ``encoder`` / ``llm``: a module, or a local path or hub id to load (tiny presets build their
    own tiny random ones when not given). The memory's ``vision_dim`` / ``text_dim`` and
    ``llm_dim`` follow them. The memory, projections and LoRA start random (drawn from ``seed``;
    the global RNG is left as it was); ``checkpoint``: a file of :func:`trainable_state_dict`
    weights to load (read first, so a bad file fails before the backbones load).
    """
    base = get_config(name, **overrides)
    tensors = _read_checkpoint(checkpoint)
    vision = _encoder(name, encoder, base, seed, device)
    language = _language_model(name, llm, base, seed, device)
    width = getattr(vision, "width", base.memory.vision_dim)
    memory = RewindMemoryConfig(**{**base.memory.__dict__, "vision_dim": width, "text_dim": language.hidden_size})
    config = get_config(name, **{"memory": memory, "llm_dim": language.hidden_size, **overrides})
    with seeded(seed):
        model = ReWind(config, vision, language, selector)
    if tensors is not None:
        _load_checkpoint(model, tensors, checkpoint)
    return model.to(device)


def _load_checkpoint(model: ReWind, tensors: dict[str, Tensor], path: str | os.PathLike) -> None:
    from longvid.core.checkpoints import CheckpointError

    try:
        load_trainable(model, tensors)
    except LongvidError as err:
        raise CheckpointError(f"{os.fspath(path)}: {err}") from None


def trainable_state_dict(model: ReWind) -> dict[str, Tensor]:
    """The weights ReWind trains (everything but the frozen encoder and the frozen LLM base)."""
    return {name: tensor for name, tensor in model.state_dict().items()
            if not name.startswith(("encoder.", "llm.")) or "lora_" in name}


# Weights added after ReWind checkpoints were first written; they start at zero, so a checkpoint
# without them is the model it was trained as (no re-read frame codes).
ZERO_WHEN_ABSENT = ("frame_order", "frame_cell")


def load_trainable(model: ReWind, tensors: dict[str, Tensor]) -> None:
    """Load :func:`trainable_state_dict` weights; a missing or unexpected name is an error, but for
    :data:`ZERO_WHEN_ABSENT` weights, which then stay zero."""
    expected = set(trainable_state_dict(model))
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    for name in missing & set(ZERO_WHEN_ABSENT):
        getattr(model, name).data.zero_()
    missing -= set(ZERO_WHEN_ABSENT)
    if missing or unexpected:
        raise LongvidError(f"ReWind weights do not match the model: {len(missing)} missing, {len(unexpected)} unexpected "
                           f"(e.g. {sorted(missing or unexpected)[0]})")
    model.load_state_dict(tensors, strict=False)
