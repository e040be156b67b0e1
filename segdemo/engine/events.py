"""Training progress as typed events, delivered to whoever listens.

The loop never prints. It hands each listener (any callable) one of these frozen records:

- :class:`RunStarted`: the run's settings, model size, data, device and precision;
- :class:`StepDone`: one optimizer step: loss, batch Dice, learning rate, speed;
- :class:`PrecisionChosen`: a run with ``precision="auto"`` timed its first steps in each candidate
  precision and keeps the fastest (:mod:`.precision`);
- :class:`ValidationStarted`: a validation pass begins;
- :class:`EpochDone`: an epoch's mean training loss and its validation metrics;
- :class:`SnapshotTaken`: a picture of the model's current prediction on a fixed validation image;
- :class:`CheckpointSaved`: ``last.pt`` or ``best.pt`` was written;
- :class:`ControlApplied`: the run acted on a person's request (:mod:`.control`): it paused,
  resumed, took one step while paused, or took up a learning rate they chose;
- :class:`RunEnded`: how and why the run ended (``finished``, ``stopped``, ``time limit``,
  ``diverged``, ``failed``), with the best metrics, the checkpoint paths and the images/s trained.

Every event has an ``elapsed`` time (training seconds, resumes included) and a ``kind`` (its name
in ``log.jsonl``). :class:`JsonlLog` writes them as JSON lines; :class:`EventHistory` keeps a bounded,
thread-safe history for a UI to poll.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Union

from ..files import json_safe


@dataclass(frozen=True)
class RunStarted:
    kind: ClassVar[str] = "start"
    config: dict
    model: str
    parameters: int
    data: dict
    steps_per_epoch: int
    total_steps: int
    device: str
    precision: str
    channels_last: bool
    world_size: int
    resumed_at_step: int
    elapsed: float


@dataclass(frozen=True)
class StepDone:
    kind: ClassVar[str] = "step"
    step: int
    epoch: float               # fractional: 2.5 is half-way through the third epoch
    loss: float
    dice: float | None         # mean Dice of the batch just learned from (None: no class present)
    lr: float
    images_per_second: float
    total_steps: int
    elapsed: float


@dataclass(frozen=True)
class PrecisionChosen:
    kind: ClassVar[str] = "precision"
    step: int                  # the steps up to here were the trial
    precision: str             # "fp32", "bfloat16" …: what the rest of the run uses
    step_seconds: dict         # precision → median seconds of its timed trial steps
    elapsed: float


@dataclass(frozen=True)
class ValidationStarted:
    kind: ClassVar[str] = "validate"
    epoch: int
    step: int
    elapsed: float


@dataclass(frozen=True)
class EpochDone:
    kind: ClassVar[str] = "epoch"
    epoch: int
    step: int
    train_loss: float | None
    val: dict                  # SegmentationMetrics.compute(), NaN as None
    partial_epoch: bool        # a stop or time limit ended the epoch early
    validation_seconds: float
    elapsed: float


@dataclass(frozen=True)
class SnapshotTaken:
    kind: ClassVar[str] = "snapshot"
    epoch: int
    step: int
    image: Any                 # (H, W, 3) uint8: the prediction drawn over a validation image
    elapsed: float


@dataclass(frozen=True)
class CheckpointSaved:
    kind: ClassVar[str] = "checkpoint"
    which: str                 # "last" or "best"
    path: str
    step: int
    elapsed: float


@dataclass(frozen=True)
class ControlApplied:
    kind: ClassVar[str] = "control"
    action: str                # "pause", "resume", "one step" or "learning rate"
    step: int                  # the steps taken so far (a one step: before it)
    lr: float | None           # the learning rate chosen ("learning rate"), else None
    elapsed: float


@dataclass(frozen=True)
class RunEnded:
    kind: ClassVar[str] = "end"
    reason: str                # finished, stopped, time limit, diverged, failed
    message: str
    steps: int = 0
    epochs: int = 0
    best_metrics: dict | None = None
    last_metrics: dict | None = None
    best_path: str | None = None
    last_path: str | None = None
    elapsed: float = 0.0
    images: int = 0                    # trained on since this process started the run, all ranks together
    images_per_second: float | None = None   # ``images`` over the time of their steps (no validation)


Event = Union[RunStarted, StepDone, PrecisionChosen, ValidationStarted, EpochDone, SnapshotTaken, CheckpointSaved,
              ControlApplied, RunEnded]
Listener = Callable[[Event], None]


def as_record(event: Event) -> dict:
    """An event as one JSON-able dict with its ``type`` (pictures left out): a line of ``log.jsonl``."""
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name != "image"}
    return json_safe({"type": event.kind, **fields})


class JsonlLog:
    """Append every event as one JSON line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._file.write(json.dumps(as_record(event)) + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


class EventHistory:
    """A bounded, thread-safe record of a run's events for pollers.

    Step events are kept in a ring of ``max_steps`` (older ones are thinned, not dropped
    wholesale: every other one is removed when full, so a long curve keeps its shape); epoch
    events are all kept; of the others, the newest of each kind (only the newest snapshot picture).
    """

    def __init__(self, max_steps: int = 4000):
        self.max_steps = max_steps
        self._lock = threading.Lock()
        self._steps: deque[StepDone] = deque()
        self._epochs: list[EpochDone] = []
        self._latest: dict[type, Event] = {}
        self.validating = False
        self.version = 0

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.validating = isinstance(event, ValidationStarted)
            if isinstance(event, StepDone):
                self._steps.append(event)
                if len(self._steps) > self.max_steps:
                    self._steps = deque(list(self._steps)[::2])
            elif isinstance(event, EpochDone):
                self._epochs.append(event)
            self._latest[type(event)] = event
            self.version += 1

    def steps(self) -> list[StepDone]:
        with self._lock:
            return list(self._steps)

    def epochs(self) -> list[EpochDone]:
        with self._lock:
            return list(self._epochs)

    def latest(self, kind: type) -> Event | None:
        """The newest event of class ``kind`` (e.g. ``StepDone``), or None."""
        with self._lock:
            return self._latest.get(kind)
