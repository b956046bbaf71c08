"""MA-LMM (CVPR 2024) and its no-memory InstructBLIP baseline: config and presets
(:mod:`.config`), memory banks and their compression (:mod:`.bank`), the memory-augmented
Q-Former (:mod:`.qformer`) and the stream model (:mod:`.model`)."""

from longvid.malmm.bank import MemoryBank, compress_memory_bank, compress_to_length
from longvid.malmm.config import PRESETS, MALMMConfig, QFormerConfig, SparseMemoryConfig, describe, get_config
from longvid.malmm.model import MALMM, MALMMState, build_model, load_malmm_weights
from longvid.malmm.qformer import QFormer, QFormerMemory, load_qformer_state_dict

__all__ = [
    "MALMM", "MALMMConfig", "MALMMState", "MemoryBank", "PRESETS", "QFormer", "QFormerConfig", "QFormerMemory",
    "SparseMemoryConfig", "build_model", "compress_memory_bank", "compress_to_length", "describe", "get_config",
    "load_malmm_weights", "load_qformer_state_dict",
]  # fmt: skip
