"""BLIP-2 / InstructBLIP Q-Former with MA-LMM's visual and query memory banks.

The Q-Former is a BERT encoder run on ``[learned queries ; instruction tokens]``; every
``cross_attention_freq``-th layer lets the query positions cross-attend to a frame's
visual tokens, and query and text positions have separate feed-forward networks.
Module and parameter names follow the released LAVIS / MA-LMM layout, so a checkpoint
loads by name with :func:`load_qformer_state_dict` (``Qformer.bert.encoder.layer.3...``
-> ``layers.3...``).

MA-LMM memory (``memory_bank_length`` L > 0) is explicit per-stream state
(:class:`QFormerMemory`), never kept on modules:

- visual memory bank: past frames' visual tokens ``(B, S, Nv, Cv)``; every
  cross-attention layer attends to ``[bank ; current frame]`` with its own key/value
  projections;
- query memory bank, one per layer: that layer's past inputs ``(B, S, Q + Lt, H)``
  (query and instruction positions), re-projected by the layer's own key/value weights
  at every frame; the current positions attend to ``[bank ; current]`` with text padding
  masked in every slot.

Both are stored detached and compressed to L slots with
:func:`longvid.malmm.bank.compress_memory_bank` after each frame.

With ``sparse`` set, the attention over each memory bank becomes native sparse attention
(:class:`SparseMemoryAttention`): the query-memory self-attention and the cross-attention
to the visual memory (``SparseMemoryConfig.query`` / ``.visual``) each get three gated
branches over their bank (compressed block summaries, top-k selected blocks, a sliding
window of the newest slots), each also seeing the current frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from longvid.errors import LongvidError
from longvid.malmm.bank import MemoryBank
from longvid.malmm.config import QFormerConfig, SparseMemoryConfig


@dataclass(frozen=True, eq=False)  # tensors: compare them, not states
class QFormerMemory:
    """Per-stream Q-Former memory: the visual bank and one query bank per layer.

    ``visual``: slots ``(B, S, Nv, Cv)`` (None when visual memory is off); ``query``: one
    bank per layer with slots ``(B, S, Q + Lt, H)`` (empty tuple when query memory is off).
    """

    visual: MemoryBank | None
    query: tuple[MemoryBank, ...]

    def banks(self) -> list[MemoryBank]:
        return ([] if self.visual is None else [self.visual]) + list(self.query)

    def map(self, fn: Callable[[MemoryBank], MemoryBank]) -> "QFormerMemory":
        """``fn`` applied to every bank."""
        return QFormerMemory(None if self.visual is None else fn(self.visual), tuple(fn(bank) for bank in self.query))

    def reset(self, mask: torch.Tensor) -> "QFormerMemory":
        """Empty the memory of the streams where ``mask`` ``(B,)`` is True."""
        return self.map(lambda bank: bank.reset(mask))

    def index_copy(self, index: torch.Tensor, rows: "QFormerMemory") -> "QFormerMemory":
        """Streams ``index`` replaced by ``rows`` (see :meth:`MemoryBank.index_copy`)."""
        visual = None if self.visual is None else self.visual.index_copy(index, rows.visual)
        return QFormerMemory(visual, tuple(bank.index_copy(index, other) for bank, other in zip(self.query, rows.query)))


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, H) -> (B, heads, N, H / heads)."""
    B, N, H = x.shape
    return x.view(B, N, heads, H // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    B, h, N, d = x.shape
    return x.transpose(1, 2).reshape(B, N, h * d)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float) -> torch.Tensor:
    """Softmax attention. q ``(B, h, Nq, d)``, k/v ``(B, h, Nk, d)``, mask bool broadcastable to
    ``(B, h, Nq, Nk)`` (True = attend); returns ``(B, h, Nq, d)``."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


class SelfAttention(nn.Module):
    """Query/key/value projections (named as BERT's ``attention.self``)."""

    def __init__(self, config: QFormerConfig, kv_width: int):
        super().__init__()
        H = config.hidden_size
        self.num_heads = config.num_heads
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(kv_width, H)
        self.value = nn.Linear(kv_width, H)


class AttentionOutput(nn.Module):
    """Output projection, dropout and residual LayerNorm."""

    def __init__(self, config: QFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(context)) + residual)


class Attention(nn.Module):
    """Multi-head attention block: ``self`` (projections) + ``output`` (residual LayerNorm)."""

    def __init__(self, config: QFormerConfig, kv_width: int):
        super().__init__()
        self.self = SelfAttention(config, kv_width)
        self.output = AttentionOutput(config)
        self.attention_dropout = config.dropout

    def forward(self, hidden: torch.Tensor, kv_input: torch.Tensor, kv_mask: torch.Tensor | None) -> torch.Tensor:
        """hidden ``(B, N, H)`` attends to kv_input ``(B, M, W)`` (kv_mask ``(B, M)`` bool or None)."""
        heads = self.self.num_heads
        q = _split_heads(self.self.query(hidden), heads)  # (B, h, N, d)
        k = _split_heads(self.self.key(kv_input), heads)  # (B, h, M, d)
        v = _split_heads(self.self.value(kv_input), heads)
        mask = None if kv_mask is None else kv_mask[:, None, None, :]  # (B, 1, 1, M)
        context = _attend(q, k, v, mask, self.attention_dropout if self.training else 0.0)
        return self.output(_merge_heads(context), hidden)


class SparseMemoryAttention(Attention):
    """Attention over ``[memory bank ; current]`` as gated native sparse attention (NSA).

    Used for the query-memory self-attention (keys from the layer's own hidden states, the
    bank holds past layer inputs) and for the cross-attention to the visual memory (keys
    from frame tokens, the bank holds past frames' tokens). Branches, each attending to its
    memory keys plus the current keys:

    - compressed: one learned weighted pooling of each block of ``block_slots`` memory slots,
      per token position (blocks are counted back from the newest slot and empty slots pool
      as zeros, so a stream's blocks are the same alone or behind a batch's empty slots);
    - selected: the full-resolution slots of the ``top_blocks`` blocks with the highest
      compressed-attention mass, chosen per query position and shared by all heads;
    - window: the ``window_slots`` newest slots.

    Outputs are mixed by per-head sigmoid gates computed from the query position's hidden
    state; the gates start at 1/3 each, so with nothing dropped (blocks of one slot, every
    block selected, a window over the whole bank) the layer starts as dense memory attention.
    """

    def __init__(self, config: QFormerConfig, sparse: SparseMemoryConfig, kv_width: int):
        super().__init__(config, kv_width)
        self.sparse = sparse
        self.block_pool = nn.Parameter(torch.full((2, sparse.block_slots), 1.0 / sparse.block_slots))  # key, value weights
        self.gate = nn.Linear(config.hidden_size, 3 * config.num_heads)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, -math.log(2.0))  # sigmoid = 1/3: the branches start as an average

    def forward_with_memory(self, hidden: torch.Tensor, now: torch.Tensor, now_mask: torch.Tensor | None,
                            bank: MemoryBank) -> torch.Tensor:
        """hidden ``(B, N, H)`` (query positions) attends to the current keys ``now`` ``(B, M, W)``
        (``now_mask`` ``(B, M)`` bool, None: all valid) and to ``bank`` slots ``(B, S, M, W)``
        -> ``(B, N, H)``."""
        heads, sp = self.self.num_heads, self.sparse
        B, N, H = hidden.shape
        S, M, d = bank.num_slots, now.shape[1], H // heads
        now_mask = torch.ones(B, M, dtype=torch.bool, device=hidden.device) if now_mask is None else now_mask
        q = _split_heads(self.self.query(hidden), heads)  # (B, h, N, d)
        k_now = _split_heads(self.self.key(now), heads)  # (B, h, M, d)
        v_now = _split_heads(self.self.value(now), heads)
        k_mem = self.self.key(bank.slots).view(B, S, M, heads, d).permute(0, 3, 1, 2, 4)  # (B, h, S, M, d)
        v_mem = self.self.value(bank.slots).view(B, S, M, heads, d).permute(0, 3, 1, 2, 4)
        mem_valid = bank.slot_mask[:, :, None] & now_mask[:, None, :]  # (B, S, M)
        now_keys = now_mask[:, None, None, :]  # (B, 1, 1, M)
        dropout = self.attention_dropout if self.training else 0.0

        # compressed branch: blocks of slots pooled per token position
        pad = (-S) % sp.block_slots
        num_blocks = (S + pad) // sp.block_slots
        empty = ~bank.slot_mask[:, None, :, None, None]  # (B, 1, S, 1, 1)
        def pool(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:  # (B, h, S, M, d) -> (B, h, nb, M, d)
            x = F.pad(x.masked_fill(empty, 0), (0, 0, 0, 0, pad, 0)).view(B, heads, num_blocks, sp.block_slots, M, d)
            return torch.einsum("bhjsnd,s->bhjnd", x, weights)
        k_cmp, v_cmp = pool(k_mem, self.block_pool[0]), pool(v_mem, self.block_pool[1])
        block_valid = F.pad(mem_valid, (0, 0, pad, 0)).view(B, num_blocks, sp.block_slots, M).any(2)  # (B, nb, M)
        cmp_mask = torch.cat([block_valid.flatten(1)[:, None, None, :], now_keys], -1)  # (B, 1, 1, nb*M + M)
        k_all = torch.cat([k_cmp.flatten(2, 3), k_now], 2)  # (B, h, nb*M + M, d)
        v_all = torch.cat([v_cmp.flatten(2, 3), v_now], 2)
        scores = (q @ k_all.transpose(-1, -2)) / math.sqrt(d)  # (B, h, N, nb*M + M)
        probs = scores.masked_fill(~cmp_mask, float("-inf")).softmax(-1)
        out_cmp = F.dropout(probs, dropout, self.training) @ v_all  # (B, h, N, d)

        # selected branch: top-k blocks by compressed attention mass (summed over heads and tokens)
        block_score = probs[..., : num_blocks * M].reshape(B, heads, N, num_blocks, M).sum((1, 4))  # (B, N, nb)
        top = block_score.topk(min(sp.top_blocks, num_blocks), dim=-1).indices if num_blocks else block_score.long()
        chosen = torch.zeros(B, N, num_blocks, dtype=torch.bool, device=hidden.device).scatter_(-1, top, True)
        slot_chosen = chosen.repeat_interleave(sp.block_slots, -1)[..., pad:]  # (B, N, S)
        sel_mask = slot_chosen[:, :, :, None] & mem_valid[:, None]  # (B, N, S, M)
        sel_mask = torch.cat([sel_mask.flatten(2)[:, None], now_keys.expand(B, 1, N, M)], -1)  # (B, 1, N, S*M + M)
        k_full = torch.cat([k_mem.flatten(2, 3), k_now], 2)  # (B, h, S*M + M, d)
        v_full = torch.cat([v_mem.flatten(2, 3), v_now], 2)
        out_sel = _attend(q, k_full, v_full, sel_mask, dropout)

        # window branch: the newest slots
        in_window = torch.arange(S, device=hidden.device) >= S - sp.window_slots  # (S,)
        win_mask = torch.cat([(mem_valid & in_window[None, :, None]).flatten(1)[:, None, None, :], now_keys], -1)
        out_win = _attend(q, k_full, v_full, win_mask, dropout)

        gates = torch.sigmoid(self.gate(hidden)).view(B, N, 3, heads).permute(2, 0, 3, 1)[..., None]  # (3, B, h, N, 1)
        context = gates[0] * out_cmp + gates[1] * out_sel + gates[2] * out_win
        return self.output(_merge_heads(context), hidden)


class Intermediate(nn.Module):
    def __init__(self, config: QFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class Output(nn.Module):
    def __init__(self, config: QFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class QFormerLayer(nn.Module):
    """Self-attention (+ query memory) -> cross-attention for queries -> separate FFNs."""

    def __init__(self, config: QFormerConfig, has_cross_attention: bool):
        super().__init__()
        self.num_queries = config.num_query_tokens
        sparse, memory = config.sparse, config.memory_bank_length > 0
        if sparse is not None and sparse.query and config.query_memory and memory:
            self.attention = SparseMemoryAttention(config, sparse, config.hidden_size)
        else:
            self.attention = Attention(config, config.hidden_size)
        if not has_cross_attention:
            self.crossattention = None
        elif sparse is not None and sparse.visual and config.visual_memory and memory:
            self.crossattention = SparseMemoryAttention(config, sparse, config.encoder_width)
        else:
            self.crossattention = Attention(config, config.encoder_width)
        self.intermediate = Intermediate(config)
        self.output = Output(config)
        self.intermediate_query = Intermediate(config)
        self.output_query = Output(config)

    def forward(
        self,
        hidden: torch.Tensor,
        token_mask: torch.Tensor,
        visual: torch.Tensor,
        visual_mask: torch.Tensor | None,
        bank: MemoryBank | None,
        visual_memory: tuple[MemoryBank, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """hidden ``(B, Q + Lt, H)``, token_mask ``(B, Q + Lt)`` bool, visual ``(B, M, Cv)`` (bank slots
        and the current frame, flattened), bank slots ``(B, S, Q + Lt, H)`` or None; visual_memory:
        the visual bank and the current frame ``(B, Nv, Cv)`` apart (for the sparse cross-attention)
        -> ``(B, Q + Lt, H)``."""
        if bank is None:
            attended = self.attention(hidden, hidden, token_mask)
        elif isinstance(self.attention, SparseMemoryAttention):
            attended = self.attention.forward_with_memory(hidden, hidden, token_mask, bank)
        else:
            memory_mask = bank.slot_mask[:, :, None] & token_mask[:, None, :]  # (B, S, Q + Lt)
            kv_input = torch.cat([bank.slots.flatten(1, 2), hidden], 1)  # (B, (S + 1) * (Q + Lt), H)
            attended = self.attention(hidden, kv_input, torch.cat([memory_mask.flatten(1), token_mask], 1))
        Q = self.num_queries
        queries = attended[:, :Q]
        if isinstance(self.crossattention, SparseMemoryAttention) and visual_memory is not None:
            queries = self.crossattention.forward_with_memory(queries, visual_memory[1], None, visual_memory[0])
        elif self.crossattention is not None:
            queries = self.crossattention(queries, visual, visual_mask)
        out = self.output_query(self.intermediate_query(queries), queries)
        if attended.shape[1] > Q:
            text = attended[:, Q:]
            out = torch.cat([out, self.output(self.intermediate(text), text)], 1)
        return out


class Embeddings(nn.Module):
    """Word + absolute position embeddings for the text; queries get none; joint LayerNorm."""

    def __init__(self, config: QFormerConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, queries: torch.Tensor, text_ids: torch.Tensor | None) -> torch.Tensor:
        """queries ``(B, Q, H)``, text_ids ``(B, Lt)`` or None -> ``(B, Q + Lt, H)``."""
        if text_ids is not None and text_ids.shape[1]:  # no text: the embedding tables stay out of the graph
            if text_ids.shape[1] > self.position_embeddings.num_embeddings:
                raise LongvidError(f"instruction has {text_ids.shape[1]} tokens; the Q-Former takes at most {self.position_embeddings.num_embeddings}")
            positions = torch.arange(text_ids.shape[1], device=text_ids.device)
            text = self.word_embeddings(text_ids) + self.position_embeddings(positions)
            queries = torch.cat([queries, text], 1)
        return self.dropout(self.LayerNorm(queries))


class QFormer(nn.Module):
    """The Q-Former: ``hidden, memory = qformer(frame_tokens, text_ids, text_mask, memory)``."""

    def __init__(self, config: QFormerConfig):
        super().__init__()
        self.config = config
        self.query_tokens = nn.Parameter(torch.randn(1, config.num_query_tokens, config.hidden_size) * 0.02)
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(
            QFormerLayer(config, has_cross_attention=i % config.cross_attention_freq == 0) for i in range(config.num_layers)
        )

    def init_memory(self, batch: int, num_tokens: int, visual_tokens: int, device=None, dtype=torch.float32) -> QFormerMemory | None:
        """Empty memory for ``batch`` streams with ``num_tokens`` = Q + Lt Q-Former positions
        and ``visual_tokens`` = Nv visual tokens per frame."""
        cfg = self.config
        if not cfg.uses_memory:
            return None
        visual = MemoryBank.empty(batch, visual_tokens, cfg.encoder_width, device, dtype) if cfg.visual_memory else None
        query = tuple(MemoryBank.empty(batch, num_tokens, cfg.hidden_size, device, dtype) for _ in self.layers) if cfg.query_memory else ()
        return QFormerMemory(visual, query)

    def forward(
        self,
        frame_tokens: torch.Tensor,
        text_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        memory: QFormerMemory | None = None,
    ) -> tuple[torch.Tensor, QFormerMemory | None]:
        """Run the Q-Former on one frame per stream.

        Args:
            frame_tokens: ``(B, Nv, Cv)`` the current frame's visual tokens.
            text_ids: ``(B, Lt)`` instruction token ids (right-padded) or None.
            text_mask: ``(B, Lt)`` 1 for real tokens, 0 for padding (default all ones).
            memory: the streams' memory from the previous frame (None: start fresh).

        Returns:
            ``(hidden, memory)``: hidden ``(B, Q + Lt, H)`` (queries first), and the memory
            after this frame (each bank compressed to L slots; None without memory).
        """
        cfg = self.config
        B = frame_tokens.shape[0]
        hidden = self.embeddings(self.query_tokens.expand(B, -1, -1), text_ids)  # (B, Q + Lt, H)
        N = hidden.shape[1]
        token_mask = torch.ones(B, N, dtype=torch.bool, device=hidden.device)
        if text_mask is not None:
            token_mask[:, cfg.num_query_tokens :] = text_mask.bool()
        if not cfg.uses_memory:
            for layer in self.layers:
                hidden = layer(hidden, token_mask, frame_tokens, None, None)
            return hidden, None

        if memory is None:
            memory = self.init_memory(B, N, frame_tokens.shape[1], frame_tokens.device, frame_tokens.dtype)
        self._check_memory(memory, B, N)
        visual, visual_mask, visual_memory = frame_tokens, None, None
        if memory.visual is not None:
            Nv = frame_tokens.shape[1]
            bank = memory.visual.with_tokens(Nv)  # a fresh stream's bank learns Nv from its first frame
            memory = QFormerMemory(bank, memory.query)
            visual = torch.cat([bank.slots.flatten(1, 2), frame_tokens], 1)  # (B, (S + 1) * Nv, Cv)
            visual_mask = torch.cat([bank.slot_mask.repeat_interleave(Nv, 1), token_mask.new_ones(B, Nv)], 1)
            visual_memory = (bank, frame_tokens)
        L = cfg.memory_bank_length
        query_banks = []
        for i, layer in enumerate(self.layers):
            bank = memory.query[i] if memory.query else None
            if bank is not None:
                query_banks.append(bank.append(hidden.detach()).compress_to(L))
            hidden = layer(hidden, token_mask, visual, visual_mask, bank, visual_memory)
        new_visual = None if memory.visual is None else memory.visual.append(frame_tokens.detach()).compress_to(L)
        return hidden, QFormerMemory(new_visual, tuple(query_banks))

    def _check_memory(self, memory: QFormerMemory, batch: int, num_tokens: int) -> None:
        for bank in memory.query:
            if bank.slots.shape[0] != batch or bank.slots.shape[2] != num_tokens:
                raise LongvidError(
                    f"query memory holds {bank.slots.shape[0]} streams x {bank.slots.shape[2]} positions, but this frame has "
                    f"{batch} x {num_tokens}: keep the batch and the padded instruction length fixed within a stream"
                )
        if memory.visual is not None and memory.visual.slots.shape[0] != batch:
            raise LongvidError(f"visual memory holds {memory.visual.slots.shape[0]} streams, but this frame has {batch}")


def load_qformer_state_dict(qformer: QFormer, state_dict: dict[str, torch.Tensor], strict: bool = True) -> list[str]:
    """Load released LAVIS / MA-LMM Q-Former weights by name; returns the keys it used.

    Accepts ``query_tokens``, ``Qformer.bert.embeddings.*`` and ``Qformer.bert.encoder.layer.*``
    (other keys of a whole-model checkpoint are ignored). With ``strict``, a Q-Former
    parameter missing from ``state_dict`` (except the sparse-attention extras) is an error.
    """
    mapped: dict[str, torch.Tensor] = {}
    used = []
    for name, value in state_dict.items():
        if name == "query_tokens":
            new = "query_tokens"
        elif name.startswith("Qformer.bert.embeddings.") and not name.endswith("position_ids"):
            new = name[len("Qformer.bert.") :]
        elif name.startswith("Qformer.bert.encoder.layer."):
            new = "layers." + name[len("Qformer.bert.encoder.layer.") :]
        else:
            continue
        mapped[new] = value
        used.append(name)
    try:
        result = qformer.load_state_dict(mapped, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise LongvidError(f"checkpoint does not fit this Q-Former configuration: {str(err).splitlines()[-1].strip()}") from err
    missing = [k for k in result.missing_keys if not k.endswith((".block_pool", ".gate.weight", ".gate.bias"))]
    if result.unexpected_keys:
        raise LongvidError(f"checkpoint has Q-Former parameters this configuration lacks: {', '.join(result.unexpected_keys[:5])}")
    if strict and missing:
        raise LongvidError(f"checkpoint lacks {len(missing)} Q-Former parameters, e.g. {', '.join(missing[:5])}")
    return used
