"""One training loop for every model and data source.

:class:`Trainer` runs a :class:`~segdemo.engine.config.TrainConfig`: it builds the run's objects
(:mod:`.setup`), trains epoch by epoch (:mod:`.steps`), validates on whole images, shows a snapshot,
saves the best and the last checkpoint (:mod:`.checkpointing`), and reports everything as typed
events (:mod:`.events`). It never prints.

Stopping: a ``threading.Event`` is checked before every step, so a stop takes effect within one
step; the run then validates what it has learned and saves it, so a stopped run always leaves a
usable checkpoint (a stop during a validation takes effect when that bounded validation ends).
Pausing, one step at a time and a learning rate chosen mid-run come through the same check, from
a :class:`~.control.RunControl` (a paused run waits there, holding no core).
A loss that turns NaN/inf ends the run with a clear message and keeps the last good checkpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import DataSource
from ..files import json_safe
from ..models import count_parameters
from ..runtime import use_threads
from .checkpointing import checkpoint_meta, resume, save_checkpoints
from .config import TrainConfig
from .control import RunControl
from .events import (ControlApplied, EpochDone, Event, JsonlLog, LastPicture, Listener, RunEnded, RunStarted,
                     ValidationStarted)
from .precision import precision_name
from .probes import Probes
from .setup import Progress, TrainingSetup, build_setup
from .steps import TrainingDiverged, evaluate, snapshot, train_one_epoch
from .timeline import ProbeTimeline

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    reason: str                      # finished, stopped, time limit, diverged
    message: str
    steps: int
    epochs: int
    elapsed: float
    best_metrics: dict | None
    last_metrics: dict | None
    best_path: str | None = None
    last_path: str | None = None
    history: dict = field(default_factory=dict)
    images_per_second: float | None = None   # training throughput, all ranks together
    model: torch.nn.Module | None = None
    meta: dict | None = None


def run_precision(setup: TrainingSetup) -> str:
    """The run's precision as :class:`RunStarted` says it: ``"bfloat16"``, or ``"fp32 or bfloat16"``
    while the first steps time both (:class:`PrecisionChosen` then says which)."""
    trial = setup.precision_trial
    if trial is None:
        return precision_name(setup.autocast_dtype)
    return " or ".join(precision_name(option) for option in trial.options)


class Trainer:
    """Runs one training run.

    Args:
        config: the run's settings (validated when the config was made).
        listeners: callables that receive every event.
        stop_event: set it to end the run early (it validates and saves first).
        source: ``config.data`` already opened by the caller, so it is not opened twice.
        control: pause, one step, a learning rate and stop while the run goes (it brings its own
            stop event; give this or ``stop_event``, not both).
    """

    def __init__(self, config: TrainConfig, listeners: list[Listener] | None = None,
                 stop_event: threading.Event | None = None, *, source: DataSource | None = None,
                 control: RunControl | None = None):
        if control is not None and stop_event is not None and stop_event is not control.stop_event:
            raise ValueError("give a stop_event or a control (which has one), not both")
        self.config = config
        self.listeners = list(listeners or [])
        self.control = control or RunControl(stop_event)
        self.stop_event = self.control.stop_event
        self.source = source
        self.setup: TrainingSetup | None = None
        self.progress = Progress(pauses_count=self.control.pauses_count)
        self._holding = False   # the run is held by a pause (said once, with a ControlApplied)
        self._threads_at_start = 1   # set when the run starts (config.threads may change it)

    def emit(self, event: Event) -> None:
        if self.setup is not None and not self.setup.context.is_main:
            return
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a broken listener (a closed page) must not end training
                log.exception("a training listener failed")

    def _before_step(self) -> tuple[str, str] | None:
        """What the loop asks before each step: hold while paused, take up a chosen learning
        rate, then whether to stop. Under torchrun only the stop applies (all ranks must act
        alike, and the controls come from the app, which trains in one process)."""
        progress = self.progress
        progress.one_step = False
        if not self.setup.context.enabled:
            self._hold_while_paused()
            use_threads(self.control.threads or self._threads_at_start)  # the app may want a core back
            chosen = self.control.learning_rate
            if chosen is not None and chosen != progress.chosen_lr:
                progress.chosen_lr = chosen
                self.emit(ControlApplied(action="learning rate", step=progress.step, lr=chosen,
                                         elapsed=progress.elapsed()))
        return self._stop_reason()

    def _hold_while_paused(self) -> None:
        """Wait while the run is paused, until Resume, One step or Stop; where pauses count
        (a shared trainer) also until the time limit is reached. The time waited is not training
        time (:meth:`Progress.elapsed`)."""
        control, progress = self.control, self.progress
        while control.paused and not control.stopped and not self._time_is_up():
            if not self._holding:
                self._holding = True
                self.emit(ControlApplied(action="pause", step=progress.step, lr=None, elapsed=progress.elapsed()))
            progress.paused_since = time.perf_counter()
            try:
                outcome = control.wait_to_step(self._seconds_left() if progress.pauses_count else None)
            finally:
                progress.paused_seconds += time.perf_counter() - progress.paused_since
                progress.paused_since = None
            if outcome == "one step":
                progress.one_step = True
                self.emit(ControlApplied(action="one step", step=progress.step, lr=None, elapsed=progress.elapsed()))
                return
        if self._holding and not control.paused:
            self._holding = False
            self.emit(ControlApplied(action="resume", step=progress.step, lr=None, elapsed=progress.elapsed()))

    def _seconds_left(self) -> float | None:
        """Until the time limit (validation allowed for), or None without one."""
        if not self.config.max_seconds:
            return None
        progress = self.progress
        return max(0.0, self.config.max_seconds - progress.time_counted() - progress.validation_seconds)

    def _time_is_up(self) -> bool:
        left = self._seconds_left()
        return left is not None and left <= 0

    def _stop_reason(self) -> tuple[str, str] | None:
        """Whether to stop before the next step; under torchrun all ranks decide together."""
        progress, config = self.progress, self.config
        stopped = self.stop_event.is_set()
        timed_out = self._time_is_up()
        if self.setup.context.enabled:
            flags = torch.tensor([float(stopped), float(timed_out)], dtype=torch.float64)
            self.setup.context.all_reduce_sum(flags)
            stopped, timed_out = bool(flags[0] > 0), bool(flags[1] > 0)
        if stopped:
            return "stopped", f"stopped at step {progress.step}"
        if timed_out:
            return "time limit", f"reached the {config.max_seconds:g} s limit at step {progress.step}"
        return None

    def _end_of_epoch(self, train_losses: list[float], out: Path | None, partial: bool) -> None:
        """Validate, snapshot and save.

        Validation is not interrupted by a stop (it is bounded by ``val_images``): a stop pressed
        meanwhile ends the run right after it, with what was learned validated and saved."""
        setup, progress = self.setup, self.progress
        setup.context.sync_buffers(setup.model)
        started = time.perf_counter()
        self.emit(ValidationStarted(epoch=progress.epoch, step=progress.step, elapsed=progress.elapsed()))
        metrics = evaluate(setup)
        progress.validation_seconds = time.perf_counter() - started
        mean_loss = float(np.mean(train_losses)) if train_losses else float("nan")
        progress.last_metrics = metrics
        event = EpochDone(epoch=progress.epoch, step=progress.step,
                          train_loss=json_safe(setup.context.mean(mean_loss, setup.device)), val=json_safe(metrics),
                          partial_epoch=partial, validation_seconds=progress.validation_seconds,
                          elapsed=progress.elapsed())
        progress.history["epochs"].append({"epoch": event.epoch, "step": event.step, "train_loss": event.train_loss,
                                           "val": event.val, "partial_epoch": partial, "elapsed": event.elapsed,
                                           "validation_seconds": event.validation_seconds})
        self.emit(event)
        if (progress.epoch % self.config.snapshot_every == 0 or partial) and setup.context.is_main:
            self.emit(snapshot(setup, progress))
        save_checkpoints(setup, progress, metrics, out, self.emit)

    def run(self) -> TrainResult:
        """Train; returns how it ended. Raises only for bad settings or data (before training)."""
        config, progress = self.config, self.progress
        progress.started = time.perf_counter()
        self.setup = setup = build_setup(config, self.source)
        self._threads_at_start = torch.get_num_threads()
        config = self.config = setup.config  # as planned: a batch larger than the data is reduced
        if setup.context.enabled:
            self.control.refuse_changes("pause, one step and a learning-rate change are for a run in one process "
                                        "(the app's); this one is distributed under torchrun: stop it instead")
        if config.resume:
            resume(setup, progress, config.resume)
        out = Path(config.out) if config.out else None
        log_file = None
        if out is not None and setup.context.is_main:
            out.mkdir(parents=True, exist_ok=True)
            log_file = JsonlLog(out / "log.jsonl")
            self.listeners += [log_file, LastPicture(out)]  # the run's folder tells its story (engine.experiments)
            if config.probe_images:
                self.listeners.append(ProbeTimeline(out))       # and keeps its probe frames (engine.timeline)
        self.emit(RunStarted(
            config=config.to_dict(), model=setup.model_name, parameters=count_parameters(setup.model),
            data=setup.source.describe(), steps_per_epoch=setup.steps_per_epoch, total_steps=setup.total_steps,
            device=str(setup.device), precision=run_precision(setup),
            channels_last=setup.channels_last, world_size=setup.context.world_size,
            resumed_at_step=progress.step, elapsed=progress.elapsed()))
        reason, message = "finished", f"trained {config.epochs} epochs"
        probes = Probes(setup, config.probe_images) if config.probe_images and setup.context.is_main else None
        setup.model.train()
        try:
            while progress.epoch < config.epochs:
                outcome = train_one_epoch(setup, progress, self.emit, self._before_step,
                                          probes.after_step if probes is not None else None)
                progress.images += outcome.images
                progress.step_seconds += outcome.seconds
                if not outcome.complete:
                    reason, message = outcome.stop_reason
                    if outcome.losses:  # learned something since the last save: keep it
                        progress.epoch += 1 if len(outcome.losses) >= setup.steps_per_epoch else 0
                        self._end_of_epoch(outcome.losses, out, partial=True)
                    break
                progress.epoch += 1
                if progress.epoch % config.val_every == 0 or progress.epoch == config.epochs:
                    self._end_of_epoch(outcome.losses, out, partial=False)
        except TrainingDiverged as error:
            reason, message = "diverged", str(error)
        if probes is not None and reason != "diverged":   # the timeline ends with the weights the run ends with
            probes.at_end(progress, self.emit)
        setup.context.sync_buffers(setup.model)
        result = TrainResult(reason=reason, message=message, steps=progress.step, epochs=progress.epoch,
                             elapsed=progress.elapsed(), best_metrics=json_safe(progress.best_metrics),
                             last_metrics=json_safe(progress.last_metrics), best_path=progress.best_path,
                             last_path=progress.last_path, history=progress.history,
                             images_per_second=progress.images_per_second(), model=setup.model,
                             meta=checkpoint_meta(setup, progress, progress.last_metrics))
        self.emit(RunEnded(reason=reason, message=message, steps=progress.step, epochs=progress.epoch,
                           best_metrics=result.best_metrics, last_metrics=result.last_metrics,
                           best_path=progress.best_path, last_path=progress.last_path, elapsed=result.elapsed,
                           images=progress.images, images_per_second=result.images_per_second))
        if log_file is not None:
            log_file.close()
        setup.context.close()
        return result
