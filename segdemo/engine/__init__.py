"""Training: the loop (events, checkpoints), the background trainer for the app, and torchrun support."""

from .background import BackgroundTrainer, TrainerBusy
from .config import PRESETS, TrainConfig, preset
from .events import EventHistory, JsonlLog
from .loop import Trainer, TrainingDiverged, TrainResult

__all__ = ["BackgroundTrainer", "EventHistory", "JsonlLog", "PRESETS", "TrainConfig", "Trainer",
           "TrainerBusy", "TrainingDiverged", "TrainResult", "preset"]
