"""A training run in a process of its own, for the app.

Why a process and not a thread: the app answers requests in threads of its own process. A run in
a thread there shares Python's one interpreter lock with every request: measured on 2 cores with a
core kept for the run, 4 watching pages and 2 students segmenting slowed it by a third, because
between two small tensor operations it waited for the lock behind the requests' Python code. In a
process of its own it shares nothing but the machine; and a run that grows past its memory can be
stopped, or killed, without taking the app and every visitor's work with it.

The parent (:class:`TrainingProcess`) starts ``python -m segdemo.engine.worker FD``, writes the
request (the config, the cores to keep to, the torch threads) to its stdin as a pickle, and reads
``(kind, payload)`` pickles from the pipe ``FD``: ``("event", Event)`` for each of the run's
events, then ``("result", TrainResult)`` or ``("failed", message)``. After the request, stdin
carries the visitor's controls as text lines (:func:`apply_command`): ``stop`` (or stdin closing:
the app has gone) ends the run the way Stop does, it validates and saves first; ``pause``,
``resume``, ``step`` and ``lr VALUE`` go to the run's :class:`~.control.RunControl`, and so does the
app's ``threads N`` (train on N torch threads; 0: as many as the run began with).
Only segdemo's own code writes these pipes, so unpickling them trusts nothing from outside.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..errors import UserError, failure_message
from .control import RunControl
from .events import StepDone

if TYPE_CHECKING:
    from .config import TrainConfig

log = logging.getLogger(__name__)

# The run is background work: where it shares cores with the app's requests (``python app.py``),
# the kernel gives them the cores first; alone, a niced process runs as fast as any. With 16 clients
# segmenting during a live run (bench/bench_load.py, 2-core EPYC) the p95 fell from 1189 to 971 ms,
# and the run still took 2.6 steps/s (1.7 before the run made room for requests at all).
NICENESS = 5
STOP_GRACE_SECONDS = 60.0   # a stopped run validates and saves; after this long it is killed


class RunFailed(Exception):
    """A run in a child process failed; the message is for the visitor (the child logged the rest)."""


@dataclass
class Request:
    """What the child is asked to train."""

    config: TrainConfig
    pauses_count: bool = False   # time paused counts against the time limit (a shared trainer)


class TrainingProcess:
    """One run in a child process, seen from the app (see the module docstring).

    The child starts at once, keeps to ``cores``, imports torch and the training loop, and then
    waits for :meth:`begin`: a process started ahead of the next Start (a spare) saves that run
    the child's start, about 1.4 s of a 3 s wait for the first step on 2 cores."""

    def __init__(self, *, cores: set[int] | None = None, threads: int | None = None):
        self.cores, self.threads = cores, threads
        read_end, write_end = os.pipe()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "segdemo.engine.worker", str(write_end),
             ",".join(map(str, sorted(cores))) if cores else "-", str(threads or 0)],
            stdin=subprocess.PIPE, pass_fds=(write_end,), cwd=os.getcwd(),
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_package_root(),
                                                                           os.environ.get("PYTHONPATH")]))})
        os.close(write_end)
        self._messages = os.fdopen(read_end, "rb")
        self._stop_sent: float | None = None
        self._writing = threading.Lock()   # the watchdog and the visitor's requests both write stdin

    def begin(self, config: TrainConfig, *, pauses_count: bool = False) -> None:
        """Hand the child its run."""
        with self._writing:
            pickle.dump(Request(config, pauses_count), self._process.stdin)
            self._process.stdin.flush()

    def alive(self) -> bool:
        return self._process.poll() is None

    def close(self) -> None:
        """End a child that was never given a run (its stdin closes; it exits)."""
        try:
            self._process.stdin.close()
        except OSError:
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
        self._messages.close()

    @property
    def pid(self) -> int:
        return self._process.pid

    def messages(self) -> Iterator[tuple[str, object]]:
        """The child's messages until it ends (its pipe closes)."""
        while True:
            try:
                yield pickle.load(self._messages)
            except EOFError:
                return

    def stop(self) -> None:
        """Ask the run to end as Stop does (harmless twice, or once it has ended)."""
        if self._stop_sent is None:
            self._stop_sent = time.monotonic()
            self._send("stop")

    def pause(self) -> None:
        self._send("pause")

    def resume(self) -> None:
        self._send("resume")

    def step(self) -> None:
        """One step of a paused run."""
        self._send("step")

    def set_learning_rate(self, rate: float) -> None:
        """The rate to train at from the next step on (checked by the caller: see :mod:`.control`)."""
        self._send(f"lr {float(rate)!r}")

    def share_cores(self, threads: int | None) -> None:
        """Train on ``threads`` torch threads from the next step on (None: as many as it began with)."""
        self._send(f"threads {threads or 0}")

    def _send(self, command: str) -> None:
        """One control line to the child (nothing happens once it has ended)."""
        with self._writing:
            try:
                self._process.stdin.write(command.encode("ascii") + b"\n")
                self._process.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass

    def overdue(self) -> bool:
        """Whether a stop was asked for longer ago than the run may take to save."""
        return self._stop_sent is not None and time.monotonic() - self._stop_sent > STOP_GRACE_SECONDS

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()

    def resident_bytes(self) -> int:
        """The child's resident memory now (0 once it has ended)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return 0

    def wait(self) -> int:
        """The child's exit code, once it has ended."""
        code = self._process.wait()
        for stream in (self._messages, self._process.stdin):
            try:
                stream.close()
            except OSError:
                pass
        return code


def _package_root() -> str:
    """The folder holding the ``segdemo`` package, so the child imports this very copy."""
    return str(Path(__file__).resolve().parents[2])


def exit_explained(code: int) -> str:
    """Why a child that sent no result ended, for a person."""
    if code < 0 and -code == signal.SIGKILL:
        return "the training process was killed (most likely the machine ran out of memory)"
    return f"the training process ended unexpectedly (exit code {code})"


# --- the child ---------------------------------------------------------------------------------------
class Outbox:
    """The child's messages to the app, written by a thread of their own, so that training never
    waits for the app to read them. Measured: with the app's serving core overloaded (a class's
    requests), its reading thread fell behind, the pipe filled and the run, blocked in a write on
    a core of its own, slowed to a sixth of its speed. Step events are the many small ones: while
    more than ``BACKLOG`` messages wait, new ones are dropped (the app thins its step curve
    anyway, and the next step says where the run is); every other message is kept."""

    BACKLOG = 64

    def __init__(self, out):
        self._out = out
        self._waiting: queue.Queue = queue.Queue()
        self._writer = threading.Thread(target=self._write, name="segdemo-outbox", daemon=True)
        self._writer.start()

    def put(self, kind: str, payload) -> None:
        if kind == "event" and isinstance(payload, StepDone) and self._waiting.qsize() > self.BACKLOG:
            return
        self._waiting.put((kind, payload))

    def _write(self) -> None:
        while (message := self._waiting.get()) is not None:
            try:
                pickle.dump(message, self._out)
                self._out.flush()
            except (BrokenPipeError, OSError):  # the app has gone: nobody reads; training stops via stdin
                return

    def close(self) -> None:
        """Write what waits, then close the pipe."""
        self._waiting.put(None)
        self._writer.join()
        try:
            self._out.close()
        except OSError:
            pass


COMMANDS = {"stop": RunControl.stop, "pause": RunControl.pause, "resume": RunControl.resume,
            "step": RunControl.step}
LONGEST_COMMAND = 64   # bytes: a longer line is not one of ours, and is dropped


def apply_command(control: RunControl, line: str) -> None:
    """Act on one control line: ``stop``, ``pause``, ``resume``, ``step``, ``lr VALUE`` or ``threads N``.
    A line that is not one of these, or a request the run refuses (one step while not paused,
    a learning rate out of range), is logged and changes nothing."""
    words = line.split()
    try:
        if len(words) == 1 and words[0] in COMMANDS:
            COMMANDS[words[0]](control)
        elif len(words) == 2 and words[0] == "lr":
            control.set_learning_rate(words[1])
        elif len(words) == 2 and words[0] == "threads" and words[1].isdigit():
            control.share_cores(int(words[1]) or None)
        elif words:
            log.warning("ignored an unknown control line %r", line[:LONGEST_COMMAND])
    except UserError as refused:
        log.warning("ignored the control line %r: %s", line[:LONGEST_COMMAND], refused)


def _watch_stdin(control: RunControl) -> None:
    """Feed stdin's control lines to ``control``; stop the run when stdin closes (the app has
    gone). Reads the file descriptor itself: a daemon thread blocked inside a buffered
    ``sys.stdin`` aborts the interpreter's shutdown."""
    pending = b""
    while chunk := os.read(0, 256):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            apply_command(control, line.decode("ascii", errors="replace"))
        if len(pending) > LONGEST_COMMAND:
            pending = b""
    control.stop()


def main(argv: list[str]) -> int:
    """``python -m segdemo.engine.worker FD CORES THREADS``: CORES as ``0,1`` or ``-`` (all),
    THREADS 0 for torch's default."""
    from ..runtime import train_on

    out = os.fdopen(int(argv[0]), "wb")
    cores = {int(core) for core in argv[1].split(",")} if argv[1] != "-" else None
    train_on(cores, int(argv[2]) or None)  # before anything else starts a thread: they inherit the cores
    os.nice(NICENESS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from .loop import Trainer

    try:  # unbuffered, so nothing after the request is read ahead of the stop watcher
        request: Request = pickle.load(os.fdopen(0, "rb", buffering=0, closefd=False))
    except EOFError:  # a spare the app no longer needs
        return 0
    outbox = Outbox(out)
    send = outbox.put
    control = RunControl(pauses_count=request.pauses_count)
    threading.Thread(target=_watch_stdin, args=(control,), daemon=True).start()
    try:
        result = Trainer(request.config, [lambda event: send("event", event)], control=control).run()
        result.model = None  # the weights are in its checkpoint; the app loads that
        send("result", result)
    except Exception as error:  # noqa: BLE001  (reported to the app as the run's message)
        if not isinstance(error, UserError):
            log.exception("training run failed")
        send("failed", failure_message(error))
    outbox.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
