"""Experiments: every run of a workspace, listed with its settings, its curves and its last picture.

A run's folder keeps its whole story (:mod:`segdemo.datafolder`): ``log.jsonl`` holds its settings
(the ``start`` line's config), every step and validation, and how it ended; ``prediction.png`` its
latest validation picture (:class:`LastPicture`); ``timeline/`` its probe frames (:mod:`.timeline`),
so that the probes of runs can be shown next to each other at the same training second. So the list
is read from the folders: it survives a restart of the app, and it is bounded by what the workspace
keeps (``segdemo.limits.Limits.runs_kept`` folders, within the workspace's disk quota). The run going now, and the runs of a lesson still
waiting, are taken from the trainer (:meth:`segdemo.engine.background.BackgroundTrainer.runs_of`).

Logs are read defensively: a missing or unreadable file, a half-written last line or a line that
is not JSON are skipped, and at most :data:`MAX_LOG_BYTES` of a log are read (its beginning and its
end, where the settings and the outcome are), so a huge log cannot fill memory.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from ..errors import UserError
from ..filenames import BEST_CHECKPOINT, LAST_CHECKPOINT, RUN_ID
from .events import PICTURE_NAME, EpochDone, ProbeFrame, RunEnded, SnapshotTaken, StepDone
from .timeline import read_timeline

if TYPE_CHECKING:
    from .background import RunInMemory

log = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"
MAX_LOG_BYTES = 4 * 2**20     # of one log: a 60 s live run writes about 60 kB, an hour's CLI run a few MB
CURVE_POINTS = 300            # per curve: loss curves are thinned to about this many points
MAX_LISTED = 50               # run folders listed, newest first (a workspace keeps 5 to 20)

# How a run that ended says so (RunEnded.reason) → its state in the list.
ENDED = {"finished": "finished", "time limit": "finished", "stopped": "stopped", "diverged": "diverged",
         "failed": "failed"}
INTERRUPTED = "interrupted"   # a log with no end: the app stopped while it trained


@dataclass(frozen=True)
class RunRecord:
    """One run as the experiments list shows it.

    ``val_curve`` holds ``(seconds, step, mean Dice)`` per validation, ``loss_curve``
    ``(seconds, step, training loss)`` per (thinned) step; seconds are training time.
    ``run_id`` is None for a lesson's run that waits for its turn.
    """

    run_id: str | None
    title: str
    model: str
    model_options: dict
    loss: str
    lr: float
    batch_size: int
    max_seconds: float | None
    state: str
    message: str
    steps: int
    elapsed: float | None
    best_dice: float | None
    last_dice: float | None
    val_curve: tuple = ()
    loss_curve: tuple = ()
    lesson: str | None = None     # "How wide, run 2 of 3" for a lesson's run the trainer still holds

    @property
    def width(self) -> int | None:
        """The U-Net's first-stage width (None for models without one)."""
        return self.model_options.get("base_channels")

    def settings_text(self) -> str:
        """The settings that tell runs apart, in one line: model and options, loss, lr, batch, seconds."""
        options = " ".join(f"{key}={value}" for key, value in sorted(self.model_options.items()))
        parts = [f"{self.model} {options}".strip(), f"loss {self.loss}", f"lr {self.lr:g}",
                 f"batch {self.batch_size}"]
        if self.max_seconds:
            parts.append(f"{self.max_seconds:g} s")
        return " · ".join(parts)

    def as_dict(self) -> dict:
        """A JSON-able row: settings and outcome (the curves left out)."""
        return {"run_id": self.run_id, "title": self.title, "model": self.model,
                "model_options": dict(self.model_options), "width": self.width, "loss": self.loss, "lr": self.lr,
                "batch_size": self.batch_size, "max_seconds": self.max_seconds, "state": self.state,
                "message": self.message, "steps": self.steps, "elapsed": self.elapsed, "best_dice": self.best_dice,
                "last_dice": self.last_dice, "lesson": self.lesson, "settings": self.settings_text()}


def run_picture(folder: str | os.PathLike) -> np.ndarray | None:
    """A run folder's last validation picture ``(H, W, 3)`` uint8, or None when it has none."""
    from ..image_files import read_image

    path = Path(folder) / PICTURE_NAME
    try:
        return read_image(str(path)) if path.is_file() else None
    except Exception:  # noqa: BLE001  (a damaged picture only leaves a gap beside the others)
        log.warning("could not read %s", path, exc_info=True)
        return None


# --- reading logs ----------------------------------------------------------------------------------
def read_log_lines(path: str | os.PathLike, max_bytes: int = MAX_LOG_BYTES) -> list[dict]:
    """The records of a ``log.jsonl`` (one dict per line), reading at most ``max_bytes``: all of a
    small log, the first and the last half of a larger one (its middle steps are left out). A
    missing file gives no records; lines that are not whole JSON objects (the one a run is writing)
    are skipped."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size <= max_bytes:
                chunks = [file.read()]
            else:
                head = file.read(max_bytes // 2)
                head = head[:head.rfind(b"\n") + 1]         # whole lines only
                file.seek(size - max_bytes // 2)
                tail = file.read()
                tail = tail[tail.find(b"\n") + 1:]         # from the first whole line
                chunks = [head, tail]
    except OSError:
        return []
    records = []
    for chunk in chunks:
        for line in chunk.splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a half-written or damaged line (UnicodeDecodeError is a ValueError)
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def record_from_log(run_id: str, records: list[dict]) -> RunRecord | None:
    """The run a log's records describe, or None if they hold no ``start`` (nothing to list)."""
    start = next((r for r in records if r.get("type") == "start" and isinstance(r.get("config"), dict)), None)
    if start is None:
        return None
    val_curve, loss_curve, last_step, last_seconds, end = [], [], 0, None, None
    for record in records:
        kind = record.get("type")
        try:
            if kind == "step":
                loss_curve.append((float(record["elapsed"]), int(record["step"]), float(record["loss"])))
                last_step, last_seconds = int(record["step"]), float(record["elapsed"])
            elif kind == "epoch":
                dice = (record.get("val") or {}).get("mean_dice")
                if dice is not None:
                    val_curve.append((float(record["elapsed"]), int(record["step"]), float(dice)))
            elif kind == "end":
                end = record
        except (KeyError, TypeError, ValueError):  # a line of an older or damaged log
            continue
    if end is not None:
        state, message = ENDED.get(end.get("reason"), "failed"), str(end.get("message") or "")
        steps, elapsed = int(end.get("steps") or last_step), end.get("elapsed", last_seconds)
    else:
        state, message, steps, elapsed = INTERRUPTED, "the app stopped while it trained", last_step, last_seconds
    return _record(run_id, start["config"], state, message, steps, elapsed, val_curve, loss_curve)


def _record(run_id, config: dict, state: str, message: str, steps: int, elapsed, val_curve, loss_curve,
            lesson: str | None = None) -> RunRecord:
    """A :class:`RunRecord` from a config dict and the run's curves (one path for logs and live runs)."""
    dices = [dice for _, _, dice in val_curve]
    max_seconds = config.get("max_seconds")
    return RunRecord(
        run_id=run_id, title=str(config.get("title") or config.get("model") or "run"),
        model=str(config.get("model")), model_options=dict(config.get("model_options") or {}),
        loss=str(config.get("loss")), lr=float(config.get("lr") or 0), batch_size=int(config.get("batch_size") or 0),
        max_seconds=float(max_seconds) if max_seconds else None, state=state, message=message, steps=steps,
        elapsed=float(elapsed) if elapsed is not None else None, best_dice=max(dices) if dices else None,
        last_dice=dices[-1] if dices else None, val_curve=tuple(val_curve), loss_curve=_thinned(loss_curve),
        lesson=lesson)


def _thinned(points: list, limit: int = CURVE_POINTS) -> tuple:
    """Every k-th point, at most about ``limit``, always the last."""
    stride = max(1, -(-len(points) // limit))
    kept = points[::stride]
    if points and kept[-1] is not points[-1]:
        kept.append(points[-1])
    return tuple(kept)


class RunLogCache:
    """Records read from run folders, kept while their log is unchanged (size and time), so that a
    page listing the runs every few seconds reads only the log of the run going now."""

    def __init__(self, capacity: int = 256):
        self.capacity = capacity
        self._lock = threading.Lock()
        self._records: dict[Path, tuple[tuple, RunRecord | None]] = {}

    def read(self, folder: Path) -> RunRecord | None:
        path = folder / LOG_NAME
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._records.get(folder)
        if cached is not None and cached[0] == key:
            return cached[1]
        record = record_from_log(folder.name, read_log_lines(path))
        with self._lock:
            if len(self._records) >= self.capacity:
                self._records.pop(next(iter(self._records)))
            self._records[folder] = (key, record)
        return record


_CACHE = RunLogCache()


def run_checkpoint(folder: str | os.PathLike) -> Path | None:
    """A run folder's model: its best checkpoint, else its last; None before its first validation."""
    for name in (BEST_CHECKPOINT, LAST_CHECKPOINT):
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def run_folders(runs_dir: str | os.PathLike, limit: int = MAX_LISTED) -> list[Path]:
    """The newest ``limit`` run folders under ``runs_dir``, oldest first (run ids sort by start time)."""
    runs_dir = Path(runs_dir)
    try:
        names = sorted(entry.name for entry in os.scandir(runs_dir) if entry.is_dir() and RUN_ID.match(entry.name))
    except OSError:
        return []
    return [runs_dir / name for name in names[-limit:]]


def live_record(run: RunInMemory) -> RunRecord:
    """A run the trainer holds, from its live history (going, queued, or ended but not on disk)."""
    epochs: list[EpochDone] = run.history.epochs()
    steps: list[StepDone] = run.history.steps()
    end: RunEnded | None = run.history.latest(RunEnded)
    val_curve = [(e.elapsed, e.step, e.val["mean_dice"]) for e in epochs if e.val.get("mean_dice") is not None]
    loss_curve = [(s.elapsed, s.step, s.loss) for s in steps]
    elapsed = end.elapsed if end is not None and end.elapsed else (steps[-1].elapsed if steps else None)
    lesson = f"{run.series.name}, run {run.series_index} of {run.series.total}" if run.series else None
    return _record(run.run_id, run.config.to_dict(), run.state, run.message, steps[-1].step if steps else 0, elapsed,
                   val_curve, loss_curve, lesson)


def list_runs(runs_dir: str | os.PathLike, in_memory: Iterable[RunInMemory] = (), *,
              cache: RunLogCache = _CACHE) -> list[RunRecord]:
    """A workspace's runs, oldest first: each run folder under ``runs_dir`` read from its log, with
    the runs the trainer holds (``in_memory``, from ``BackgroundTrainer.runs_of``) taken from their
    live history instead: the one going, the one that ended last, and the ones waiting (at the end)."""
    in_memory = list(in_memory)
    live = {run.run_id: run for run in in_memory if run.run_id is not None}
    waiting = [run for run in in_memory if run.run_id is None]
    records = []
    for folder in run_folders(runs_dir):
        if folder.name in live:
            records.append(live_record(live.pop(folder.name)))
        elif (record := cache.read(folder)) is not None:
            records.append(record)
    # The trainer's runs without a folder here: one starting, one that failed before it wrote
    # any, and the waiting ones.
    return records + [live_record(run) for run in [*live.values(), *waiting]]


def find(records: list[RunRecord], run_ids: Iterable[str]) -> list[RunRecord]:
    """The records of ``run_ids``, in that order; an unknown id is a :class:`~segdemo.errors.UserError`."""
    by_id = {record.run_id: record for record in records if record.run_id}
    missing = [run_id for run_id in run_ids if run_id not in by_id]
    if missing:
        raise UserError(f"no run {', '.join(map(str, missing))} in your workspace; pick runs from the list")
    return [by_id[run_id] for run_id in run_ids]


def curve_labels(records: list[RunRecord]) -> list[str]:
    """A legend label per run: its title, with its id's end added where two titles are the same."""
    titles = [record.title for record in records]
    return [title if titles.count(title) == 1 else f"{title} ({(record.run_id or 'queued')[-6:]})"
            for title, record in zip(titles, records)]


def overlay_rows(records: list[RunRecord]) -> tuple[list[tuple], list[tuple]]:
    """The curves of ``records`` to overlay, as long-format rows ``(seconds, value, label)``: the
    validation mean Dice and the training loss, one label per run (:func:`curve_labels`)."""
    dice_rows, loss_rows = [], []
    for record, label in zip(records, curve_labels(records)):
        dice_rows += [(seconds, dice, label) for seconds, _, dice in record.val_curve]
        loss_rows += [(seconds, loss, label) for seconds, _, loss in record.loss_curve]
    return dice_rows, loss_rows


def last_picture(record: RunRecord, runs_dir: str | os.PathLike, in_memory: Iterable[RunInMemory] = ()
                 ) -> np.ndarray | None:
    """The newest validation picture of ``record``'s run ``(H, W, 3)`` uint8: from the trainer's live
    history while it holds the run, else from its folder; None before its first validation."""
    if record.run_id is None:
        return None
    for run in in_memory:
        if run.run_id == record.run_id:
            snapshot: SnapshotTaken | None = run.history.latest(SnapshotTaken)
            if snapshot is not None:
                return snapshot.image
    return run_picture(Path(runs_dir) / record.run_id)


def run_frames(record: RunRecord, runs_dir: str | os.PathLike, in_memory: Iterable[RunInMemory] = ()
               ) -> list[ProbeFrame]:
    """The probe frames of ``record``'s run, oldest first: from the trainer's live history while it
    holds the run, else from its folder (:func:`~.timeline.read_timeline`); none for a run that did
    not probe (an older one, a command-line run without ``probe_images``) or has not started."""
    if record.run_id is None:
        return []
    for run in in_memory:
        if run.run_id == record.run_id:
            frames = run.history.frames()
            if frames:
                return frames
    return read_timeline(Path(runs_dir) / record.run_id)


def frame_at(frames: list[ProbeFrame], seconds: float | None = None) -> ProbeFrame | None:
    """The frame shown at training second ``seconds``: the latest at or before it (the first one
    before that, the last one for None: the end of the run); None without frames."""
    if not frames:
        return None
    if seconds is None:
        return frames[-1]
    before = [frame for frame in frames if frame.elapsed <= seconds]
    return before[-1] if before else frames[0]


def overlay_figure(records: list[RunRecord]):
    """A matplotlib figure of ``records``' curves over training seconds, one color per run: the
    validation mean Dice (left) and the training loss (right), with one legend of their labels."""
    from matplotlib.figure import Figure   # not pyplot: no global figure list to leak into
    from matplotlib.lines import Line2D

    figure = Figure(figsize=(10, 3.6), layout="constrained")
    dice_axes, loss_axes = figure.subplots(1, 2)
    for index, (record, label) in enumerate(zip(records, curve_labels(records))):
        color = f"C{index}"
        if record.val_curve:
            seconds, _, dice = zip(*record.val_curve)
            dice_axes.plot(seconds, dice, "o-", color=color, label=label)
        if record.loss_curve:
            seconds, _, loss = zip(*record.loss_curve)
            loss_axes.plot(seconds, loss, "-" if len(seconds) > 1 else "o", color=color, linewidth=1, label=label)
    dice_axes.set(title="validation mean Dice", xlabel="training seconds", ylim=(0, 1))
    loss_axes.set(title="training loss (batch)", xlabel="training seconds")
    for axes in (dice_axes, loss_axes):
        axes.grid(alpha=0.3)
    if records:
        handles = [Line2D([], [], marker="o", color=f"C{index}") for index in range(len(records))]
        figure.legend(handles, curve_labels(records), loc="outside lower center", ncols=min(len(records), 4),
                      fontsize="small", frameon=False)
    return figure
