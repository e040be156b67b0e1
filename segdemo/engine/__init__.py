"""Training: the loop (events, checkpoints), the background trainer for the app, and torchrun support.

The names are imported on first use (PEP 562), so that ``from segdemo.engine import
BackgroundTrainer`` does not import the loop and torch with it: the app creates its trainer
before it serves its first page, and loads torch after.
"""

import importlib

_HOMES = {
    "BackgroundTrainer": "background", "TrainerBusy": "background",
    "PRESETS": "config", "TrainConfig": "config", "preset": "config",
    "EventHistory": "events", "JsonlLog": "events",
    "Trainer": "loop", "TrainingDiverged": "loop", "TrainResult": "loop",
}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value  # the next lookup is a plain global
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


__all__ = sorted(_HOMES)
