"""MA-LMM's starting point: a ``transformers`` InstructBLIP checkpoint, and released LAVIS weights.

MA-LMM starts from InstructBLIP (EVA ViT-g + Q-Former + Vicuna) and adds only ``image_pe``
(zero at the start) and the memory banks, which have no weights. :func:`read_instructblip`
opens a checkpoint of ``InstructBlipForConditionalGeneration`` (a local folder or a hub
id: ``Salesforce/instructblip-vicuna-7b``) and returns its parts for
:func:`longvid.malmm.build_model`:

- the vision tower (EVA ViT-g as ``InstructBlipVisionModel``) as the frozen encoder, its
  final LayerNorm (``post_layernorm``) moved out: it is MA-LMM's trainable ``ln_vision``,
  applied after the encoder and before ``image_pe`` (as in LAVIS);
- the LLM and its tokenizer (the checkpoint's root) as the frozen :class:`CausalLM`;
- the Q-Former tokenizer (``qformer_tokenizer/``), the image size and the image
  processor's mean / std;
- the Q-Former, query tokens, ``ln_vision`` and ``llm_proj`` (``language_projection``)
  weights renamed to the LAVIS names that :func:`load_malmm_weights` reads, and the
  Q-Former shape for the config.

With one frame, an MA-LMM built this way gives InstructBLIP's projected query output
(``get_image_features``) for the same pixels and instruction.

:func:`load_lavis_weights` then loads a released MA-LMM / LAVIS ``.pth`` on top and reports
the model's trainable tensors it did not hold (missing) and the tensors it held that the
model has no place for (unexpected).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
from torch import nn

from longvid.errors import LongvidError


@dataclass
class InstructBlipParts:
    encoder: nn.Module  # FrozenImageEncoder over the vision tower (post_layernorm removed)
    llm: nn.Module  # CausalLM
    qformer_tokenizer: object
    config_fields: dict  # QFormerConfig / MALMMConfig fields read from the checkpoint's config
    weights: dict[str, torch.Tensor]  # trainable weights under LAVIS names


_QFORMER_RULES = (  # transformers InstructBLIP name -> LAVIS name
    (r"^qformer\.embeddings\.layernorm\.", "Qformer.bert.embeddings.LayerNorm."),
    (r"^qformer\.embeddings\.(word|position)_embeddings\.", r"Qformer.bert.embeddings.\1_embeddings."),
    (r"^qformer\.encoder\.layer\.(\d+)\.(attention|crossattention)\.attention\.", r"Qformer.bert.encoder.layer.\1.\2.self."),
    (r"^qformer\.encoder\.layer\.(\d+)\.", r"Qformer.bert.encoder.layer.\1."),
    (r"^language_projection\.", "llm_proj."),
    (r"^vision_model\.post_layernorm\.", "ln_vision."),
    (r"^query_tokens$", "query_tokens"),
)


def lavis_name(hf_name: str) -> str | None:
    """The LAVIS / MA-LMM name of a trainable InstructBLIP tensor (None: not a trainable part)."""
    for pattern, replacement in _QFORMER_RULES:
        if re.match(pattern, hf_name):
            return re.sub(pattern, replacement, hf_name)
    return None


def _config_fields(config) -> dict:
    q = config.qformer_config
    if getattr(q, "hidden_act", "gelu") != "gelu":
        raise LongvidError(f"the Q-Former uses {q.hidden_act!r}; longvid's Q-Former uses GELU (erf) as InstructBLIP does")
    if not config.use_decoder_only_language_model:
        raise LongvidError("this InstructBLIP has an encoder-decoder LLM (Flan-T5); MA-LMM uses a decoder-only LLM (Vicuna)")
    return {
        "hidden_size": q.hidden_size, "num_layers": q.num_hidden_layers, "num_heads": q.num_attention_heads,
        "intermediate_size": q.intermediate_size, "cross_attention_freq": q.cross_attention_frequency,
        "encoder_width": q.encoder_hidden_size, "num_query_tokens": config.num_query_tokens, "vocab_size": q.vocab_size,
        "max_position_embeddings": q.max_position_embeddings, "layer_norm_eps": q.layer_norm_eps,
        "dropout": q.hidden_dropout_prob, "llm_hidden": config.text_config.hidden_size,
        "vision_layer_norm_eps": config.vision_config.layer_norm_eps,
    }  # fmt: skip


def _image_stats(path: str) -> tuple[int | None, tuple, tuple]:
    """Image side, mean and std of the checkpoint's ``preprocessor_config.json`` (read as JSON: the
    image processor classes may need torchvision); CLIP's statistics when there is none."""
    import json

    from transformers.utils import cached_file

    from longvid.video.transforms import CLIP_MEAN, CLIP_STD

    try:
        found = cached_file(path, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    except OSError:
        found = None
    if not found:
        return None, CLIP_MEAN, CLIP_STD
    with open(found, encoding="utf-8") as f:
        processor = json.load(f)
    size = processor.get("size") or {}
    side = (size.get("height") or size.get("shortest_edge")) if isinstance(size, dict) else size
    return side, tuple(processor.get("image_mean", CLIP_MEAN)), tuple(processor.get("image_std", CLIP_STD))


def _stored_trainable_weights(path: str) -> dict[str, torch.Tensor] | None:
    """The trainable tensors (LAVIS names, float32) read from the checkpoint's safetensors files as
    stored, so a ``dtype=float16`` load of the frozen parts does not round them; None when the
    checkpoint has no safetensors files."""
    import json

    from safetensors import safe_open
    from transformers.utils import cached_file

    def find(name: str) -> str | None:
        try:
            return cached_file(path, name, _raise_exceptions_for_missing_entries=False)
        except OSError:
            return None

    index = find("model.safetensors.index.json")
    if index:
        with open(index, encoding="utf-8") as f:
            files = [find(name) for name in sorted(set(json.load(f)["weight_map"].values()))]
    else:
        files = [find("model.safetensors")]
    if not files or None in files:
        return None
    weights = {}
    for file in files:
        with safe_open(file, "pt") as handle:
            for name in handle.keys():
                target = lavis_name(name)
                if target is not None:
                    weights[target] = handle.get_tensor(name).float()
    return weights


def read_instructblip(path: str | os.PathLike, dtype: torch.dtype | None = None, device=None) -> InstructBlipParts:
    """The parts of InstructBLIP checkpoint ``path`` (folder or hub id); ``dtype`` applies to the
    frozen vision tower and LLM (the trainable weights are returned in float32)."""
    from transformers import AutoTokenizer, InstructBlipForConditionalGeneration

    from longvid.core.encoders import FrozenImageEncoder
    from longvid.core.llm import CausalLM

    path = os.fspath(path)
    try:
        blip = InstructBlipForConditionalGeneration.from_pretrained(path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
        qformer_tokenizer = AutoTokenizer.from_pretrained(path, subfolder="qformer_tokenizer")
    except (OSError, ValueError) as err:
        raise LongvidError(f"cannot load InstructBLIP checkpoint {path!r}: {err}") from err
    fields = _config_fields(blip.config)
    weights = {}
    for name, tensor in blip.state_dict().items():
        target = lavis_name(name)
        if target is not None:
            weights[target] = tensor.detach().float().clone()
    stored = _stored_trainable_weights(path)
    if stored is not None and stored.keys() == weights.keys():  # as saved: not rounded through a float16 load
        weights = stored
    vision = blip.vision_model
    vision.post_layernorm = nn.Identity()  # its weights are ln_vision's, applied by MA-LMM after the encoder
    side, mean, std = _image_stats(path)
    image_size = side or blip.config.vision_config.image_size
    encoder = FrozenImageEncoder(vision, image_size, mean, std, name=path)
    llm = CausalLM(blip.language_model, tokenizer)
    if device is not None:
        encoder, llm = encoder.to(device), llm.to(device)
    return InstructBlipParts(encoder, llm, qformer_tokenizer, fields, weights)


@dataclass(frozen=True)
class LoadReport:
    """What a weights file gave: ``loaded`` tensors, the model's trainable tensors it lacked
    (``missing``) and its tensors the model has no place for (``unexpected``)."""

    loaded: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    def line(self, path: str) -> str:
        def some(names):
            return f"{len(names)} ({', '.join(names[:3])}{' ...' if len(names) > 3 else ''})" if names else "0"

        return f"{path}: loaded {self.loaded} tensors; missing {some(self.missing)}; unexpected {some(self.unexpected)}"


def load_lavis_weights(model, state: dict[str, torch.Tensor]) -> LoadReport:
    """Load MA-LMM / LAVIS-named weights (``Qformer.bert.*``, ``query_tokens``, ``ln_vision.*``,
    ``llm_proj.*``, ``image_pe.weight``) into ``model`` where they fit; tensors of the frozen
    parts (``visual_encoder.*``, ``llm_model.*``) and heads MA-LMM does not use (``Qformer.cls.*``)
    are reported as unexpected. A tensor whose shape differs from the model's is an error."""
    ours = model.trainable_state_dict()
    mapped, unexpected = {}, []
    for name, tensor in state.items():
        target = _our_name(name)
        if target is None or target not in ours:
            if not name.endswith("position_ids"):  # a buffer, not a weight
                unexpected.append(name)
            continue
        if tuple(ours[target].shape) != tuple(tensor.shape):
            raise LongvidError(f"{name} is {tuple(tensor.shape)} in the checkpoint but {tuple(ours[target].shape)} in the model")
        mapped[target] = tensor
    if not mapped:
        raise LongvidError(f"no tensor of the checkpoint fits this MA-LMM (its names start {', '.join(sorted(state)[:3])})")
    model.load_state_dict(mapped, strict=False)
    optional = (".block_pool", ".gate.weight", ".gate.bias")  # the sparse-memory variant's own weights
    missing = tuple(k for k in ours if k not in mapped and not (k.endswith(optional) and "attention" in k))
    return LoadReport(len(mapped), missing, tuple(unexpected))


def _our_name(lavis: str) -> str | None:
    """longvid's parameter name for a LAVIS one."""
    if lavis == "query_tokens":
        return "qformer.query_tokens"
    if lavis.startswith("Qformer.bert.embeddings."):
        return "qformer.embeddings." + lavis[len("Qformer.bert.embeddings.") :]
    if lavis.startswith("Qformer.bert.encoder.layer."):
        return "qformer.layers." + lavis[len("Qformer.bert.encoder.layer.") :]
    if lavis.startswith(("ln_vision.", "llm_proj.", "image_pe.")):
        return lavis
    return None
