"""Causal language model adapter: a prefix of embeddings in front of a text prompt.

:class:`CausalLM` wraps any ``transformers`` causal LM (LLaMA / Vicuna, Qwen2, ...) and
its tokenizer, loaded by local path or hub id, frozen by default. Both LMMs build their
LLM input through it. A prefix arrives in the LLM's embedding space, ``(B, P, D)`` or
ragged: B tensors ``(P_b, D)`` of any lengths (MA-LMM's projected Q-Former queries,
ReWind's memory tokens + separator + frames + question). The sequences are laid out as
InstructBLIP / MA-LMM do, generalised to ragged prefixes:

- generation (and :meth:`CausalLM.hidden_states`): ``[pad][prefix_b][pad][prompt_b]``,
  prefixes and prompts each left-padded (masked out), so every sample ends in the last
  column; then ``generate(inputs_embeds=...)``;
- training and scoring: ``[prefix_b][prompt_b][answer_b + eos]`` padded on the right
  (InstructBLIP, MA-LMM) or on the left (ReWind), labels = answer tokens and eos only
  (-100 on prefix, prompt and padding), next-token cross-entropy;
- closed-set scoring: the log-likelihood of each candidate answer under the same layout.

Position ids count real tokens only, so a sample's positions do not depend on its padding,
and the repetition penalty reaches every generated token whatever the padding in front.
Padding does move where masked entries sit in attention and loss reductions, which changes
floating-point summation order (about 1e-6): each LMM keeps the side (and loss reduction,
:func:`next_token_loss`) it was trained with, so neither LMM's numbers moved when they came
to share this adapter.

The sequence builders are plain functions over token-id lists so they can be checked
against reference tensors without a tokenizer.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from longvid.errors import LongvidError

IGNORE = -100

Prefixes = Union[torch.Tensor, Sequence[torch.Tensor]]  # (B, P, D), or B tensors (P_b, D)


def prefix_list(prefix: Prefixes) -> list[torch.Tensor]:
    """B prefixes ``(P_b, D)`` from ``(B, P, D)`` or a sequence of ``(P_b, D)``."""
    if isinstance(prefix, torch.Tensor):
        if prefix.dim() != 3:
            raise LongvidError(f"prefix must be (B, P, D) or a list of (P_b, D), got {tuple(prefix.shape)}")
        return list(prefix.unbind(0))
    rows = list(prefix)
    if not rows or any(row.dim() != 2 or row.shape[-1] != rows[0].shape[-1] for row in rows):
        raise LongvidError(f"prefixes must be (P_b, D) tensors of one width D, got {[tuple(r.shape) for r in rows]}")
    return rows


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> ids ``(B, L)`` right-padded with ``pad_id`` and mask ``(B, L)`` bool (``L >= 1``)."""
    length = max(1, max(len(row) for row in rows))
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros(len(rows), length, dtype=torch.bool, device=device)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row, dtype=torch.long, device=device)
        mask[b, : len(row)] = True
    return ids, mask


def _pad(rows: Sequence[torch.Tensor], length: int, side: str, fill) -> torch.Tensor:
    """``(L_b, ...)`` rows -> ``(B, length, ...)``, padded with ``fill`` (a scalar, or a tensor of a row's
    trailing shape) on ``side`` ("right": rows start at 0; "left": rows end in the last column)."""
    out = rows[0].new_empty((len(rows), length, *rows[0].shape[1:]))
    out[:] = fill
    for b, row in enumerate(rows):
        start = 0 if side == "right" else length - len(row)
        out[b, start : start + len(row)] = row
    return out


def _lengths_mask(lengths: Sequence[int], length: int, side: str, device) -> torch.Tensor:
    """Attention mask ``(B, length)`` long: 1 at the real tokens of rows padded on ``side``."""
    return _pad([torch.ones(n, dtype=torch.long, device=device) for n in lengths], length, side, 0)


def build_generation_inputs(
    prefix: Prefixes, prompt_ids: Sequence[Sequence[int]], embed: Callable[[torch.Tensor], torch.Tensor], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[pad][prefix_b][pad][prompt_b]``: prefixes and prompts each left-padded.

    Args:
        prefix: ``(B, P, D)`` embeddings or B ``(P_b, D)`` (e.g. projected Q-Former queries).
        prompt_ids: B token-id lists (already including any BOS; may be empty).
        embed: the LLM's token embedding, ids ``(B, L)`` -> ``(B, L, D)``.
        pad_id: id whose embedding fills padded positions (masked out).

    Returns:
        ``inputs_embeds`` ``(B, P + Lp, D)`` and ``attention_mask`` ``(B, P + Lp)`` (long),
        ``P`` / ``Lp`` the longest prefix / prompt.
    """
    prefixes = _check_batch(prefix, prompt_ids)
    P, Lp = max(len(p) for p in prefixes), max(len(ids) for ids in prompt_ids)
    device = prefixes[0].device
    ids = _pad([torch.tensor(list(row), dtype=torch.long, device=device) for row in prompt_ids], Lp, "left", pad_id)
    mask = torch.cat([_lengths_mask([len(p) for p in prefixes], P, "left", device),
                      _lengths_mask([len(row) for row in prompt_ids], Lp, "left", device)], 1)  # (B, P + Lp)
    pad = _pad_embedding(embed, pad_id, prefixes[0])
    embeds = torch.cat([_pad(prefixes, P, "left", pad), embed(ids).to(pad.dtype)], 1)  # (B, P + Lp, D)
    return embeds, mask


def build_training_inputs(
    prefix: Prefixes,
    prompt_ids: Sequence[Sequence[int]],
    answer_ids: Sequence[Sequence[int]],
    embed: Callable[[torch.Tensor], torch.Tensor],
    pad_id: int,
    padding: str = "right",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[prefix_b][prompt_b][answer_b]`` padded on ``padding`` ("right" or "left"), labels on the answer tokens only.

    ``answer_ids`` should end with the EOS id (it is supervised) and carry no BOS.
    Returns ``inputs_embeds`` ``(B, L, D)``, ``attention_mask`` ``(B, L)`` and ``labels`` ``(B, L)``
    (-100 except at answer tokens), L = the longest prefix + prompt + answer; padded positions
    hold ``pad_id``'s embedding.
    """
    prefixes = _check_batch(prefix, prompt_ids)
    if len(answer_ids) != len(prompt_ids):
        raise LongvidError(f"{len(prompt_ids)} prompts but {len(answer_ids)} answers")
    if padding not in ("right", "left"):
        raise LongvidError(f"padding must be 'right' or 'left', not {padding!r}")
    device = prefixes[0].device
    sequences, targets = [], []
    for row, prompt, answer in zip(prefixes, prompt_ids, answer_ids):
        text = torch.tensor(list(prompt) + list(answer), dtype=torch.long, device=device)
        sequences.append(torch.cat([row, embed(text[None])[0].to(row.dtype)]))  # (P_b + L_b, D)
        ignore = torch.full((len(row) + len(prompt),), IGNORE, dtype=torch.long, device=device)
        targets.append(torch.cat([ignore, text[len(prompt) :]]))
    L = max(len(s) for s in sequences)
    mask = _lengths_mask([len(s) for s in sequences], L, padding, device)
    return _pad(sequences, L, padding, _pad_embedding(embed, pad_id, prefixes[0])), mask, _pad(targets, L, padding, IGNORE)


def _pad_embedding(embed: Callable[[torch.Tensor], torch.Tensor], pad_id: int, like: torch.Tensor) -> torch.Tensor:
    """``pad_id``'s embedding ``(D,)`` on ``like``'s device and dtype."""
    return embed(torch.tensor([[pad_id]], device=like.device))[0, 0].to(like.dtype)


def _check_batch(prefix: Prefixes, prompt_ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    prefixes = prefix_list(prefix)
    if len(prompt_ids) != len(prefixes):
        raise LongvidError(f"{len(prefixes)} prefixes but {len(prompt_ids)} prompts")
    return prefixes


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions ``(B, L)`` counting real tokens only (0 on left padding): ``mask (B, L)`` -> ``(B, L)``."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor, padding: str = "right") -> torch.Tensor:
    """Mean next-token cross-entropy of the labelled tokens: logits ``(B, L, V)``, labels ``(B, L)``
    (-100 = not scored) -> a scalar.

    Each side sums in the order its LMM was trained with; they differ by float rounding only (the
    reduction groups rows by index): "right" reduces positions ``0 .. L-2`` (InstructBLIP's shifted
    logits), "left" all ``L`` positions with the last one unlabelled (``transformers``' loss from ``labels``).
    """
    if padding == "right":
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)
    target = F.pad(labels[:, 1:], (0, 1), value=IGNORE)  # position i predicts token i + 1; the last predicts nothing
    return F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=IGNORE)


def answer_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token log-probabilities of the labelled tokens.

    logits ``(B, L, V)`` and labels ``(B, L)`` (-100 = not scored) -> ``(B,)``.
    """
    log_probs = logits[:, :-1].float().log_softmax(-1)  # position i predicts token i + 1
    target = labels[:, 1:]
    picked = log_probs.gather(-1, target.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (B, L - 1)
    return (picked * (target != IGNORE)).sum(-1)


class CausalLM(nn.Module):
    """A (frozen) causal LM with its tokenizer, fed a prefix of embeddings before the prompt."""

    def __init__(self, model: nn.Module, tokenizer, freeze: bool = True):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        if freeze:
            self.model.eval().requires_grad_(False)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else tokenizer.eos_token_id

    @classmethod
    def from_pretrained(cls, path_or_id: str, dtype: torch.dtype | None = None, device=None, freeze: bool = True) -> "CausalLM":
        """Load model and tokenizer by local path or hub id."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(path_or_id)
            model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=dtype)
        except (OSError, ValueError) as err:
            raise LongvidError(f"cannot load language model {path_or_id!r}: {err}") from err
        return cls(model.to(device) if device else model, tokenizer, freeze)

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    def train(self, mode: bool = True) -> "CausalLM":
        """Keeps a frozen LLM in eval mode (no dropout) whatever the parent module does."""
        super().train(mode)
        if not any(p.requires_grad for p in self.model.parameters()):
            self.model.eval()
        return self

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids ``(B, L)`` -> embeddings ``(B, L, D)``."""
        embedding = self.model.get_input_embeddings()
        return embedding(ids.to(embedding.weight.device))

    def tokenize_prompts(self, prompts: Sequence[str]) -> list[list[int]]:
        """Prompt token ids with the tokenizer's special tokens (e.g. LLaMA's BOS)."""
        return [self.tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]

    def tokenize_answers(self, answers: Sequence[str]) -> list[list[int]]:
        """Answer ids followed by EOS, with no BOS."""
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise LongvidError("the tokenizer has no end-of-sequence token")
        return [self.tokenizer(a, add_special_tokens=False)["input_ids"] + [eos] for a in answers]

    def _prefixes(self, prefix: Prefixes) -> list[torch.Tensor]:
        weight = self.model.get_input_embeddings().weight
        rows = prefix_list(prefix)
        if rows[0].shape[-1] != weight.shape[1]:
            raise LongvidError(f"prefix width {rows[0].shape[-1]} does not match the language model's {weight.shape[1]}")
        return [row.to(weight.device, weight.dtype) for row in rows]

    def _prompt_ids(self, prompts: Sequence[str] | None, batch_size: int) -> list[list[int]]:
        """Token ids of the prompts; None: no text prompt (the prefix holds the whole prompt)."""
        return [[] for _ in range(batch_size)] if prompts is None else self.tokenize_prompts(prompts)

    def _logits(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids(mask)).logits  # (B, L, V)

    def _training_inputs(self, prefix: Prefixes, prompts: Sequence[str] | None, answer_ids: Sequence[Sequence[int]], padding: str):
        prefixes = self._prefixes(prefix)
        return build_training_inputs(prefixes, self._prompt_ids(prompts, len(prefixes)), answer_ids, self.embed, self.pad_id, padding)

    def loss(self, prefix: Prefixes, prompts: Sequence[str] | None, answers: Sequence[str], padding: str = "right") -> torch.Tensor:
        """Mean next-token cross-entropy over the answer tokens (and EOS) of the batch.

        ``prefix``: ``(B, P, D)`` or B ``(P_b, D)``; ``prompts``: B texts after it (None: none);
        ``padding``: the side sequences of different lengths are padded on ("right" or "left").
        """
        embeds, mask, labels = self._training_inputs(prefix, prompts, self.tokenize_answers(answers), padding)
        return next_token_loss(self._logits(embeds, mask), labels, padding)

    def log_likelihood(self, prefix: Prefixes, prompts: Sequence[str] | None, answers: Sequence[str], normalize: bool = False,
                       padding: str = "right") -> torch.Tensor:
        """Log-likelihood ``(B,)`` of each sample's answer (+ EOS); ``normalize`` divides by its token count."""
        answer_ids = self.tokenize_answers(answers)
        embeds, mask, labels = self._training_inputs(prefix, prompts, answer_ids, padding)
        total = answer_log_likelihood(self._logits(embeds, mask), labels)  # (B,)
        return total / torch.tensor([len(a) for a in answer_ids], device=total.device) if normalize else total

    @torch.no_grad()
    def score(self, prefix: Prefixes, prompts: Sequence[str] | None, candidates: Sequence[str], normalize: bool = False,
              padding: str = "right") -> torch.Tensor:
        """Log-likelihood of every candidate answer: ``(B, K)`` on the CPU; ``normalize`` divides by its token count."""
        B = len(prefix_list(prefix))
        return torch.stack([self.log_likelihood(prefix, prompts, [c] * B, normalize, padding).cpu() for c in candidates], 1)

    def hidden_states(self, prefix: Prefixes, prompts: Sequence[str] | None = None) -> list[torch.Tensor]:
        """The last layer's hidden states of each sample's ``[prefix_b][prompt_b]``: B tensors ``(P_b + L_b, D)``,
        computed in the generation layout."""
        prefixes = self._prefixes(prefix)
        embeds, mask = build_generation_inputs(prefixes, self._prompt_ids(prompts, len(prefixes)), self.embed, self.pad_id)
        hidden = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids(mask),
                            output_hidden_states=True).hidden_states[-1]  # (B, L, D)
        return [h[m.bool()] for h, m in zip(hidden, mask)]

    @torch.no_grad()
    def generate_ids(self, prefix: Prefixes, prompts: Sequence[str] | None = None, repetition_penalty: float = 1.0,
                     **generate_kwargs) -> torch.Tensor:
        """``model.generate`` on ``[prefix][prompt]`` (``generate_kwargs`` as ``transformers`` takes them):
        the generated ids ``(B * num_return_sequences, new tokens)``.

        ``repetition_penalty`` applies to every generated token, as in InstructBLIP (``transformers``'
        own would skip the first ``k`` generated tokens of a sequence with ``k`` padded columns in front).
        """
        from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

        prefixes = self._prefixes(prefix)
        embeds, mask = build_generation_inputs(prefixes, self._prompt_ids(prompts, len(prefixes)), self.embed, self.pad_id)
        if repetition_penalty != 1.0:
            generate_kwargs["logits_processor"] = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(repetition_penalty)])
        return self.model.generate(inputs_embeds=embeds, attention_mask=mask, pad_token_id=self.pad_id,
                                   eos_token_id=self.tokenizer.eos_token_id, repetition_penalty=1.0, **generate_kwargs)

    @torch.no_grad()
    def generate(
        self,
        prefix: Prefixes,
        prompts: Sequence[str] | None,
        num_beams: int = 5,
        max_new_tokens: int = 30,
        min_new_tokens: int = 1,
        repetition_penalty: float = 1.5,
        length_penalty: float = 1.0,
        num_return_sequences: int = 1,
    ) -> list[list[str]]:
        """Beam-search answers (InstructBLIP's decoding): B lists of ``num_return_sequences`` strings, best first."""
        out = self.generate_ids(
            prefix, prompts, repetition_penalty, do_sample=False, num_beams=num_beams, max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens, length_penalty=length_penalty, num_return_sequences=num_return_sequences,
        )  # fmt: skip
        texts = [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
        return [texts[i : i + num_return_sequences] for i in range(0, len(texts), num_return_sequences)]
