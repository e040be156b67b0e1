"""What a person asks of a run while it trains: stop, pause, resume, one step, a learning rate.

:class:`RunControl` is the one place these requests meet the training loop. The app (or a
script) calls its methods from any thread; :class:`~segdemo.engine.loop.Trainer` asks it before
every step (:meth:`RunControl.wait_to_step`) and reads the learning rate it should use.

- **Pause** holds the run before its next step. The training thread then waits on a
  ``threading.Condition``: it holds no core until Resume, One step or Stop wakes it.
- **One step** (only while paused) lets exactly one more step through, then the run holds again.
- **Stop** ends the run as it always has (it validates and saves first), paused or not.
- **A learning rate** set mid-run is used from the next step on, and the schedule is set aside
  for the rest of the run: the rate stays at the chosen value (a new one may be set any time).

Time paused is not training time (:class:`~segdemo.engine.setup.Progress`), so in single-user mode
it counts neither against the run's ``max_seconds`` nor on the curves' seconds axis. On a shared
trainer (a queue and a time cap, :class:`~segdemo.engine.background.BackgroundTrainer`) others
wait for the run, so there ``pauses_count``: the time limit is wall time, pauses included, and a
paused run still ends when its time is up.

Controls are for a run in one process (the app's). Under torchrun the ranks must act alike, and
only a stop is agreed between them, so the trainer refuses the others there (:meth:`refuse_changes`).
"""

from __future__ import annotations

import math
import threading

from ..errors import SettingsError

MAX_LEARNING_RATE = 1.0   # above this no optimizer here learns anything: a typo, not a choice


def checked_learning_rate(value) -> float:
    """``value`` as a learning rate, or a :class:`~segdemo.errors.SettingsError` saying why not."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"the learning rate must be a number, not {value!r}") from None
    if not math.isfinite(rate) or rate <= 0:
        raise SettingsError(f"the learning rate must be a positive number (got {value!r})")
    if rate > MAX_LEARNING_RATE:
        raise SettingsError(f"a learning rate of {rate:g} is far too large: pick one between 1e-5 and "
                            f"{MAX_LEARNING_RATE:g} (3e-3 is typical here)")
    return rate


class RunControl:
    """Thread-safe requests to one run (see the module docstring).

    Args:
        stop_event: the Event that stops the run, for callers that keep one of their own; set it
            through :meth:`stop` to also wake a paused run.
        pauses_count: whether time paused counts against the run's time limit (a shared trainer).
    """

    def __init__(self, stop_event: threading.Event | None = None, *, pauses_count: bool = False):
        self.stop_event = stop_event or threading.Event()
        self.pauses_count = pauses_count
        self._changed = threading.Condition()
        self._paused = False
        self._steps_allowed = 0
        self._learning_rate: float | None = None
        self._threads: int | None = None
        self._refused: str | None = None

    # --- asked by a person (any thread) ------------------------------------------------------------
    def stop(self) -> None:
        """End the run after this step (it validates and saves); wakes a paused run."""
        with self._changed:
            self.stop_event.set()
            self._changed.notify_all()

    def pause(self) -> None:
        """Hold the run before its next step (harmless twice)."""
        with self._changed:
            self._refuse_if_refused()
            self._paused = True
            self._changed.notify_all()

    def resume(self) -> None:
        """Let a paused run go on (harmless when it is not paused)."""
        with self._changed:
            self._paused, self._steps_allowed = False, 0
            self._changed.notify_all()

    def step(self) -> None:
        """Let a paused run take one more step, then hold again."""
        with self._changed:
            self._refuse_if_refused()
            if not self._paused:
                raise SettingsError("one step is for a paused run: press Pause first")
            self._steps_allowed += 1
            self._changed.notify_all()

    def share_cores(self, threads: int | None) -> None:
        """Train on ``threads`` torch threads from the next step on; None: as many as the run began
        with. Not a person's request: the app makes room for requests that predict meanwhile
        (:meth:`~segdemo.engine.background.BackgroundTrainer.make_room`)."""
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise SettingsError(f"a run trains on at least one thread (got {threads!r})")
        with self._changed:
            self._threads = threads

    @property
    def threads(self) -> int | None:
        """The torch threads the app asks the run to train on, or None: as many as it began with."""
        with self._changed:
            return self._threads

    def set_learning_rate(self, value) -> float:
        """Use ``value`` from the next step on, the schedule set aside; returns it as a float."""
        rate = checked_learning_rate(value)
        with self._changed:
            self._refuse_if_refused()
            self._learning_rate = rate
        return rate

    # --- read by anyone ------------------------------------------------------------------------------
    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set()

    @property
    def paused(self) -> bool:
        with self._changed:
            return self._paused

    @property
    def learning_rate(self) -> float | None:
        """The rate a person chose, or None while the schedule decides."""
        with self._changed:
            return self._learning_rate

    # --- asked by the training loop ----------------------------------------------------------------
    def wait_to_step(self, timeout: float | None = None) -> str:
        """Block while paused: until Resume, One step or Stop, or for at most ``timeout`` seconds.

        Returns why the next step may be tried: ``"go"`` (not paused, or resumed), ``"one step"``
        (a step allowed while paused; it is used up), ``"stop"``, or ``"timeout"``."""
        with self._changed:
            self._changed.wait_for(lambda: not self._paused or self._steps_allowed or self.stop_event.is_set(),
                                   timeout)
            if self.stop_event.is_set():
                return "stop"
            if not self._paused:
                return "go"
            if self._steps_allowed:
                self._steps_allowed -= 1
                return "one step"
            return "timeout"

    def refuse_changes(self, reason: str) -> None:
        """Refuse pause, one step and learning rates from now on, with ``reason`` (stop still works)."""
        with self._changed:
            self._refused = reason
            self._paused, self._steps_allowed, self._learning_rate = False, 0, None
            self._changed.notify_all()

    def _refuse_if_refused(self) -> None:
        if self._refused:
            raise SettingsError(self._refused)
