"""Training progress as typed events, delivered to whoever listens.

The loop never prints. It hands each listener (any callable) one of these frozen records:

- :class:`RunStarted`: the run's settings, model size, data, device and precision;
- :class:`StepDone`: one optimizer step: loss, batch Dice, learning rate, speed;
- :class:`PrecisionChosen`: a run with ``precision="auto"`` timed its first steps in each candidate
  precision and keeps the fastest (:mod:`.precision`);
- :class:`ValidationStarted`: a validation pass begins;
- :class:`EpochDone`: an epoch's mean training loss and its validation metrics;
- :class:`SnapshotTaken`: a picture of the model's current prediction on a fixed validation image;
- :class:`ProbeFrame`: the run's fixed probe images predicted now, with their Dice (:mod:`.probes`);
- :class:`FeatureMaps`: one probe image at every stage of the network (:mod:`segdemo.features`);
- :class:`CheckpointSaved`: ``last.pt`` or ``best.pt`` was written;
- :class:`ControlApplied`: the run acted on a person's request (:mod:`.control`): it paused,
  resumed, took one step while paused, or took up a learning rate they chose;
- :class:`RunEnded`: how and why the run ended (``finished``, ``stopped``, ``time limit``,
  ``diverged``, ``failed``), with the best metrics, the checkpoint paths and the images/s trained.

Every event has an ``elapsed`` time (training seconds, resumes included) and a ``kind`` (its name
in ``log.jsonl``). :class:`JsonlLog` writes them as JSON lines; :class:`EventHistory` keeps a bounded,
thread-safe history for a UI to poll; :class:`LastPicture` keeps a run's newest validation picture in
its folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Union

from ..files import json_safe
from ..image_files import save_png


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
class ProbeFrame:
    kind: ClassVar[str] = "probe"
    step: int
    dice: float | None         # mean Dice over the probe images (None: no class present)
    image: bytes               # PNG: input | truth | prediction of each probe, thumbnails
    probe_seconds: float       # what making this frame took (the run's cost of watching)
    elapsed: float


@dataclass(frozen=True)
class FeatureMaps:
    kind: ClassVar[str] = "features"
    step: int
    stages: list               # (name, (C, H, W)) of each stage, in the order data flows
    pictures: list             # PNG bytes of each stage's strongest channels under its name and shape
    image: bytes               # PNG: all of them laid out as a U, with the skip connections
    feature_seconds: float     # what making these took (the run's cost of watching)
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


Event = Union[RunStarted, StepDone, PrecisionChosen, ValidationStarted, EpochDone, SnapshotTaken, ProbeFrame,
              FeatureMaps, CheckpointSaved, ControlApplied, RunEnded]
Listener = Callable[[Event], None]


PICTURE_FIELDS = ("image", "pictures")   # left out of log.jsonl


def as_record(event: Event) -> dict:
    """An event as one JSON-able dict with its ``type`` (pictures left out): a line of ``log.jsonl``."""
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name not in PICTURE_FIELDS}
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


MAX_FRAMES = 120   # probe frames a run keeps, in memory (EventHistory) and in its folder (.timeline)


class EventHistory:
    """A bounded, thread-safe record of a run's events for pollers.

    Step events are kept in a ring of ``max_steps`` (older ones are thinned, not dropped
    wholesale: every other one is removed when full, so a long curve keeps its shape); epoch
    events are all kept; probe frames up to ``max_frames`` (thinned evenly when full, the first
    and the latest kept: :func:`thin_evenly`); of the others, the newest of each kind (only the
    newest snapshot picture and feature maps).
    """

    def __init__(self, max_steps: int = 4000, max_frames: int = MAX_FRAMES):
        self.max_steps = max_steps
        self.max_frames = max_frames
        self._lock = threading.Lock()
        self._steps: deque[StepDone] = deque()
        self._frames: list[ProbeFrame] = []
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
            elif isinstance(event, ProbeFrame):
                self._frames.append(event)
                if len(self._frames) > self.max_frames:
                    self._frames = thin_evenly(self._frames, self.max_frames // 2 + 1)
            self._latest[type(event)] = event
            self.version += 1

    def steps(self) -> list[StepDone]:
        with self._lock:
            return list(self._steps)

    def frames(self) -> list[ProbeFrame]:
        """The probe frames kept so far, oldest first."""
        with self._lock:
            return list(self._frames)

    def epochs(self) -> list[EpochDone]:
        with self._lock:
            return list(self._epochs)

    def latest(self, kind: type) -> Event | None:
        """The newest event of class ``kind`` (e.g. ``StepDone``), or None."""
        with self._lock:
            return self._latest.get(kind)


def thin_evenly(items: list, count: int) -> list:
    """``count`` of ``items`` (at least 2), evenly spread, the first and the last among them
    (all of them when there are no more than ``count``)."""
    if len(items) <= count:
        return list(items)
    count = max(count, 2)
    step = (len(items) - 1) / (count - 1)
    return [items[round(index * step)] for index in range(count)]


PICTURE_NAME = "prediction.png"   # a run folder's last validation picture (engine.experiments shows it)


class LastPicture:
    """A listener that keeps a run's newest validation picture as ``prediction.png`` in its folder
    (replaced whole, never seen half-written), so that runs can be shown side by side after they
    have left the trainer's memory."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / PICTURE_NAME

    def __call__(self, event: Event) -> None:
        if not isinstance(event, SnapshotTaken):
            return
        temporary = self.path.with_name(f".{PICTURE_NAME}.tmp")
        save_png(temporary, event.image)
        os.replace(temporary, self.path)
