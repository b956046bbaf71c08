"""Inference precision: one place that puts a loaded model into float32 or bfloat16.

``longvid stream``, ``longvid eval`` and ``longvid ask`` (``--dtype``) and the Python API
call :func:`for_inference`: the weights are cast to the dtype (``model.to(dtype)``, no
autocast, so no cast per op), and a model's memory state, built by ``init_state`` from the
weights' dtype, is kept in it too (a saved state round-trips in its dtype). LayerNorm,
softmax and the fused attention kernels accumulate in float32 inside PyTorch's bf16 CPU
kernels.

bfloat16 runs on CPU only where the CPU does bf16 arithmetic natively (AVX512-BF16 or
AMX, :func:`cpu_bf16_support`); elsewhere PyTorch emulates it,
slower than float32, so the request falls back to float32 and the caller gets one line
saying so. On CUDA bfloat16 is used as asked (float16 too, which ``stream`` accepts there).
"""

from __future__ import annotations

import os
from typing import Callable

import torch

from longvid.errors import LongvidError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INFERENCE_DTYPES = ("float32", "bfloat16")  # what --dtype offers on every device


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"`` (or ``"bf16"``, ``torch.bfloat16``) -> ``torch.bfloat16``; a one-line error otherwise."""
    if isinstance(name, torch.dtype):
        if name in DTYPES.values():
            return name
        raise LongvidError(f"unsupported dtype {name}: use one of {', '.join(DTYPES)}")
    key = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}.get(str(name).lower(), str(name).lower())
    if key not in DTYPES:
        raise LongvidError(f"unknown dtype {name!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[key]


def cpu_bf16_support() -> tuple[bool, str]:
    """(native, reason): whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX-BF16), with what was found."""
    capability = torch.backends.cpu.get_cpu_capability()
    flags: set[str] = set()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    found = sorted(flags & {"avx512_bf16", "amx_bf16"})
    mkldnn_bf16 = bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
    native = bool(found) or (mkldnn_bf16 and capability.startswith("AVX512"))
    reason = f"CPU capability {capability}, bf16 flags {found or 'none'}, mkldnn bf16 {'yes' if mkldnn_bf16 else 'no'}"
    return native, reason


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device = "cpu") -> tuple[torch.dtype, str | None]:
    """The dtype inference runs in on ``device`` and a one-line note when it is not the one asked.

    bfloat16 on a CPU without native bf16 falls back to float32 (note says why); float16
    needs CUDA (error).
    """
    wanted = parse_dtype(dtype)
    device_type = torch.device(device).type
    if wanted == torch.float16 and device_type != "cuda":
        raise LongvidError("float16 needs --device cuda, a CUDA device (use bfloat16 on CPU)")
    if wanted == torch.bfloat16 and device_type == "cpu":
        native, reason = cpu_bf16_support()
        if not native:
            return torch.float32, f"bfloat16 is not native on this CPU ({reason}): running in float32 instead"
    return wanted, None


def for_inference(model: torch.nn.Module, dtype: str | torch.dtype = "float32", device: str | torch.device | None = None,
                  log: Callable[[str], None] | None = None) -> torch.nn.Module:
    """``model`` in eval mode, on ``device`` (default: where it is), with its weights in ``dtype``
    (:func:`resolve_dtype`: bfloat16 falls back to float32 on CPUs without native bf16,
    the note going to ``log``, else to a warning). Returns the model (moved in place)."""
    if device is None:
        device = next(model.parameters()).device
    effective, note = resolve_dtype(dtype, device)
    if note is not None:
        if log is not None:
            log(note)
        else:
            import warnings

            warnings.warn(note, stacklevel=2)
    model = model.to(device=device, dtype=effective).eval()
    if effective != torch.float32:
        for module in getattr(model, "float32_modules", list)():  # e.g. MeMViT's final norm and head
            module.float()
    return model


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of a model's floating-point weights (the first one found)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
