"""Tiny random-weight ``transformers`` checkpoints written to a folder, for tests and benchmarks.

Nothing is downloaded: :func:`save_tiny_llm` writes a tiny LLaMA- or Qwen2-style causal
LM with a word-level tokenizer, :func:`save_tiny_vision` a tiny CLIP or SigLIP vision
tower; both load back by path with :class:`longvid.models.llm.CausalLM` and
:class:`longvid.models.encoders.FrozenImageEncoder`.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import torch

DEFAULT_WORDS = (
    "question answer what which who where when is are the a an of in on at to video color colour shape "
    "red green blue yellow white black circle square triangle star first last before after moving left right "
    "up down yes no one two three four five six seven eight nine ten happens does do show shown"
).split()


def save_tiny_tokenizer(folder: str, words: Sequence[str] = DEFAULT_WORDS) -> None:
    """A lower-casing word-level tokenizer: ``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2, ``</s>`` 3, then ``words``;
    BOS is prepended to every encoded text."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<pad>", "<unk>", "<s>", "</s>", *dict.fromkeys(words)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.save_pretrained(folder)


def save_tiny_llm(
    folder: str, arch: str = "llama", hidden: int = 32, layers: int = 2, words: Sequence[str] = DEFAULT_WORDS, seed: int = 0,
    init_std: float = 0.02,
) -> str:
    """Write a tiny ``arch`` ("llama" or "qwen2") causal LM and its tokenizer to ``folder``; returns ``folder``.

    ``init_std`` is the std of the random weights (``initializer_range``): the default 0.02
    gives almost uniform next-token distributions whatever the input; a larger one gives a
    frozen random LLM whose output a visual prefix can actually steer.
    """
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    os.makedirs(folder, exist_ok=True)
    save_tiny_tokenizer(folder, words)
    vocab = 4 + len(dict.fromkeys(words))
    common = dict(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=False, initializer_range=init_std,
    )
    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        raise ValueError(f"unknown tiny LLM architecture {arch!r} (llama, qwen2)")
    model.save_pretrained(folder)
    return folder


def save_tiny_vision(folder: str, arch: str = "clip", image_size: int = 32, patch: int = 8, hidden: int = 48, seed: int = 0) -> str:
    """Write a tiny ``arch`` ("clip" or "siglip") vision tower to ``folder``; returns ``folder``."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    common = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4, image_size=image_size, patch_size=patch)
    if arch == "clip":
        model = CLIPVisionModel(CLIPVisionConfig(**common))
    elif arch == "siglip":
        model = SiglipVisionModel(SiglipVisionConfig(**common))
    else:
        raise ValueError(f"unknown tiny vision architecture {arch!r} (clip, siglip)")
    model.save_pretrained(folder)
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}, f)
    return folder
