"""ReWind (CVPR 2025): read-perceive-write memory + dynamic frame selection + a LoRA-tuned LLM.

A stream is watched sub-clip by sub-clip (:meth:`ReWind.observe`): a frozen image
encoder gives each frame's patch features, which go to the feature buffer and, with
the instruction's text encoding, through the read-perceive-write memory (2 tokens
per frame). When a question is asked (at the end, or at a breakpoint ``until``
seconds), dynamic frame selection picks ``K_c`` frames whose original features are
pooled to 32 tokens each; the LLM reads::

    [memory tokens (N_W * frames)] [separator (1)] [frames (K_c * 32)] [instruction]

Frame relevance is the attention score between the pooled instruction and each frame's
memory tokens through the DFS projections (``select_query``, ``select_key``).

Training: stage 1 aligns the memory's Perceiver with captions through a SigLIP
sigmoid contrastive loss (:meth:`ReWind.contrastive_loss`); stage 2 tunes memory,
projections (DFS ones included), separator and LoRA with next-token cross-entropy on
answers (:meth:`ReWind.answer_loss`). :meth:`ReWind.set_stage` freezes the rest.

The hard top-``L`` choice passes no gradient to the DFS projections, and the paper does
not say how its stage 2 trains them; here the cross-entropy reaches them through a
score-function (REINFORCE) estimator: with ``policy_weight``, training reads ``K_c``
frames drawn from the relevance softmax and weighs the draw's log-probability by how
much worse its answer cross-entropy is than with the frames DFS would pick.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from longvid.errors import LongvidError
from longvid.memory.rewind import FeatureBuffer, RewindMemory, RewindMemoryConfig, RewindState
from longvid.memory.selection import relevance_scores, sample_top_indices, select_frames
from longvid.models.llm import IGNORE, CausalLM, answer_log_likelihood


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
    dpc: bool = True  # False: keep the K_c most relevant frames, no DPC-KNN (an ablation)
    frame_pool: tuple[int, int] = (4, 8)  # patch grid of a selected frame pooled to 4 x 8 = 32 tokens
    use_dfs: bool = True  # False: the LLM reads memory tokens and the separator only
    lora_rank: int = 64
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    embed_dim: int = 256  # stage-1 contrastive embedding width
    ground_dim: int = 256  # grounding head's pointer width

    def __post_init__(self):
        if self.memory.text_dim != self.llm_dim:
            raise LongvidError(f"memory.text_dim ({self.memory.text_dim}) must equal llm_dim ({self.llm_dim})")
        if self.clip_frames > self.memory.max_clip_frames:
            raise LongvidError(f"clip_frames {self.clip_frames} exceeds memory.max_clip_frames {self.memory.max_clip_frames}")

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


def get_config(name: str, **overrides) -> RewindConfig:
    """A preset by name, with fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise LongvidError(f"unknown ReWind preset {name!r}; choose from {', '.join(PRESETS)}")
    config = PRESETS[name]
    return RewindConfig(**{**config.__dict__, **overrides}) if overrides else config


@dataclass
class RewindStreamState:
    """Everything a batch of streams carries: the memory and the feature buffer."""

    memory: RewindState
    buffer: FeatureBuffer

    def nbytes(self) -> dict[str, int]:
        """Bytes used: memory tokens, feature buffer in RAM and on disk."""
        return {"memory": self.memory.nbytes(), "buffer_ram": self.buffer.ram_bytes, "buffer_disk": self.buffer.disk_bytes}


def pool_frame_features(features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
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


def sigmoid_contrastive_loss(video: torch.Tensor, text: torch.Tensor, log_scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
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


class GroundingHead(nn.Module):
    """Start/end pointers over frames: two queries from a summary state, one key per frame.

    ``forward(frames (B, n, E), final (B, E), valid (B, n) bool) -> logits (B, 2, n)``
    (``-inf`` at invalid frames); row 0 points at the first frame of the moment, row 1 at its last.
    """

    def __init__(self, dim: int, head_dim: int):
        super().__init__()
        self.query = nn.Linear(dim, 2 * head_dim)
        self.key = nn.Linear(dim, head_dim)
        self.head_dim = head_dim

    def forward(self, frames: torch.Tensor, final: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        queries = self.query(final).view(final.shape[0], 2, self.head_dim)  # (B, 2, d)
        logits = queries @ self.key(frames).transpose(1, 2) / math.sqrt(self.head_dim)  # (B, 2, n)
        return logits.masked_fill(~valid[:, None, :], float("-inf"))


def pointer_loss(logits: torch.Tensor, target_frames: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of start/end pointer ``logits (B, 2, n)`` against frame indices ``(B, 2)``."""
    return F.cross_entropy(logits.flatten(0, 1).float(), target_frames.flatten().to(logits.device))


def best_span(logits: torch.Tensor) -> tuple[int, int]:
    """The frame span ``(start, end)``, ``start <= end``, maximizing ``log p(start) + log p(end)``
    under pointer ``logits (2, n)``."""
    log_p = logits.float().log_softmax(-1)
    joint = (log_p[0][:, None] + log_p[1][None, :]).triu()  # (n, n); entries below the diagonal are 0
    joint = joint.masked_fill(torch.ones_like(joint, dtype=torch.bool).tril(-1), float("-inf"))
    flat = int(joint.flatten().argmax())
    return flat // joint.shape[1], flat % joint.shape[1]


def span_seconds(times: torch.Tensor, start: int, end: int) -> tuple[float, float]:
    """Seconds covered by frames ``start..end`` of frames at ``times (n,)``: half the frame
    spacing (1 s for a single frame) before the first and after the last."""
    spacing = float(times[1] - times[0]) if len(times) > 1 else 1.0
    return float(times[start]) - spacing / 2, float(times[end]) + spacing / 2


def frames_in(times: torch.Tensor, interval: tuple[float, float]) -> tuple[int, int]:
    """First and last of the frames at ``times (n,)`` inside ``[start, end)`` (the nearest
    frame to the interval's centre when none is): pointer targets for grounding."""
    inside = ((times >= interval[0]) & (times < interval[1])).nonzero().flatten()
    if len(inside) == 0:
        centre = int((times - (interval[0] + interval[1]) / 2).abs().argmin())
        return centre, centre
    return int(inside[0]), int(inside[-1])


class ReWind(nn.Module):
    """The whole ReWind system on a frozen image encoder and a causal LLM.

    Args:
        config: sizes and selection settings.
        vision: the shared frozen image encoder (:class:`longvid.models.encoders.FrozenImageEncoder`
            or anything with ``encode_frames``: frames ``(N, 3, H, W)`` in [0, 1] -> ``(N, P, D_v)``).
        llm: the shared causal-LM adapter (:class:`longvid.models.llm.CausalLM`).
        lora: wrap ``llm.model`` with peft LoRA (rank/alpha/targets from ``config``).
    """

    def __init__(self, config: RewindConfig, vision: nn.Module, llm: CausalLM, lora: bool = True):
        super().__init__()
        if llm.hidden_size != config.llm_dim:
            raise LongvidError(f"the language model's width {llm.hidden_size} does not match llm_dim={config.llm_dim}")
        self.config = config
        self.vision = vision.requires_grad_(False).eval()
        self.llm = add_lora(llm, config) if lora else llm
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
        # DFS projections: relevance = <select_query(pooled instruction), select_key(memory token)>.
        # The query starts at zero, so an untrained selection draws frames uniformly.
        self.select_query = nn.Linear(config.llm_dim, mem.dim)
        self.select_key = nn.Linear(mem.dim, mem.dim)
        nn.init.zeros_(self.select_query.weight)
        nn.init.zeros_(self.select_query.bias)

    # -- training stages -------------------------------------------------------------

    def set_stage(self, stage: int) -> list[nn.Parameter]:
        """Freeze everything but stage ``1`` (Perceiver + contrastive heads) or ``2``
        (memory, projections, DFS projections, separator, grounding head, LoRA); returns the
        trainable parameters."""
        if stage not in (1, 2):
            raise LongvidError(f"ReWind has training stages 1 and 2, not {stage}")
        self.requires_grad_(False)
        if stage == 1:
            trainable = [self.memory, self.video_head, self.text_head]
            self.log_scale.requires_grad_(True)
            self.bias.requires_grad_(True)
        else:
            trainable = [self.memory, self.memory_proj, self.frame_proj, self.grounding, self.select_query, self.select_key]
            self.separator.requires_grad_(True)
            for name, param in self.llm.named_parameters():
                param.requires_grad_("lora_" in name)
        for module in trainable:
            module.requires_grad_(True)
        return [p for p in self.parameters() if p.requires_grad]

    # -- watching a stream -------------------------------------------------------------

    def init_state(self, batch_size: int, keep_every: int = 1, spill_dir: str | os.PathLike | None = None,
                   buffer_dtype: torch.dtype | None = None) -> RewindStreamState:
        """Empty memory and feature buffer for ``batch_size`` streams (buffer policy options)."""
        return RewindStreamState(
            memory=self.memory.init_state(batch_size, self.separator.device),
            buffer=FeatureBuffer(batch_size, keep_every=keep_every, spill_dir=spill_dir, dtype=buffer_dtype),
        )

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        """LLM input embeddings ``(B, L) -> (B, L, llm_dim)``."""
        return self.llm.embed(ids)

    @torch.no_grad()
    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """Frozen encoder features: pixels ``(B, 3, F, H, W)`` in [0, 1] -> ``(B, F, P, D_v)``."""
        batch, _, num_clip = pixels.shape[:3]
        features = self.vision.encode_frames(pixels.transpose(1, 2).flatten(0, 1))  # (B*F, P, D_v)
        return features.reshape(batch, num_clip, *features.shape[1:]).to(self.separator.device)

    def observe(
        self,
        pixels: torch.Tensor,
        timestamps: torch.Tensor,
        state: RewindStreamState,
        instruction_ids: torch.Tensor,
        instruction_mask: torch.Tensor | None = None,
        num_valid: torch.Tensor | None = None,
        is_first: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, RewindStreamState]:
        """Watch one sub-clip per stream.

        ``pixels (B, 3, F, H, W)`` in [0, 1], ``timestamps (B, F)`` seconds, ``instruction_ids (B, L)``
        with ``instruction_mask (B, L)`` bool, ``num_valid (B,)`` real frames, ``is_first (B,)``
        streams that restart. Returns the written memory tokens ``(B, F, N_W, D)`` and the state.
        """
        return self.observe_features(self.encode_frames(pixels), timestamps, state, instruction_ids, instruction_mask,
                                     num_valid, is_first)

    def observe_features(
        self,
        features: torch.Tensor,
        timestamps: torch.Tensor,
        state: RewindStreamState,
        instruction_ids: torch.Tensor,
        instruction_mask: torch.Tensor | None = None,
        num_valid: torch.Tensor | None = None,
        is_first: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, RewindStreamState]:
        """:meth:`observe` on frozen-encoder features ``(B, F, P, D_v)`` (e.g. cached ones)."""
        batch, num_clip = features.shape[:2]
        if num_valid is None:
            num_valid = torch.full((batch,), num_clip, dtype=torch.long, device=features.device)
        memory = state.memory
        if is_first is not None:
            memory = memory.reset(is_first)
            for stream in is_first.nonzero().flatten().tolist():
                state.buffer.reset(stream)
        state.buffer.write(memory.num_frames, features, num_valid)
        text = self.embed_text(instruction_ids)
        written, memory = self.memory(features, text, instruction_mask, timestamps, memory, num_valid=num_valid)
        return written, RewindStreamState(memory=memory, buffer=state.buffer)

    def watch(self, pixels: torch.Tensor, timestamps: torch.Tensor, instruction_ids: torch.Tensor,
              instruction_mask: torch.Tensor | None = None, state: RewindStreamState | None = None,
              **buffer_options) -> RewindStreamState:
        """Watch whole videos ``pixels (B, 3, N, H, W)`` at ``timestamps (B, N)`` in sub-clips
        of ``clip_frames`` (the last one padded); ``buffer_options`` go to :meth:`init_state`."""
        state = self.init_state(pixels.shape[0], **buffer_options) if state is None else state
        for frames, num_valid in self._sub_clips(pixels.shape[2], pixels.shape[0], pixels.device):
            _, state = self.observe(pixels[:, :, frames], timestamps[:, frames], state, instruction_ids, instruction_mask, num_valid)
        return state

    def watch_features(self, features: torch.Tensor, timestamps: torch.Tensor, instruction_ids: torch.Tensor,
                       instruction_mask: torch.Tensor | None = None, state: RewindStreamState | None = None,
                       **buffer_options) -> RewindStreamState:
        """:meth:`watch` on frozen-encoder features ``(B, N, P, D_v)`` of whole videos."""
        state = self.init_state(features.shape[0], **buffer_options) if state is None else state
        for frames, num_valid in self._sub_clips(features.shape[1], features.shape[0], features.device):
            _, state = self.observe_features(features[:, frames], timestamps[:, frames], state, instruction_ids,
                                             instruction_mask, num_valid)
        return state

    def _sub_clips(self, total: int, batch: int, device):
        """``(frame indices (F,), num_valid (B,))`` of each sub-clip of a ``total``-frame video;
        the last one is padded by repeating its last frame."""
        clip = self.config.clip_frames
        for start in range(0, total, clip):
            frames = torch.arange(start, start + clip).clamp(max=total - 1)
            yield frames, torch.full((batch,), min(clip, total - start), dtype=torch.long, device=device)

    # -- asking --------------------------------------------------------------------------

    def instruction_query(self, instruction_ids: torch.Tensor, instruction_mask: torch.Tensor | None) -> torch.Tensor:
        """The DFS query: the pooled instruction embedding through ``select_query``, ``(B, L) -> (B, D)``."""
        return self.select_query(self.pooled_text(instruction_ids, instruction_mask))

    def pooled_text(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Mean LLM input embedding of each text's real tokens: ``(B, L) -> (B, llm_dim)``."""
        words = self.embed_text(ids)  # (B, L, llm_dim)
        if mask is None:
            return words.mean(dim=1)
        weights = mask.to(words.dtype)[..., None]
        return (words * weights).sum(1) / weights.sum(1).clamp(min=1)

    def frame_keys(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        """The DFS keys of memory tokens ``(n, N_W, D) -> (n, N_W, D)`` (``select_key``; the
        memory itself gets no gradient from selection)."""
        return self.select_key(frame_tokens.detach())

    def select(self, state: RewindStreamState, instruction_ids: torch.Tensor, instruction_mask: torch.Tensor | None = None,
               until: float | None = None) -> list[torch.Tensor]:
        """Dynamic frame selection per stream: frame indices ``(<= K_c,)`` in temporal order."""
        query = self.instruction_query(instruction_ids, instruction_mask).detach()  # (B, D)
        chosen = []
        for stream in range(query.shape[0]):
            tokens, _ = state.memory.frame_tokens(stream, until)  # (n, N_W, D)
            if not self.config.use_dfs or len(tokens) == 0:
                chosen.append(torch.zeros(0, dtype=torch.long, device=tokens.device))
                continue
            chosen.append(select_frames(self.frame_keys(tokens).detach(), query[stream], self.config.top_l,
                                        self.config.num_select, self.config.dpc_k, cluster_tokens=tokens.detach(),
                                        dpc=self.config.dpc))
        return chosen

    def sample_selection(self, state: RewindStreamState, instruction_ids: torch.Tensor,
                         instruction_mask: torch.Tensor | None = None, until: float | None = None,
                         generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Training-time selection: per stream ``K_c`` frames drawn from the softmax of the relevance
        scores (:func:`longvid.memory.selection.sample_top_indices`; drawing straight from the
        relevance lets training try every frame, where DPC-KNN would keep only density peaks).

        Returns the frames per stream (ascending) and the draws' log-probabilities ``(B,)``,
        differentiable in the DFS projections. ``generator`` defaults to one seeded from the
        global RNG.
        """
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        query = self.instruction_query(instruction_ids, instruction_mask)  # (B, D)
        chosen, log_probs = [], []
        for stream in range(query.shape[0]):
            tokens, _ = state.memory.frame_tokens(stream, until)  # (n, N_W, D)
            scores = relevance_scores(self.frame_keys(tokens), query[stream])  # (n,)
            frames, log_prob = sample_top_indices(scores, self.config.num_select, generator)
            chosen.append(frames)
            log_probs.append(log_prob)
        return chosen, torch.stack(log_probs)

    def prompt_embeddings(self, state: RewindStreamState, instruction_ids: torch.Tensor,
                          instruction_mask: torch.Tensor | None = None, until: float | None = None,
                          frames: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Each stream's LLM input before the answer: ``(N_W * n + 1 + K_c * 32 + L_b, llm_dim)``.

        ``until``: breakpoint mode, only frames with timestamp ``<= until`` are used.
        ``frames``: the frames each stream's LLM reads (default: :meth:`select`'s).
        """
        chosen = self.select(state, instruction_ids, instruction_mask, until) if frames is None else frames
        instruction = self.embed_text(instruction_ids)  # (B, L, llm_dim)
        prompts = []
        for stream, frames in enumerate(chosen):
            tokens, _ = state.memory.frame_tokens(stream, until)
            memory = self.memory_proj(tokens.flatten(0, 1))  # (N_W * n, llm_dim)
            features = state.buffer.read(stream, frames.cpu()).to(self.separator.device, self.separator.dtype)
            pooled = self.frame_proj(pool_frame_features(features, self.config.frame_pool)).flatten(0, 1) if len(frames) else \
                memory.new_zeros(0, self.config.llm_dim)  # (K_c * 32, llm_dim)
            words = instruction[stream] if instruction_mask is None else instruction[stream][instruction_mask[stream].bool()]
            prompts.append(torch.cat([memory, self.separator[None], pooled, words]))
        return prompts

    def forward(self, state: RewindStreamState, instruction_ids: torch.Tensor, instruction_mask: torch.Tensor | None = None,
                answer_ids: torch.Tensor | None = None, answer_mask: torch.Tensor | None = None, until: float | None = None,
                frames: list[torch.Tensor] | None = None):
        """LLM output on ``[prompt][answer]``; with ``answer_ids (B, A)`` its ``loss`` is the
        next-token cross-entropy over the answer tokens only (stage 2). ``frames``: the frames
        each stream's LLM reads (default: dynamic frame selection's)."""
        prompts = self.prompt_embeddings(state, instruction_ids, instruction_mask, until, frames)
        sequences, targets = [], []
        for stream, prompt in enumerate(prompts):
            ignore = torch.full((len(prompt),), IGNORE, dtype=torch.long, device=prompt.device)
            if answer_ids is None:
                sequences.append(prompt)
                targets.append(ignore)
                continue
            answer = answer_ids[stream] if answer_mask is None else answer_ids[stream][answer_mask[stream].bool()]
            sequences.append(torch.cat([prompt, self.embed_text(answer[None])[0]]))
            targets.append(torch.cat([ignore, answer]))
        embeds, mask, labels = pad_left(sequences, targets)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return self.llm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                              labels=labels if answer_ids is not None else None)

    @torch.no_grad()
    def generate(self, state: RewindStreamState, instruction_ids: torch.Tensor, instruction_mask: torch.Tensor | None = None,
                 until: float | None = None, max_new_tokens: int = 32, **kwargs) -> torch.Tensor:
        """Generated answer token ids ``(B, <= max_new_tokens)`` (greedy unless ``kwargs`` say otherwise)."""
        prompts = self.prompt_embeddings(state, instruction_ids, instruction_mask, until)
        embeds, mask, _ = pad_left(prompts, [torch.zeros(len(p), dtype=torch.long) for p in prompts])
        return self.llm.model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                                       do_sample=False, pad_token_id=self.llm.pad_id,
                                       eos_token_id=self.llm.tokenizer.eos_token_id, **kwargs)

    # -- text in, text out ---------------------------------------------------------------

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Instruction token ids ``(B, L)`` (right-padded) and mask ``(B, L)`` bool."""
        rows = self.llm.tokenize_prompts(texts)
        return _pad_right(rows, self.llm.pad_id, self.separator.device)

    def answer(self, state: RewindStreamState, questions: list[str], until: float | None = None,
               max_new_tokens: int = 32, **kwargs) -> list[str]:
        """Answer one question per stream (asked at ``until`` seconds in breakpoint mode).

        The questions must be the instructions the memory was built with (the memory is
        instruction-aware).
        """
        ids, mask = self.tokenize(questions)
        out = self.generate(state, ids, mask, until, max_new_tokens, **kwargs)
        return [t.strip() for t in self.llm.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def answer_loss(self, state: RewindStreamState, questions: list[str], answers: list[str],
                    until: float | None = None, policy_weight: float | None = None) -> torch.Tensor:
        """Stage-2 next-token cross-entropy of ``answers`` (+ EOS) given the streams and questions.

        ``policy_weight=None``: the LLM reads the frames dynamic frame selection picks. A number
        (with DFS): it reads ``K_c`` frames drawn from the relevance softmax
        (:meth:`sample_selection`), and the gradient adds ``policy_weight`` times the REINFORCE term
        ``mean_b (ce_b(drawn) - ce_b(selected)) * grad log p_b(drawn)`` (the selected frames'
        cross-entropy is the baseline) that trains the DFS projections; ``0`` draws frames without
        training them. The value returned is the drawn frames' cross-entropy either way.
        """
        ids, mask = self.tokenize(questions)
        answer_ids, answer_mask = _pad_right(self.llm.tokenize_answers(answers), self.llm.pad_id, ids.device)
        if policy_weight is None or not self.config.use_dfs:
            return self(state, ids, mask, answer_ids, answer_mask, until).loss
        frames, log_probs = self.sample_selection(state, ids, mask, until)
        drawn = self.answer_nll(state, ids, mask, answer_ids, answer_mask, until, frames)  # (B,)
        if policy_weight == 0:
            return drawn.mean()
        with torch.no_grad():
            baseline = self.answer_nll(state, ids, mask, answer_ids, answer_mask, until)  # (B,)
        # log p - sg(log p) is 0 with the gradient of log p: the loss still reads as a cross-entropy.
        surrogate = (drawn.detach() - baseline) * (log_probs - log_probs.detach())
        return drawn.mean() + policy_weight * surrogate.mean()

    def answer_nll(self, state: RewindStreamState, ids: torch.Tensor, mask: torch.Tensor, answer_ids: torch.Tensor,
                   answer_mask: torch.Tensor, until: float | None = None,
                   frames: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Each stream's mean next-token cross-entropy over its answer tokens ``(B,)``."""
        out = self(state, ids, mask, answer_ids, answer_mask, until, frames)
        lengths = answer_mask.sum(1)  # (B,)
        labels = torch.full(out.logits.shape[:2], IGNORE, dtype=torch.long, device=ids.device)
        for b in range(len(answer_ids)):  # left padding: every sequence ends with its answer
            labels[b, labels.shape[1] - int(lengths[b]):] = answer_ids[b][answer_mask[b]]
        return -answer_log_likelihood(out.logits, labels) / lengths.clamp(min=1)

    @torch.no_grad()
    def score(self, state: RewindStreamState, questions: list[str], candidates: list[str],
              until: float | None = None) -> torch.Tensor:
        """Log-likelihood ``(B, K)`` of each candidate answer (closed-set QA and grounding)."""
        ids, mask = self.tokenize(questions)
        scores = []
        for row in self.llm.tokenize_answers(candidates):
            answer = torch.tensor([row] * len(questions), device=ids.device)
            out = self(state, ids, mask, answer, until=until)
            labels = torch.full(out.logits.shape[:2], IGNORE, dtype=torch.long, device=ids.device)
            labels[:, -len(row):] = answer
            scores.append(answer_log_likelihood(out.logits, labels))
        return torch.stack(scores, dim=1)

    # -- temporal grounding --------------------------------------------------------------

    def ground_logits(self, state: RewindStreamState, instruction_ids: torch.Tensor,
                      instruction_mask: torch.Tensor | None = None, until: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Start/end pointer logits over each stream's memory frames ``(B, 2, n_max)`` and
        their validity ``(B, n_max)`` bool, from the LLM's last hidden states: a frame is the
        mean of its ``N_W`` memory-token states, the pointer queries come from the last position."""
        prompts = self.prompt_embeddings(state, instruction_ids, instruction_mask, until)
        embeds, mask, _ = pad_left(prompts, [torch.zeros(len(p), dtype=torch.long) for p in prompts])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.llm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                output_hidden_states=True).hidden_states[-1]  # (B, L, llm_dim)
        counts = [len(state.memory.frame_tokens(b, until)[1]) for b in range(len(prompts))]
        num_write = self.config.memory.num_write
        frames = hidden.new_zeros(len(prompts), max(counts), hidden.shape[-1])  # (B, n_max, llm_dim)
        valid = torch.zeros(len(prompts), max(counts), dtype=torch.bool, device=hidden.device)
        for b, (prompt, count) in enumerate(zip(prompts, counts)):
            first = embeds.shape[1] - len(prompt)  # after the left padding
            frames[b, :count] = hidden[b, first : first + num_write * count].reshape(count, num_write, -1).mean(1)
            valid[b, :count] = True
        return self.grounding(frames, hidden[:, -1], valid), valid

    def grounding_loss(self, state: RewindStreamState, questions: list[str], target_frames: torch.Tensor,
                       until: float | None = None) -> torch.Tensor:
        """Cross-entropy of the start and end pointers against ``target_frames (B, 2)`` frame indices."""
        ids, mask = self.tokenize(questions)
        logits, _ = self.ground_logits(state, ids, mask, until)
        return pointer_loss(logits, target_frames)

    @torch.no_grad()
    def ground(self, state: RewindStreamState, questions: list[str], until: float | None = None) -> torch.Tensor:
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

    # -- stage 1 -----------------------------------------------------------------------

    def contrastive_loss(self, written: torch.Tensor, num_valid: torch.Tensor, caption_ids: torch.Tensor,
                         caption_mask: torch.Tensor) -> torch.Tensor:
        """SigLIP loss between sub-clips and their captions.

        ``written (B, F, N_W, D)`` the memory tokens written for each sub-clip (mean over
        its ``num_valid (B,)`` real frames), ``caption_ids / caption_mask (B, L)``.
        """
        real = (torch.arange(written.shape[1], device=written.device)[None] < num_valid[:, None]).to(written.dtype)
        video = (written.mean(2) * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp(min=1)  # (B, D)
        text = self.pooled_text(caption_ids, caption_mask)  # (B, llm_dim)
        return sigmoid_contrastive_loss(self.video_head(video), self.text_head(text), self.log_scale, self.bias)


def _pad_right(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> ids ``(B, L)`` padded with ``pad_id`` on the right, and mask ``(B, L)`` bool."""
    length = max(1, max(len(row) for row in rows))
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros(len(rows), length, dtype=torch.bool, device=device)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row, dtype=torch.long, device=device)
        mask[b, : len(row)] = True
    return ids, mask


def pad_left(sequences: list[torch.Tensor], targets: list[torch.Tensor]):
    """Left-pad ``(L_b, E)`` sequences: ``(B, L, E)`` embeddings, ``(B, L)`` mask and labels (IGNORE on pads)."""
    length = max(len(s) for s in sequences)
    first = sequences[0]
    embeds = first.new_zeros(len(sequences), length, first.shape[-1])
    mask = torch.zeros(len(sequences), length, dtype=torch.long, device=first.device)
    labels = torch.full((len(sequences), length), -100, dtype=torch.long, device=first.device)
    for row, (sequence, target) in enumerate(zip(sequences, targets)):
        embeds[row, length - len(sequence):] = sequence
        mask[row, length - len(sequence):] = 1
        labels[row, length - len(sequence):] = target.to(first.device)
    return embeds, mask, labels


def build_rewind(preset: str, vision: str, llm: str, lora: bool = True, device=None, **overrides) -> ReWind:
    """A ReWind on a frozen image encoder and a causal LM loaded by local path or hub id.

    The memory's ``vision_dim`` / ``text_dim`` and ``llm_dim`` follow the loaded models;
    the other sizes come from ``preset`` and ``overrides``. The memory, projections and
    LoRA start random: load trained weights with :func:`load_trainable`.
    """
    from longvid.models.encoders import FrozenImageEncoder

    encoder = FrozenImageEncoder.from_pretrained(vision, device=device)
    language = CausalLM.from_pretrained(llm, device=device)
    base = get_config(preset)
    memory = RewindMemoryConfig(**{**base.memory.__dict__, "vision_dim": encoder.width, "text_dim": language.hidden_size})
    config = get_config(preset, **{"memory": memory, "llm_dim": language.hidden_size, **overrides})
    return ReWind(config, encoder, language, lora=lora).to(device)


def trainable_state_dict(model: ReWind) -> dict[str, torch.Tensor]:
    """The weights ReWind trains (everything but the frozen encoder and the frozen LLM base)."""
    return {name: tensor for name, tensor in model.state_dict().items()
            if not name.startswith(("vision.", "llm.")) or "lora_" in name}


def load_trainable(model: ReWind, tensors: dict[str, torch.Tensor]) -> None:
    """Load :func:`trainable_state_dict` weights; a missing or unexpected name is an error."""
    expected = set(trainable_state_dict(model))
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise LongvidError(f"ReWind weights do not match the model: {len(missing)} missing, {len(unexpected)} unexpected "
                           f"(e.g. {sorted(missing or unexpected)[0]})")
    model.load_state_dict(tensors, strict=False)
