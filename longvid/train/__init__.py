"""Training engine: sequential clip streams, schedules, losses, checkpoints, distributed."""

from longvid.train.config import PRESETS, TrainConfig, load_config
from longvid.train.loop import Trainer, evaluate, memory_drop_mask, seed_everything
from longvid.train.qa import QAExample, QATrainer
from longvid.train.toy import ToyMemoryModel, ToyState

__all__ = [
    "PRESETS",
    "QAExample",
    "QATrainer",
    "ToyMemoryModel",
    "ToyState",
    "TrainConfig",
    "Trainer",
    "evaluate",
    "load_config",
    "memory_drop_mask",
    "seed_everything",
]
