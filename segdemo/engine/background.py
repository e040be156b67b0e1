"""Training in the background, for the app: one run at a time, the next ones in a fair queue.

:class:`BackgroundTrainer` runs one :class:`~segdemo.engine.loop.Trainer` at a time, in a child
process for the app (:mod:`segdemo.engine.worker` says why) or in a daemon thread for scripts and
tests, followed from a thread of this process: the cores are the limit. What happens to a second Start depends on ``queue_length``:

- 0 (single-user, ``python app.py``): it is **refused** with
  :class:`~segdemo.errors.TrainerBusy`: the person who started the run is watching it.
- more (a classroom Space): it **waits**, first come first served, and starts when the runs before
  it end; each owner (a workspace) may have one run queued or going, and the queue holds at most
  ``queue_length`` runs. A run belongs to the owner who started it: only they can stop, pause,
  resume, step or change the learning rate of it (:mod:`.control`), cancel it and download its
  checkpoint; everyone can watch the run that is training now.

A **series** (:meth:`BackgroundTrainer.start_series`, a lesson's runs) is several runs of one owner
queued together, one after another with nothing between them: it is allowed in single-user mode,
counts as its owner's one entry in a classroom, and takes as many places of ``queue_length`` as it
has runs waiting (the queue's length counts runs, so a place still means a bounded wait). Stopping
one of its runs cancels the rest.

``time_cap`` bounds every run's wall time (its ``max_seconds``), so a place in the queue means a
bounded wait: with a queue and a cap, time paused counts against the run's limit too (alone, in
single-user mode, a pause is not training time and the limit waits for it). The UI polls :meth:`status` and :meth:`steps`, which only copy from a bounded,
lock-guarded history, so any number of pages can watch without slowing the run.

The training loop, and torch with it, is imported by the run's thread (or its process): the app
creates its trainer before it serves its first page, and loads torch only after that.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import traceback
import uuid
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import TrainerBusy, UserError, failure_message
from ..limits import memory_budget, size_text
from .config import TrainConfig
from .control import RunControl
from .events import (ControlApplied, EpochDone, EventHistory, FeatureMaps, ProbeFrame, RunEnded, RunStarted,
                     SnapshotTaken, StepDone)
from .worker import RunFailed, TrainingProcess, exit_explained

if TYPE_CHECKING:
    from ..data import DataSource
    from .loop import TrainResult

log = logging.getLogger(__name__)

IDLE, QUEUED, STARTING, RUNNING, STOPPING, FINISHED, STOPPED, FAILED, CANCELLED = (
    "idle", "queued", "starting", "running", "stopping", "finished", "stopped", "failed", "cancelled")
GOING = (STARTING, RUNNING, STOPPING)

ROOM_SECONDS = 2.0        # a run made room for requests trains on all its threads again this long after the last
WATCHDOG_SECONDS = 0.25   # how often a run in a child process has its memory looked at

_LIVE_TRAINERS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_runs_at_exit(timeout: float = 60.0) -> None:
    """Stop runs still going when the interpreter exits (Ctrl-C on the app): the run saves its
    checkpoint, and no daemon thread is left inside torch while Python tears down (which can
    abort the process). Queued runs are dropped."""
    trainers = list(_LIVE_TRAINERS)
    for trainer in trainers:
        trainer.close()
    for trainer in trainers:
        trainer.wait(timeout)


@dataclass
class Run:
    """One run: queued, going or ended."""

    run_id: str
    owner: str | None
    config: TrainConfig
    source: DataSource | None
    on_finish: Callable | None
    history: EventHistory = field(default_factory=EventHistory)
    control: RunControl = field(default_factory=RunControl)
    state: str = QUEUED
    message: str = "waiting for its turn"
    result: TrainResult | None = None
    started_at: float | None = None
    child: TrainingProcess | None = None   # the process it trains in, once it has one (the app's runs)
    held: bool = False                     # the run has paused (its ControlApplied came): not just asked to
    series: Series | None = None     # the lesson it belongs to, if any
    series_index: int = 0            # its place in that series, from 1
    runs_dir: str | None = None      # where a series' run, named as it starts, makes its folder


@dataclass(frozen=True)
class Series:
    """Runs of one owner queued together (a lesson); each run knows its place in it."""

    name: str
    total: int


@dataclass(frozen=True)
class RunInMemory:
    """What the trainer holds of one of an owner's runs: the one going, queued or ended last
    (:mod:`segdemo.engine.experiments` lists them beside the run folders on disk). ``run_id`` is
    None for a series' run that has not started: runs are named when they start, so that their
    folders sort by start time."""

    run_id: str | None
    state: str
    message: str
    config: TrainConfig
    history: EventHistory
    series: Series | None
    series_index: int


_ID_LOCK = threading.Lock()
_last_run_id = ""


def new_run_id() -> str:
    """A run's id and folder name: its start time, then random (``segdemo.filenames.RUN_ID``).
    Ids sort in the order they were made, even two made within one second (a lesson's short runs):
    the random part then counts on from the last one's."""
    global _last_run_id
    with _ID_LOCK:
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        if run_id <= _last_run_id and int(_last_run_id[-6:], 16) < 0xFFF000:
            run_id = f"{_last_run_id[:-6]}{int(_last_run_id[-6:], 16) + 1 + uuid.uuid4().int % 4096:06x}"
        _last_run_id = run_id
        return run_id


def _series_place(run: Run) -> dict | None:
    """Where ``run`` stands in its series (``{"name", "index", "total"}``), or None."""
    if run.series is None:
        return None
    return {"name": run.series.name, "index": run.series_index, "total": run.series.total}


class BackgroundTrainer:
    """One training run at a time, in a thread; the next ones queued.

    Args:
        runs_dir: where each run's folder (checkpoints, log) is created, unless ``start`` names
            another (a workspace's own).
        threads: torch CPU threads for the training thread (None: torch's default, one per core,
            which bounds it). Measured on 2 cores (``bench/bench_threads.py``): with the run held
            to one thread, predictions made meanwhile were slower at the 95th percentile (129 vs
            33 ms at 192×192) and so was the run; the OS shares the cores better than a fixed split.
        separate_process: train in a child process (:mod:`segdemo.engine.worker`) rather than a
            thread of this one: what the app does, so that its requests cannot slow a run through
            Python's interpreter lock, and a run that outgrows its memory budget
            (:func:`segdemo.limits.memory_budget`) is stopped (killed if it goes on growing) without
            taking the app down. Scripts and tests keep the thread.
        cores: the CPU cores the training thread keeps to (None: all of the process's). On a
            shared app the run gets cores of its own, so that requests cannot slow it; its torch
            threads are then one per core of its own unless ``threads`` says otherwise.
        on_finish: called with ``(run_id, TrainResult)`` when a run ends, unless ``start`` gives
            one of its own (e.g. to add the checkpoint to its owner's model list).
        queue_length: how many runs may wait (0: a Start while one runs is refused).
        time_cap: the longest a run may train, in seconds (None: no cap).
    """

    def __init__(self, runs_dir: str | Path, *, threads: int | None = None, cores: set[int] | None = None,
                 separate_process: bool = False, on_finish=None, queue_length: int = 0,
                 time_cap: float | None = None):
        self.runs_dir = Path(runs_dir)
        self.separate_process = separate_process
        self.threads = threads
        self.cores = cores
        self.on_finish = on_finish
        self.queue_length = queue_length
        self.time_cap = time_cap
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._current: Run | None = None          # going, or the last to end
        self._waiting: deque[Run] = deque()
        self._last_of: dict[str | None, Run] = {}  # each owner's latest run that started
        self._closing = False
        self._spare = None                          # a child process ready for the next run (warm())
        self._room_until = 0.0                      # make_room(): the run trains on one thread until then
        _LIVE_TRAINERS.add(self)

    # --- control -----------------------------------------------------------------------------------
    def start(self, config: TrainConfig, source: DataSource | None = None, *, owner: str | None = None,
              runs_dir: str | Path | None = None, on_finish: Callable | None = None) -> str:
        """Start a run of ``config`` for ``owner``, or queue it behind the one going; returns its id.

        ``source`` is its data if the caller opened it already; ``runs_dir`` where its folder goes.
        Raises :class:`~segdemo.errors.TrainerBusy` when it may not wait: no queue (single-user),
        the owner has a run queued or going already, or the queue is full."""
        run_id = new_run_id()
        config = self._capped(config).replace(out=str(Path(runs_dir or self.runs_dir) / run_id))
        run = Run(run_id, owner, config, source, on_finish or self.on_finish,
                  control=RunControl(pauses_count=self.pauses_count))
        with self._lock:
            going = self._busy()
            if going and self.queue_length == 0:
                raise TrainerBusy(f"a training run ({self._current.run_id}) is already going; stop it or wait "
                                  "for it to finish before starting another")
            if self.queue_length and self._has_run(owner):
                raise TrainerBusy("you have a run queued or training already: stop or cancel it before "
                                  "starting another (one run per workspace)")
            if going and len(self._waiting) >= self.queue_length:
                raise TrainerBusy(f"the training queue is full ({len(self._waiting)} runs waiting); "
                                  "try again when one has started")
            if going:
                self._waiting.append(run)
            else:
                self._begin(run)
        return run_id

    def start_series(self, configs: list[TrainConfig], *, name: str, owner: str | None = None,
                     runs_dir: str | Path | None = None, on_finish: Callable | None = None) -> Series:
        """Queue ``configs`` as one series called ``name`` (a lesson) for ``owner``: they train one
        after another, the first at once if no run is going; returns the series.

        Allowed in single-user mode when no run is going. In a classroom the series is the owner's
        one entry, and needs a place in the queue for each of its runs that waits. Each run is
        named (its id, its folder under ``runs_dir``) as it starts. A run that fails does not end
        the series; stopping or cancelling one of its runs (:meth:`stop`) cancels the rest.
        Raises :class:`~segdemo.errors.TrainerBusy` when it may not wait."""
        if not configs:
            raise UserError("a series needs at least one run")
        series = Series(name, len(configs))
        folder = str(runs_dir or self.runs_dir)
        runs = [Run(None, owner, self._capped(config), None, on_finish or self.on_finish, series=series,
                    series_index=index, runs_dir=folder, control=RunControl(pauses_count=self.pauses_count))
                for index, config in enumerate(configs, start=1)]
        with self._lock:
            busy = self._busy()
            if busy and self.queue_length == 0:
                raise TrainerBusy(f"a training run ({self._current.run_id}) is already going; stop it or wait "
                                  f"for it to finish before starting {name}")
            if self.queue_length and self._has_run(owner):
                raise TrainerBusy("you have a run queued or training already: stop or cancel it before "
                                  "starting another (one run or lesson per workspace)")
            waiting = runs if busy else runs[1:]
            room = self.queue_length - len(self._waiting)
            if self.queue_length and len(waiting) > room:
                raise TrainerBusy(f"{name} queues {len(waiting)} runs and the training queue has room for "
                                  f"{max(room, 0)} now; try again when some have started")
            self._waiting.extend(waiting)
            if not busy:
                self._begin(runs[0])
        return series

    def _capped(self, config: TrainConfig) -> TrainConfig:
        """``config`` held to this trainer's ``time_cap``."""
        if self.time_cap and (not config.max_seconds or config.max_seconds > self.time_cap):
            return config.replace(max_seconds=self.time_cap)
        return config

    def _busy(self) -> bool:
        """Whether a run is going, or runs wait (a series between two of its runs, or the queue
        while the run before it ends): a new run then waits its turn. Call with the lock held."""
        return (self._current is not None and self._current.state in GOING) or bool(self._waiting)

    def _cancel_rest(self, run: Run) -> None:
        """Take the waiting runs of ``run``'s series out of the queue. Call with the lock held."""
        if run.series is None:
            return
        for other in [other for other in self._waiting if other.series is run.series]:
            self._waiting.remove(other)
            other.state, other.message = CANCELLED, f"cancelled: {run.series.name} was stopped"

    def _has_run(self, owner: str | None) -> bool:
        """Whether ``owner`` has a run waiting or going. Call with the lock held."""
        current = self._current
        return (current is not None and current.state in GOING and current.owner == owner) or \
            any(run.owner == owner for run in self._waiting)

    def _begin(self, run: Run) -> None:
        """Make ``run`` the one going, in a thread of its own. Call with the lock held."""
        if run.run_id is None:  # a series' run: named as it starts, so run folders sort by start time
            run.run_id = new_run_id()
            run.config = run.config.replace(out=str(Path(run.runs_dir) / run.run_id))
        run.state, run.message, run.started_at = STARTING, "preparing data and model", time.time()
        self._current = run
        self._last_of[run.owner] = run
        self._thread = threading.Thread(target=self._run, args=(run,), name=f"segdemo-train-{run.run_id}",
                                        daemon=True)
        self._thread.start()

    def stop(self, owner: str | None = None) -> str | None:
        """Stop ``owner``'s run (it finishes its step, validates and saves) or take it out of the
        queue. Returns ``"stopping"``, ``"cancelled"``, or None when ``owner`` has no run to stop.
        Pressing it twice is harmless. In single-user mode (``owner`` None) it stops the run going.
        A run of a series (a lesson) takes the rest of its series with it."""
        with self._lock:
            current = self._current
            if current is not None and current.state in GOING and current.owner == owner:
                current.control.stop()
                self._cancel_rest(current)
                if current.state != STOPPING:
                    current.state, current.message = STOPPING, "stopping after this step"
                return "stopping"
            for run in self._waiting:
                if run.owner == owner:
                    self._waiting.remove(run)
                    run.state, run.message = CANCELLED, "cancelled before it started"
                    self._cancel_rest(run)
                    return "cancelled"
            return None

    @property
    def pauses_count(self) -> bool:
        """Whether time paused counts against a run's time limit: on a shared trainer (a queue and
        a time cap) others wait while a run is paused, so a pause may not hold the trainer past
        the cap; alone (single-user), a pause is not training time."""
        return bool(self.queue_length and self.time_cap)

    def pause(self, owner: str | None = None) -> None:
        """Hold ``owner``'s run before its next step; it holds no core until resumed, stepped or
        stopped. Raises a :class:`~segdemo.errors.UserError` saying why when they have no run going."""
        with self._lock:
            run = self._own_going_run(owner, "pause")
            run.control.pause()
            if not run.held and run.state == RUNNING:
                run.message = "pausing after this step"
            if run.child is not None:
                run.child.pause()

    def resume(self, owner: str | None = None) -> None:
        """Let ``owner``'s paused run go on (harmless when it is not paused)."""
        with self._lock:
            run = self._own_going_run(owner, "resume")
            run.control.resume()
            if run.state == RUNNING:
                run.message = "training"
            if run.child is not None:
                run.child.resume()

    def step(self, owner: str | None = None) -> None:
        """Let ``owner``'s paused run take exactly one step, then hold again."""
        with self._lock:
            run = self._own_going_run(owner, "step")
            run.control.step()
            if run.child is not None:
                run.child.step()

    def set_lr(self, owner: str | None, value) -> float:
        """Train ``owner``'s run at learning rate ``value`` from its next step on, the schedule set
        aside for the rest of the run; returns the rate. Refuses non-finite, non-positive and
        absurd (> 1) rates with a :class:`~segdemo.errors.SettingsError`."""
        with self._lock:
            run = self._own_going_run(owner, "change the learning rate of")
            rate = run.control.set_learning_rate(value)
            if run.child is not None:
                run.child.set_learning_rate(rate)
            return rate

    def make_room(self) -> None:
        """Requests are predicting while a run trains: the run trains on one torch thread until
        :data:`ROOM_SECONDS` pass without another call, then on as many as it began with.

        For a trainer whose run shares every core with the app (``python app.py``; with ``cores``
        the run keeps to cores of its own and this does nothing). A team of two threads that
        loses a core to a request waits for it at every layer, and the requests queue behind
        it; alone, the run keeps both cores and its speed. Measured with ``bench/bench_load.py``
        (BENCHMARKS.md, ``load``)."""
        if self.cores is not None:
            return
        with self._lock:
            run = self._current
            if run is None or run.state not in GOING:
                return
            self._room_until = time.monotonic() + ROOM_SECONDS
            if run.control.threads == 1:
                return  # room made already; the thread below gives it back
            run.control.share_cores(1)
            if run.child is not None:
                run.child.share_cores(1)
        threading.Thread(target=self._give_cores_back, args=(run,), name=f"segdemo-room-{run.run_id}",
                         daemon=True).start()

    def _give_cores_back(self, run: Run) -> None:
        """Wait until no request has asked for room for :data:`ROOM_SECONDS`, then let ``run``
        train on all its threads again."""
        while True:
            with self._lock:
                left = self._room_until - time.monotonic()
                if left <= 0 or run.state not in GOING:
                    run.control.share_cores(None)
                    if run.child is not None:
                        run.child.share_cores(None)
                    return
            time.sleep(left)

    def _own_going_run(self, owner: str | None, action: str) -> Run:
        """``owner``'s run going now, or a UserError saying why there is none to ``action``. Call
        with the lock held."""
        current = self._current
        going = current is not None and current.state in GOING
        if going and current.owner == owner:
            if current.state == STOPPING:
                raise UserError(f"the run is stopping: there is nothing to {action} any more")
            return current
        if any(run.owner == owner for run in self._waiting):
            raise UserError(f"your run is still waiting in the queue: you can {action} it once it trains")
        if going:
            raise UserError(f"the run training now is another visitor's: only they can {action} it")
        raise UserError(f"no run is going to {action}" if owner is None else f"you have no run going to {action}")

    def close(self) -> None:
        """Stop the run going, drop the queue and the spare child (the app is exiting)."""
        with self._lock:
            self._closing = True
            self._waiting.clear()
            spare, self._spare = self._spare, None
            if self._current is not None and self._current.state in GOING:
                self._current.control.stop()
        if spare is not None:
            spare.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run going now ends; True if it has."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        with self._lock:
            return self._current is not None and self._current.state in GOING

    # --- the thread ---------------------------------------------------------------------------------
    def _run(self, run: Run) -> None:
        def listen(event) -> None:
            run.history(event)
            if isinstance(event, RunStarted):
                with self._lock:
                    if run.state == STARTING:
                        run.state, run.message = RUNNING, "training"
            elif isinstance(event, ControlApplied) and event.action != "learning rate":
                with self._lock:
                    run.held = event.action != "resume"
                    if run.state == RUNNING:
                        run.message = "training" if event.action == "resume" else f"paused at step {event.step}"

        result = None
        try:
            result = self._train_in_child(run, listen) if self.separate_process else self._train_here(run, listen)
            state = {"finished": FINISHED, "time limit": FINISHED, "stopped": STOPPED}.get(result.reason, FAILED)
            message = result.message
        except Exception as error:  # bad data or settings found while setting up, or a bug: show it
            if not isinstance(error, (UserError, RunFailed)):
                log.error("training run %s failed:\n%s", run.run_id, traceback.format_exc())
            state, message = FAILED, str(error) if isinstance(error, RunFailed) else failure_message(error)
            run.history(RunEnded(reason="failed", message=message))
        with self._lock:
            run.state, run.message, run.result, run.source = state, message, result, None
        if run.on_finish is not None and result is not None:
            try:
                run.on_finish(run.run_id, result)
            except Exception:
                log.exception("on_finish failed for run %s", run.run_id)
        self.warm()  # the next run's child, started while no run holds memory
        with self._lock:
            if self._waiting and not self._closing:
                self._begin(self._waiting.popleft())

    def _train_here(self, run: Run, listen) -> TrainResult:
        """The run in this thread (scripts and tests)."""
        from ..runtime import train_on
        from .loop import Trainer

        train_on(self.cores, self.threads)
        return Trainer(run.config, [listen], source=run.source, control=run.control).run()

    def warm(self) -> None:
        """Start a spare child process for the next run: the app calls it once it serves its page,
        and each run as it ends, so that a spare (about 0.5 GB: torch's libraries) is held only
        while no run trains. Only for ``separate_process``."""
        if not self.separate_process:
            return
        with self._lock:
            if self._spare is None and not self._closing:
                self._spare = TrainingProcess(cores=self.cores, threads=self.threads)

    def _take_child(self):
        """The spare child if it is alive and set up as this trainer is now, else a new one."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and not (spare.alive() and spare.cores == self.cores and spare.threads == self.threads):
            spare.close()
            spare = None
        return spare or TrainingProcess(cores=self.cores, threads=self.threads)

    def _train_in_child(self, run: Run, listen) -> TrainResult:
        """The run in a child process, its events relayed to ``listen``; a watchdog forwards
        Stop, and stops the run when its memory passes the budget (kills it past half as much
        again, or when it takes too long to save)."""
        child = self._take_child()
        child.begin(run.config, pauses_count=run.control.pauses_count)
        with self._lock:  # from now on the controls go to the child as they come; those before, now
            run.child = child
            if run.control.paused:
                child.pause()
            if run.control.learning_rate is not None:
                child.set_learning_rate(run.control.learning_rate)
            if run.control.threads is not None:
                child.share_cores(run.control.threads)
        budget, peak, ended = memory_budget(), [0], threading.Event()

        def watchdog() -> None:
            while not ended.wait(WATCHDOG_SECONDS):
                resident = child.resident_bytes()
                peak[0] = max(peak[0], resident)
                if run.control.stopped or resident > budget:
                    child.stop()
                if resident > 1.5 * budget or child.overdue():
                    child.kill()

        threading.Thread(target=watchdog, name=f"segdemo-watchdog-{run.run_id}", daemon=True).start()
        result = failure = None
        try:
            for kind, payload in child.messages():
                if kind == "event":
                    listen(payload)
                elif kind == "result":
                    result = payload
                elif kind == "failed":
                    failure = payload
        finally:
            code = child.wait()
            ended.set()
        over = (f"its memory grew past the budget of {size_text(budget)} (to {size_text(peak[0])})"
                if peak[0] > budget else None)
        if result is not None:
            if over:
                result.message = f"stopped at step {result.steps}: {over}; what it had learned is saved"
            return result
        if over:
            raise RunFailed(f"stopped: {over}, and it was ended before it could save")
        raise RunFailed(failure or exit_explained(code))

    # --- what the page polls -----------------------------------------------------------------------
    def _shown(self, viewer: str | None) -> Run | None:
        """The run ``viewer`` watches: the one going now, else their own latest."""
        with self._lock:
            current = self._current
            if current is not None and current.state in GOING:
                return current
            return self._last_of.get(viewer)

    def status(self, viewer: str | None = None) -> dict:
        """What ``viewer`` sees: the run going now (or else their own latest) as a small, JSON-able
        summary (state, progress, ETA, latest numbers; the checkpoint only if it is theirs), and
        their own place in the queue. ``paused`` says whether the run is held by a pause (once it
        has paused: a step under way when Pause came finishes first; ``message`` says "pausing"
        meanwhile), as soon as it is asked to resume, no longer; ``lr`` is
        the learning rate in force (the next step's once a rate was chosen), ``lr_set_by`` whether
        the ``"schedule"`` or the ``"visitor"`` set it."""
        run = self._shown(viewer)
        queue = self.queue(viewer)
        if run is None:
            return {"state": IDLE, "message": "no run yet", "run_id": None, "phase": None, "step": 0,
                    "total_steps": None, "progress": None, "eta_seconds": None, "epoch": 0, "loss": None,
                    "train_dice": None, "val_mean_dice": None, "images_per_second": None, "elapsed": None,
                    "checkpoint": None, "model": None, "title": None, "yours": False, "time_limit": None,
                    "paused": False, "lr": None, "lr_set_by": None, "series": None, **queue}
        with self._lock:
            state, message, config, result, started = run.state, run.message, run.config, run.result, run.started_at
            held = run.held
        history = run.history
        step: StepDone | None = history.latest(StepDone)
        epoch: EpochDone | None = history.latest(EpochDone)
        start: RunStarted | None = history.latest(RunStarted)
        total_steps = start.total_steps if start else None
        done = step.step if step else 0
        progress = eta = None
        if total_steps:
            progress = done / total_steps
            # The time that counts against the limit: training time, or where pauses count, the wall time.
            counted = (time.time() - started) if run.control.pauses_count and started and state in GOING else \
                (step.elapsed if step else 0.0)
            if config.max_seconds and step:
                progress = max(progress, min(1.0, counted / config.max_seconds))
            if step and progress and progress > 0 and state in GOING:
                eta = max(0.0, counted * (1 - progress) / progress)
        yours = run.owner == viewer
        checkpoint = (result.best_path or result.last_path) if result is not None and yours else None
        chosen_lr = run.control.learning_rate
        lr = chosen_lr if chosen_lr is not None and state in GOING else (step.lr if step else None)
        return {
            "state": state, "message": message, "run_id": run.run_id,
            "phase": "validating" if history.validating and state in GOING else
            ("training" if state in GOING else None),
            "step": done, "total_steps": total_steps, "progress": progress, "eta_seconds": eta,
            "epoch": epoch.epoch if epoch else 0,
            "loss": step.loss if step else None, "train_dice": step.dice if step else None,
            "val_mean_dice": epoch.val["mean_dice"] if epoch else None,
            "images_per_second": step.images_per_second if step else None,
            "elapsed": (time.time() - started) if started and state in GOING else (result.elapsed if result else None),
            "checkpoint": checkpoint, "model": config.model, "title": config.title, "yours": yours,
            "time_limit": config.max_seconds,
            "paused": state in GOING and state != STOPPING and run.control.paused and held,
            "lr": lr, "lr_set_by": None if lr is None else ("visitor" if chosen_lr is not None else "schedule"),
            "series": _series_place(run), **queue,
        }

    def runs_of(self, owner: str | None) -> list[RunInMemory]:
        """``owner``'s runs that this trainer holds: their latest run that started (going or
        ended), then their waiting ones in queue order."""
        with self._lock:
            runs = [self._last_of[owner]] if owner in self._last_of else []
            runs += [run for run in self._waiting if run.owner == owner]
            return [RunInMemory(run.run_id, run.state, run.message, run.config, run.history, run.series,
                                run.series_index) for run in runs]

    def queue(self, viewer: str | None = None) -> dict:
        """How many runs wait, and ``viewer``'s own place among them with an estimated wait in
        seconds (the run going now's time left, plus the time limits of the runs before theirs)."""
        with self._lock:
            current = self._current
            waiting = list(self._waiting)
        ahead = None
        wait = 0.0
        if current is not None and current.state in GOING:
            limit = current.config.max_seconds
            elapsed = time.time() - (current.started_at or time.time())
            wait = max(0.0, limit - elapsed) if limit else None
        for index, run in enumerate(waiting):
            if run.owner == viewer:
                ahead = index
                break
            wait = wait + run.config.max_seconds if wait is not None and run.config.max_seconds else None
        mine = ahead is not None
        return {"queued": len(waiting), "your_position": ahead + 1 if mine else None,
                "your_wait_seconds": round(wait) if mine and wait is not None else None}

    def _watched_history(self, viewer: str | None) -> EventHistory:
        run = self._shown(viewer)
        return run.history if run is not None else EventHistory()

    def steps(self, viewer: str | None = None) -> list[StepDone]:
        """The watched run's step events so far (thinned when long)."""
        return self._watched_history(viewer).steps()

    def epochs(self, viewer: str | None = None) -> list[EpochDone]:
        """The watched run's epoch events so far."""
        return self._watched_history(viewer).epochs()

    def curves_version(self, viewer: str | None = None) -> tuple[str | None, int]:
        """Changes whenever the watched run records an event, or another run is watched: pollers
        redraw only then."""
        run = self._shown(viewer)
        return (run.run_id, run.history.version) if run is not None else (None, 0)

    def snapshot(self, viewer: str | None = None) -> SnapshotTaken | None:
        """The watched run's newest prediction snapshot, or None."""
        return self._watched_history(viewer).latest(SnapshotTaken)

    def frames(self, viewer: str | None = None) -> tuple[str | None, list[ProbeFrame]]:
        """The watched run's id and its probe frames so far (bounded: thinned when long)."""
        run = self._shown(viewer)
        return (run.run_id, run.history.frames()) if run is not None else (None, [])

    def features(self, viewer: str | None = None) -> FeatureMaps | None:
        """The watched run's newest feature maps, or None."""
        return self._watched_history(viewer).latest(FeatureMaps)

    def started(self, viewer: str | None = None) -> RunStarted | None:
        """The watched run's start event (its data's classes, its model), or None."""
        return self._watched_history(viewer).latest(RunStarted)

    @property
    def result(self) -> TrainResult | None:
        """The result of the run going now or ended last."""
        with self._lock:
            return self._current.result if self._current is not None else None
