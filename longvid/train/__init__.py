"""Training: one core (optimisation, checkpoints, logs) and its tasks (clip streams, QA, ReWind stages)."""

from longvid.train.config import PRESETS, TrainConfig, load_config
from longvid.train.core import Optimization, RunLog, Task, TaskTrainer
from longvid.train.loop import Trainer, evaluate, memory_drop_mask, seed_everything
from longvid.train.qa import QAExample, QATrainer
from longvid.train.toy import ToyMemoryModel, ToyState

__all__ = [
    "Optimization",
    "PRESETS",
    "QAExample",
    "QATrainer",
    "RunLog",
    "Task",
    "TaskTrainer",
    "ToyMemoryModel",
    "ToyState",
    "TrainConfig",
    "Trainer",
    "evaluate",
    "load_config",
    "memory_drop_mask",
    "seed_everything",
]
