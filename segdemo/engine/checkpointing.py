"""A run's checkpoints: ``last.pt`` after every validation (with the state to resume from), ``best.pt``
whenever the validation Dice is the best so far, and resuming from a ``last.pt``.

Only the main rank writes under torchrun. Checkpoints carry the recipe, the data's description,
the metrics and the curves (thinned), so a finished run's file describes itself in the app.
"""

from __future__ import annotations

import math
from pathlib import Path

from .. import checkpoints
from ..errors import SettingsError
from ..files import json_safe
from ..filenames import BEST_CHECKPOINT, LAST_CHECKPOINT
from .events import CheckpointSaved, Listener
from .setup import Progress, TrainingSetup

HISTORY_STEPS_KEPT = 2000


def checkpoint_meta(setup: TrainingSetup, progress: Progress, metrics: dict | None) -> dict:
    """The metadata a checkpoint of this run carries."""
    config, info = setup.config, setup.info
    steps = progress.history["steps"]
    if len(steps) > HISTORY_STEPS_KEPT:
        steps = steps[:: math.ceil(len(steps) / HISTORY_STEPS_KEPT)]
    return checkpoints.build_meta(
        setup.model, task=info.task, classes=info.classes, colors=info.colors,
        normalization=setup.normalization, title=config.title, recipe=config.to_dict(),
        data=setup.source.describe(), metrics=json_safe(metrics), best_metrics=json_safe(progress.best_metrics),
        history={"steps": steps, "epochs": progress.history["epochs"]}, steps=progress.step,
        epochs=progress.epoch, train_seconds=round(progress.elapsed(), 1))


def save_checkpoints(setup: TrainingSetup, progress: Progress, metrics: dict | None, out: Path | None,
                     emit: Listener) -> None:
    """Write ``last.pt``, and ``best.pt`` too when ``metrics`` has the best mean Dice so far."""
    if out is None or not setup.context.is_main:
        return
    meta = checkpoint_meta(setup, progress, metrics)
    state = {"optimizer": setup.optimizer.state_dict(), "step": progress.step, "epoch": progress.epoch,
             "best_score": progress.best_score, "scaler": setup.scaler.state_dict() if setup.scaler else None,
             "chosen_lr": progress.chosen_lr}
    half = setup.config.half_checkpoint
    progress.last_path = str(checkpoints.save(out / LAST_CHECKPOINT, setup.model, meta, train_state=state, half=half))
    emit(CheckpointSaved(which="last", path=progress.last_path, step=progress.step, elapsed=progress.elapsed()))
    score = (metrics or {}).get("mean_dice")
    if score is not None and math.isfinite(score) and score >= progress.best_score:
        progress.best_score, progress.best_metrics = score, metrics
        meta["best_metrics"] = json_safe(metrics)
        progress.best_path = str(checkpoints.save(out / BEST_CHECKPOINT, setup.model, meta, half=half))
        emit(CheckpointSaved(which="best", path=progress.best_path, step=progress.step, elapsed=progress.elapsed()))


def resume(setup: TrainingSetup, progress: Progress, path: str) -> None:
    """Load a ``last.pt``'s weights, optimizer state and counters into this run, and the learning
    rate chosen mid-run if one was (the schedule stays set aside, as it was when the run stopped)."""
    payload = checkpoints.read(path)
    state = payload.get("train_state")
    if state is None:
        raise SettingsError(f"{Path(path).name} holds no training state to resume (use init_from to fine-tune)")
    setup.model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                 for k, v in payload["state_dict"].items()})
    setup.optimizer.load_state_dict(state["optimizer"])
    if setup.scaler is not None and state.get("scaler"):
        setup.scaler.load_state_dict(state["scaler"])
    meta = payload["meta"]
    progress.step, progress.epoch = int(state["step"]), int(state["epoch"])
    progress.best_score = float(state.get("best_score", -math.inf))
    progress.chosen_lr = state.get("chosen_lr")   # a rate a person chose mid-run outlives the pause of a resume
    progress.history = meta.get("history") or progress.history
    progress.best_metrics = meta.get("best_metrics")
    progress.seconds_before_resume = float(meta.get("train_seconds") or 0.0)
