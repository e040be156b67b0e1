"""Training: the configuration, the plan that checks a run fits before it starts (budget), the
run's pieces (setup, steps, checkpointing) and the loop that strings them together, typed events,
the background trainer for the app, and torchrun support.

The names are imported on first use (PEP 562), so that ``from segdemo.engine import
BackgroundTrainer`` does not import the loop and torch with it: the app creates its trainer
before it serves its first page, and loads torch after.
"""

import importlib

_HOMES = {
    "BackgroundTrainer": "background",
    "RunCost": "budget", "RunPlan": "budget", "estimate_run_memory": "budget", "plan_run": "budget",
    "PRESETS": "config", "TrainConfig": "config", "configure": "config", "number": "config", "preset": "config",
    "whole_number": "config",
    "RunControl": "control",
    "CheckpointSaved": "events", "ControlApplied": "events", "EpochDone": "events", "EventHistory": "events", "JsonlLog": "events",
    "PrecisionChosen": "events", "RunEnded": "events", "RunStarted": "events", "SnapshotTaken": "events", "StepDone": "events",
    "ValidationStarted": "events",
    "FeatureMaps": "events", "ProbeFrame": "events",
    "Trainer": "loop", "TrainResult": "loop",
    "TrainingDiverged": "steps",
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
