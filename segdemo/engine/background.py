"""Training in a background thread, for the app.

:class:`BackgroundTrainer` runs one :class:`~segdemo.engine.loop.Trainer` at a time in a daemon
thread. A second ``start`` while one runs is **refused** with :class:`TrainerBusy` (a clear
message for the page), not queued: a teaching run is short and the person who started it is
watching it. The UI polls :meth:`status` and :meth:`curves`, which only copy from a bounded,
lock-guarded history, so any number of pages can watch without slowing the run.

The training loop, and torch with it, is imported by the run's thread: the app creates its
trainer before it serves its first page, and loads torch only after that.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import traceback
import uuid
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import TrainerBusy
from .config import TrainConfig
from .events import EpochDone, EventHistory, RunEnded, RunStarted, SnapshotTaken, StepDone

if TYPE_CHECKING:
    from ..data import DataSource
    from .loop import TrainResult

log = logging.getLogger(__name__)

IDLE, STARTING, RUNNING, STOPPING, FINISHED, STOPPED, FAILED = (
    "idle", "starting", "running", "stopping", "finished", "stopped", "failed")


_LIVE_TRAINERS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_runs_at_exit(timeout: float = 60.0) -> None:
    """Stop runs still going when the interpreter exits (Ctrl-C on the app): the run saves its
    checkpoint, and no daemon thread is left inside torch while Python tears down (which can
    abort the process)."""
    trainers = list(_LIVE_TRAINERS)
    for trainer in trainers:
        trainer.stop()
    for trainer in trainers:
        trainer.wait(timeout)


class BackgroundTrainer:
    """One training run at a time, in a thread.

    Args:
        runs_dir: where each run's folder (checkpoints, log) is created.
        threads: torch CPU threads for the training thread (None: torch's default, one per core,
            which bounds it). Measured on 2 cores (``bench/bench_threads.py``): with the run held
            to one thread, predictions made meanwhile were slower at the 95th percentile (129 vs
            33 ms at 192×192) and so was the run; the OS shares the cores better than a fixed split.
        on_finish: called with ``(run_id, TrainResult)`` when a run ends (e.g. to add its
            checkpoint to the app's model list).
    """

    def __init__(self, runs_dir: str | Path, *, threads: int | None = None, on_finish=None):
        self.runs_dir = Path(runs_dir)
        self.threads = threads
        self.on_finish = on_finish
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._state = IDLE
        self._run_id: str | None = None
        self._config: TrainConfig | None = None
        self._history = EventHistory()
        self._result: TrainResult | None = None
        self._message = "no run yet"
        self._started_at: float | None = None
        self._stop_requested_at: float | None = None
        _LIVE_TRAINERS.add(self)

    # --- control -----------------------------------------------------------------------------------
    def start(self, config: TrainConfig, source: DataSource | None = None) -> str:
        """Start a run of ``config`` (``source``: its data, if the caller opened it already);
        returns the run's id. Raises :class:`~segdemo.errors.TrainerBusy` if one is going."""
        with self._lock:
            if self._state in (STARTING, RUNNING, STOPPING):
                raise TrainerBusy(f"a training run ({self._run_id}) is already going; stop it or wait "
                                  "for it to finish before starting another")
            run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
            config = config.replace(out=str(self.runs_dir / run_id))
            self._run_id, self._config = run_id, config
            self._history = EventHistory()
            self._result = None
            self._stop = threading.Event()
            self._state, self._message = STARTING, "preparing data and model"
            self._started_at, self._stop_requested_at = time.time(), None
            self._thread = threading.Thread(target=self._run, args=(run_id, config, source, self._stop, self._history),
                                            name=f"segdemo-train-{run_id}", daemon=True)
            self._thread.start()
        return run_id

    def stop(self) -> bool:
        """Ask the run to stop (it finishes its current step, validates and saves).
        Returns False when no run is going. Pressing it twice is harmless."""
        with self._lock:
            if self._state not in (STARTING, RUNNING, STOPPING):
                return False
            self._stop.set()
            if self._state != STOPPING:
                self._state, self._message = STOPPING, "stopping after this step"
                self._stop_requested_at = time.time()
            return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends; True if it has."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        with self._lock:
            return self._state in (STARTING, RUNNING, STOPPING)

    # --- the thread ---------------------------------------------------------------------------------
    def _run(self, run_id: str, config: TrainConfig, source: DataSource | None, stop: threading.Event,
             history: EventHistory) -> None:
        import torch

        from .loop import Trainer

        if self.threads:
            torch.set_num_threads(self.threads)  # OpenMP: applies to this thread's parallel regions

        def listen(event) -> None:
            history(event)
            if isinstance(event, RunStarted):
                with self._lock:
                    if self._run_id == run_id and self._state == STARTING:
                        self._state, self._message = RUNNING, "training"

        result = None
        try:
            result = Trainer(config, [listen], stop, source=source).run()
            state = {"finished": FINISHED, "time limit": FINISHED, "stopped": STOPPED}.get(result.reason, FAILED)
            message = result.message
        except Exception as error:  # bad data or settings found while setting up, or a bug: show it
            log.error("training run %s failed:\n%s", run_id, traceback.format_exc())
            state, message = FAILED, f"{type(error).__name__}: {error}"
            history(RunEnded(reason="failed", message=message))
        with self._lock:
            if self._run_id == run_id:
                self._state, self._message, self._result = state, message, result
        if self.on_finish is not None and result is not None:
            try:
                self.on_finish(run_id, result)
            except Exception:
                log.exception("on_finish failed for run %s", run_id)

    # --- what the page polls -----------------------------------------------------------------------
    def status(self) -> dict:
        """A small, JSON-able summary: state, progress, ETA, latest numbers, checkpoints."""
        with self._lock:
            state, message, run_id, config, result = (self._state, self._message, self._run_id,
                                                      self._config, self._result)
            started = self._started_at
        history = self._history
        step: StepDone | None = history.latest(StepDone)
        epoch: EpochDone | None = history.latest(EpochDone)
        start: RunStarted | None = history.latest(RunStarted)
        total_steps = start.total_steps if start else None
        done = step.step if step else 0
        progress = None
        eta = None
        if total_steps:
            progress = done / total_steps
            if config and config.max_seconds and step:
                progress = max(progress, min(1.0, step.elapsed / config.max_seconds))
            if step and progress and progress > 0 and state in (RUNNING, STOPPING):
                eta = max(0.0, step.elapsed * (1 - progress) / progress)
        checkpoint = None
        for kind in ("best", "last"):
            path = getattr(result, f"{kind}_path", None) if result else None
            if path:
                checkpoint = path
                break
        return {
            "state": state, "message": message, "run_id": run_id,
            "phase": "validating" if history.validating and state in (RUNNING, STOPPING) else
            ("training" if state in (RUNNING, STOPPING) else None),
            "step": done, "total_steps": total_steps, "progress": progress, "eta_seconds": eta,
            "epoch": epoch.epoch if epoch else 0,
            "loss": step.loss if step else None, "train_dice": step.dice if step else None,
            "val_mean_dice": epoch.val["mean_dice"] if epoch else None,
            "images_per_second": step.images_per_second if step else None,
            "elapsed": (time.time() - started) if started and state in (STARTING, RUNNING, STOPPING)
            else (result.elapsed if result else None),
            "checkpoint": checkpoint,
            "model": config.model if config else None, "title": config.title if config else None,
        }

    def steps(self) -> list[StepDone]:
        """The run's step events so far (thinned when long)."""
        return self._history.steps()

    def epochs(self) -> list[EpochDone]:
        """The run's epoch events so far."""
        return self._history.epochs()

    def curves_version(self) -> int:
        """Changes whenever the run records an event: pollers redraw only then."""
        return self._history.version

    def snapshot(self) -> SnapshotTaken | None:
        """The newest prediction snapshot, or None."""
        return self._history.latest(SnapshotTaken)

    @property
    def result(self) -> TrainResult | None:
        with self._lock:
            return self._result
