"""Tiny random-weight ``transformers`` models, in memory or written to a folder, for the
tiny presets, tests and benchmarks.

Nothing is downloaded: :func:`tiny_llm` builds a tiny LLaMA- or Qwen2-style causal LM with
a word-level tokenizer, :func:`tiny_vision` a tiny CLIP or SigLIP vision tower;
:func:`save_tiny_llm` / :func:`save_tiny_vision` write the same models to a folder that
loads back by path with :class:`longvid.core.llm.CausalLM` and
:class:`longvid.core.encoders.FrozenImageEncoder`.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from longvid.core.seeding import seeded

DEFAULT_WORDS = (
    "question answer what which who where when is are the a an of in on at to video color colour shape "
    "red green blue yellow white black circle square triangle star first last before after moving left right "
    "up down yes no one two three four five six seven eight nine ten happens does do show shown"
).split()


def tiny_tokenizer(words: Sequence[str] = DEFAULT_WORDS):
    """A lower-casing word-level tokenizer: ``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2, ``</s>`` 3, then ``words``;
    BOS is prepended to every encoded text."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<pad>", "<unk>", "<s>", "</s>", *dict.fromkeys(words)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def save_tiny_tokenizer(folder: str, words: Sequence[str] = DEFAULT_WORDS) -> None:
    """Write :func:`tiny_tokenizer` to ``folder``."""
    tiny_tokenizer(words).save_pretrained(folder)


def tiny_llm_model(
    arch: str = "llama", hidden: int = 32, layers: int = 2, words: Sequence[str] = DEFAULT_WORDS, seed: int = 0,
    init_std: float = 0.02, isolated: bool = True,
):
    """A tiny random ``arch`` ("llama" or "qwen2") ``transformers`` causal LM for :func:`tiny_tokenizer`'s
    vocabulary, its weights drawn from ``seed`` (``isolated``: the global RNG is left as it was).

    ``init_std`` is the std of the random weights (``initializer_range``): the default 0.02
    gives almost uniform next-token distributions whatever the input; a larger one gives a
    frozen random LLM whose output a visual prefix can actually steer.
    """
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    if arch not in classes:
        raise ValueError(f"unknown tiny LLM architecture {arch!r} (llama, qwen2)")
    config_class, model_class = classes[arch]
    config = config_class(
        vocab_size=4 + len(dict.fromkeys(words)), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=False, initializer_range=init_std,
    )  # fmt: skip
    with seeded(seed, isolated):
        return model_class(config)


def tiny_llm(arch: str = "llama", hidden: int = 32, layers: int = 2, words: Sequence[str] = DEFAULT_WORDS, seed: int = 0,
             init_std: float = 0.02, freeze: bool = True):
    """:func:`tiny_llm_model` and :func:`tiny_tokenizer` as a :class:`longvid.core.llm.CausalLM`, built in memory."""
    from longvid.core.llm import CausalLM

    return CausalLM(tiny_llm_model(arch, hidden, layers, words, seed, init_std), tiny_tokenizer(words), freeze)


def save_tiny_llm(
    folder: str, arch: str = "llama", hidden: int = 32, layers: int = 2, words: Sequence[str] = DEFAULT_WORDS, seed: int = 0,
    init_std: float = 0.02,
) -> str:
    """Write :func:`tiny_llm_model` and its tokenizer to ``folder`` (seeding the global RNG); returns ``folder``."""
    os.makedirs(folder, exist_ok=True)
    save_tiny_tokenizer(folder, words)
    tiny_llm_model(arch, hidden, layers, words, seed, init_std, isolated=False).save_pretrained(folder)
    return folder


TINY_VISION_STATS = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def tiny_vision_model(arch: str = "clip", image_size: int = 32, patch: int = 8, hidden: int = 48, seed: int = 0, isolated: bool = True):
    """A tiny random ``arch`` ("clip" or "siglip") ``transformers`` vision tower, its weights drawn
    from ``seed`` (``isolated``: the global RNG is left as it was)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    classes = {"clip": (CLIPVisionConfig, CLIPVisionModel), "siglip": (SiglipVisionConfig, SiglipVisionModel)}
    if arch not in classes:
        raise ValueError(f"unknown tiny vision architecture {arch!r} (clip, siglip)")
    config_class, model_class = classes[arch]
    config = config_class(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
                          image_size=image_size, patch_size=patch)
    with seeded(seed, isolated):
        return model_class(config)


def tiny_vision(arch: str = "clip", image_size: int = 32, patch: int = 8, hidden: int = 48, seed: int = 0):
    """:func:`tiny_vision_model` as a :class:`longvid.core.encoders.FrozenImageEncoder`, built in memory."""
    from longvid.core.encoders import FrozenImageEncoder

    model = tiny_vision_model(arch, image_size, patch, hidden, seed)
    return FrozenImageEncoder(model, image_size, TINY_VISION_STATS["image_mean"], TINY_VISION_STATS["image_std"], name=f"tiny-{arch}")


def save_tiny_vision(folder: str, arch: str = "clip", image_size: int = 32, patch: int = 8, hidden: int = 48, seed: int = 0) -> str:
    """Write :func:`tiny_vision_model` and its preprocessing statistics to ``folder`` (seeding the
    global RNG); returns ``folder``."""
    tiny_vision_model(arch, image_size, patch, hidden, seed, isolated=False).save_pretrained(folder)
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump(TINY_VISION_STATS, f)
    return folder
