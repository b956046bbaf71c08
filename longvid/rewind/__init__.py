"""ReWind (CVPR 2025): read-perceive-write memory, frame selectors and grounding, in one folder.

- :mod:`.config`: :class:`RewindConfig`, :class:`RewindMemoryConfig`, ``PRESETS``, ``describe``.
- :mod:`.memory`: the read-perceive-write memory and its state (:class:`MemoryState`).
- :mod:`.store`: the stored frame features (:class:`FrameStore`), kept as a value.
- :mod:`.selection`: which stored frames the LLM reads (:class:`DFS` and other selectors).
- :mod:`.grounding`: start/end pointers over the memory's frames.
- :mod:`.model`: :class:`ReWind`, its stream state :class:`RewindState`, ``build_model``.
- :mod:`.baselines`: the uniform-frame LLM of the grounding benchmark.
"""

from longvid.rewind.config import PRESETS, RewindConfig, RewindMemoryConfig, describe, get_config
from longvid.rewind.memory import MemoryState, RewindMemory
from longvid.rewind.model import ReWind, RewindState, build_model, load_trainable, trainable_state_dict
from longvid.rewind.selection import (
    DFS, Candidates, NoSelector, OracleSelector, RandomSelector, UniformSelector, select_frames,
)
from longvid.rewind.store import FrameStore

__all__ = [
    "PRESETS", "RewindConfig", "RewindMemoryConfig", "describe", "get_config", "MemoryState", "RewindMemory", "ReWind",
    "RewindState", "build_model", "load_trainable", "trainable_state_dict", "DFS", "Candidates", "NoSelector",
    "OracleSelector", "RandomSelector", "UniformSelector", "select_frames", "FrameStore",
]
