"""Training progress as events, delivered to whoever listens.

The loop never prints. It emits plain dicts, each with a ``type``:

- ``start``: the run's settings, model size, data;
- ``step``: ``step``, ``epoch``, ``loss``, ``dice`` (this batch), ``lr``, ``images_per_second``, ``elapsed``;
- ``validate``: a validation starts (``epoch``, ``step``);
- ``epoch``: ``epoch``, ``train_loss``, ``val`` (metrics per class and means), ``elapsed``;
- ``snapshot``: ``epoch`` and ``image`` (an (H, W, 3) uint8 picture of a validation prediction);
- ``checkpoint``: ``path`` and ``kind`` (``last`` / ``best``);
- ``end``: ``reason`` (``finished``, ``stopped``, ``time limit``, ``diverged``, ``failed``),
  ``message``, best metrics and checkpoint paths.

Listeners are plain callables; :class:`JsonlLog` writes a JSON-lines file and
:class:`EventHistory` keeps a bounded, thread-safe history for a UI to poll.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from pathlib import Path
from typing import Callable

from ..files import json_safe

Listener = Callable[[dict], None]


class JsonlLog:
    """Append every event (except pictures) as one JSON line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, event: dict) -> None:
        if event["type"] == "snapshot":
            event = {k: v for k, v in event.items() if k != "image"}
        with self._lock:
            self._file.write(json.dumps(json_safe(event)) + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


class EventHistory:
    """A bounded, thread-safe record of a run's events for pollers.

    Step events are kept in a ring of ``max_steps`` (older ones are thinned, not dropped
    wholesale: every other one is removed when full, so a long curve keeps its shape); epoch and
    end events are all kept; only the newest snapshot picture is kept.
    """

    def __init__(self, max_steps: int = 4000):
        self.max_steps = max_steps
        self._lock = threading.Lock()
        self.steps: deque = deque()
        self.epochs: list[dict] = []
        self.other: list[dict] = []
        self.snapshot: dict | None = None
        self.validating = False
        self.version = 0

    def __call__(self, event: dict) -> None:
        with self._lock:
            kind = event["type"]
            if kind != "validate":
                self.validating = False
            if kind == "step":
                self.steps.append(event)
                if len(self.steps) > self.max_steps:
                    self.steps = deque(list(self.steps)[::2])
            elif kind == "epoch":
                self.epochs.append(event)
            elif kind == "snapshot":
                self.snapshot = event
            elif kind == "validate":
                self.validating = True
            else:
                self.other.append(event)
            self.version += 1

    def curves(self) -> dict:
        """Copies of the step and epoch series (cheap: no pictures)."""
        with self._lock:
            return {"steps": [dict(e) for e in self.steps], "epochs": [dict(e) for e in self.epochs],
                    "version": self.version}

    def latest_snapshot(self) -> dict | None:
        with self._lock:
            return self.snapshot

    def last(self, kind: str) -> dict | None:
        with self._lock:
            if kind == "step":
                return self.steps[-1] if self.steps else None
            if kind == "epoch":
                return self.epochs[-1] if self.epochs else None
            for event in reversed(self.other):
                if event["type"] == kind:
                    return event
            return None
