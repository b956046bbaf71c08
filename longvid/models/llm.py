"""Causal language model adapter: a prefix of embeddings in front of a text prompt.

:class:`CausalLM` wraps any ``transformers`` causal LM (LLaMA / Vicuna, Qwen2, ...) and
its tokenizer, loaded by local path or hub id, frozen by default. Visual tokens arrive as
a prefix ``(B, P, D)`` in the LLM's embedding space; the adapter builds the sequences
as InstructBLIP / MA-LMM do:

- generation: ``[prefix][left-padded prompt]`` (padding between prefix and prompt,
  masked out), then ``generate(inputs_embeds=...)`` with beam search;
- training: ``[prefix][prompt][answer + eos][padding]``, labels = answer tokens and eos
  only (-100 on prefix, prompt and padding), next-token cross-entropy;
- closed-set scoring: the log-likelihood of each candidate answer under the same layout.

The sequence builders are plain functions over token-id lists so they can be checked
against reference tensors without a tokenizer.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from longvid.errors import LongvidError

IGNORE = -100


def build_generation_inputs(
    prefix: torch.Tensor, prompt_ids: Sequence[Sequence[int]], embed: Callable[[torch.Tensor], torch.Tensor], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[prefix][left-padded prompt]``.

    Args:
        prefix: ``(B, P, D)`` embeddings (e.g. projected Q-Former queries).
        prompt_ids: B token-id lists (already including any BOS).
        embed: the LLM's token embedding, ids ``(B, L)`` -> ``(B, L, D)``.
        pad_id: id used for padding positions (masked out).

    Returns:
        ``inputs_embeds`` ``(B, P + Lp, D)`` and ``attention_mask`` ``(B, P + Lp)`` (long).
    """
    _check_batch(prefix, prompt_ids)
    B, P, _ = prefix.shape
    Lp = max(len(ids) for ids in prompt_ids)
    ids = torch.full((B, Lp), pad_id, dtype=torch.long, device=prefix.device)
    mask = torch.zeros(B, P + Lp, dtype=torch.long, device=prefix.device)
    mask[:, :P] = 1
    for b, row in enumerate(prompt_ids):
        if row:
            ids[b, Lp - len(row) :] = torch.tensor(row, device=prefix.device)
        mask[b, P + Lp - len(row) :] = 1
    embeds = torch.cat([prefix, embed(ids).to(prefix.dtype)], 1)  # (B, P + Lp, D)
    return embeds, mask


def build_training_inputs(
    prefix: torch.Tensor,
    prompt_ids: Sequence[Sequence[int]],
    answer_ids: Sequence[Sequence[int]],
    embed: Callable[[torch.Tensor], torch.Tensor],
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[prefix][prompt][answer][padding]`` with labels on the answer tokens only.

    ``answer_ids`` should end with the EOS id (it is supervised) and carry no BOS.
    Returns ``inputs_embeds`` ``(B, P + L, D)``, ``attention_mask`` ``(B, P + L)`` and
    ``labels`` ``(B, P + L)`` (-100 except at answer tokens), L = the longest prompt + answer.
    """
    _check_batch(prefix, prompt_ids)
    if len(answer_ids) != len(prompt_ids):
        raise LongvidError(f"{len(prompt_ids)} prompts but {len(answer_ids)} answers")
    B, P, _ = prefix.shape
    L = max(len(p) + len(a) for p, a in zip(prompt_ids, answer_ids))
    ids = torch.full((B, L), pad_id, dtype=torch.long, device=prefix.device)
    labels = torch.full((B, P + L), IGNORE, dtype=torch.long, device=prefix.device)
    mask = torch.zeros(B, P + L, dtype=torch.long, device=prefix.device)
    mask[:, :P] = 1
    for b, (prompt, answer) in enumerate(zip(prompt_ids, answer_ids)):
        row = list(prompt) + list(answer)
        ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, P : P + len(row)] = 1
        labels[b, P + len(prompt) : P + len(row)] = torch.tensor(list(answer), dtype=torch.long)
    embeds = torch.cat([prefix, embed(ids).to(prefix.dtype)], 1)
    return embeds, mask, labels


def _check_batch(prefix: torch.Tensor, prompt_ids: Sequence[Sequence[int]]) -> None:
    if prefix.dim() != 3:
        raise LongvidError(f"prefix must be (B, P, D), got {tuple(prefix.shape)}")
    if len(prompt_ids) != prefix.shape[0]:
        raise LongvidError(f"{prefix.shape[0]} prefixes but {len(prompt_ids)} prompts")


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

    def _prefix(self, prefix: torch.Tensor) -> torch.Tensor:
        weight = self.model.get_input_embeddings().weight
        if prefix.shape[-1] != weight.shape[1]:
            raise LongvidError(f"prefix width {prefix.shape[-1]} does not match the language model's {weight.shape[1]}")
        return prefix.to(weight.device, weight.dtype)

    def loss(self, prefix: torch.Tensor, prompts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
        """Mean next-token cross-entropy over the answer tokens (and EOS) of the batch."""
        embeds, mask, labels = build_training_inputs(
            self._prefix(prefix), self.tokenize_prompts(prompts), self.tokenize_answers(answers), self.embed, self.pad_id
        )
        logits = self.model(inputs_embeds=embeds, attention_mask=mask).logits  # (B, L, V)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)

    @torch.no_grad()
    def score(self, prefix: torch.Tensor, prompts: Sequence[str], candidates: Sequence[str], normalize: bool = False) -> torch.Tensor:
        """Log-likelihood of every candidate answer: ``(B, K)``; ``normalize`` divides by its token count."""
        B, K = prefix.shape[0], len(candidates)
        prompt_ids = self.tokenize_prompts(prompts)
        answer_ids = self.tokenize_answers(candidates)
        prefix = self._prefix(prefix)
        scores = torch.empty(B, K)
        for k, answer in enumerate(answer_ids):
            embeds, mask, labels = build_training_inputs(prefix, prompt_ids, [answer] * B, self.embed, self.pad_id)
            logits = self.model(inputs_embeds=embeds, attention_mask=mask).logits
            scores[:, k] = answer_log_likelihood(logits, labels).cpu() / (len(answer) if normalize else 1)
        return scores

    @torch.no_grad()
    def generate(
        self,
        prefix: torch.Tensor,
        prompts: Sequence[str],
        num_beams: int = 5,
        max_new_tokens: int = 30,
        min_new_tokens: int = 1,
        repetition_penalty: float = 1.5,
        length_penalty: float = 1.0,
        num_return_sequences: int = 1,
    ) -> list[list[str]]:
        """Beam-search answers: B lists of ``num_return_sequences`` strings, best first."""
        embeds, mask = build_generation_inputs(self._prefix(prefix), self.tokenize_prompts(prompts), self.embed, self.pad_id)
        with warnings.catch_warnings():  # the penalty applies to generated tokens only, as in InstructBLIP
            warnings.filterwarnings("ignore", message=".*repetition_penalty.*inputs_embeds")
            out = self._generate(embeds, mask, num_beams, max_new_tokens, min_new_tokens, repetition_penalty, length_penalty, num_return_sequences)
        texts = [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
        return [texts[i : i + num_return_sequences] for i in range(0, len(texts), num_return_sequences)]

    def _generate(self, embeds, mask, num_beams, max_new_tokens, min_new_tokens, repetition_penalty, length_penalty, num_return_sequences):
        return self.model.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            do_sample=False,
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            repetition_penalty=repetition_penalty,
            length_penalty=length_penalty,
            num_return_sequences=num_return_sequences,
            pad_token_id=self.pad_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )  # (B * n, new tokens): with inputs_embeds only, just the generated ids
