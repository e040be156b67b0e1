"""What one request, upload or training run may ask of the server, in one place.

A public Space has 2 cores and 16 GB for everybody: one checkpoint whose metadata asks for a huge
model, one training setting or one giant image must be refused with a message that names the
limit, before anything is allocated. Each limit here is a field of :class:`Limits`; each can be
set by an environment variable ``SEGDEMO_`` + its name in upper case (:meth:`Limits.from_environment`),
and a shared app (public mode) starts from tighter defaults (:data:`PUBLIC`). The process's limits
are :func:`current`; the app sets them once at start with :func:`configure`.

Memory is measured against what this process may really use: the container's cgroup limit where
there is one (a Space's 16 GB, not the host's memory), else the machine's available memory.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import LimitError

MB = 2**20
GB = 2**30

@dataclass(frozen=True)
class Limits:
    """Caps on single requests and runs (quotas on what a workspace keeps are
    :class:`segdemo.workspaces.Quotas`)."""

    model_parameters: int = 100_000_000   # any model built from metadata: upload, Train tab, API, CLI
    memory_share: float = 0.6             # of the memory this process may use, what one model or run may take
    model_cache_mb: int = 2048            # weights of the models kept loaded between requests, all together

    # One request's inference (segdemo.inference.Segmenter.work; 0: no limit of its own).
    request_gflop: float = 0.0            # model cost × pixels: 44-104 GFLOP/s on 2 cores here (measured)
    request_mb: float = 0.0               # the image and its probabilities (0: the memory budget)
    request_seconds: float = 0.0          # wall time of the inference in one request

    # Images and annotations.
    annotation_side: int = 4096           # a saved annotation pair, either side
    editor_side: int = 2048               # what the annotation editor opens, and each layer it sends back
    editor_layers: int = 4                # layers of one painting sent to the editor's endpoints
    dataset_items: int = 5000             # pairs in one annotation dataset
    import_megapixels: float = 0.0        # images of one dataset import, decoded and written (0: no limit)

    # Dataset zips and folders (segdemo.data.archive); the annotation import allows fewer files.
    zip_files: int = 200_000              # files in one zip
    zip_mb: float = 4096.0                # what a zip unpacks to in all
    zip_member_mb: float = 256.0          # one file in it
    zip_ratio: float = 200.0              # compression of one file over 1 MB: images compress a few times, bombs 1000×
    zip_depth: int = 16                   # folders within folders

    # Disk.
    runs_kept: int = 20                   # a workspace's run folders (checkpoints, logs); older ones go

    @classmethod
    def from_environment(cls, base: "Limits | None" = None) -> "Limits":
        """``base`` (default: these defaults) with every ``SEGDEMO_<FIELD>`` that is set."""
        base = base or cls()
        values = {}
        for field in dataclasses.fields(cls):
            text = os.environ.get(f"SEGDEMO_{field.name.upper()}")
            if text is not None:
                values[field.name] = type(getattr(base, field.name))(float(text))
        return dataclasses.replace(base, **values)


# A shared app: many visitors share one machine, so one visitor's model, run or request gets less of
# it. A request: 400 GFLOP took 3-9 s of both cores on this project's 2-core Xeon (bf16: the U-Net
# tiled at 44 GFLOP/s, U²-Net(P) at 104; a CPU without bf16 is slower), enough for the default U-Net
# on a 12-megapixel phone photo, U²-Net(P) on 0.7 megapixels.
# An import decodes and re-encodes every pair: 22 megapixels a second here (60 pairs at 4096², with
# other work on the cores), so 400 is about 20 s.
PUBLIC = Limits(memory_share=0.3, model_cache_mb=1024, request_gflop=400.0, request_mb=1024.0, request_seconds=60.0,
                import_megapixels=400.0, zip_files=20_000, zip_mb=1024.0, runs_kept=5)

_lock = threading.Lock()
_current = Limits()


def current() -> Limits:
    """The limits in force in this process."""
    return _current


def configure(public: bool) -> Limits:
    """Set this process's limits: the defaults (or :data:`PUBLIC`'s) with the environment's
    overrides. The app calls it once at start; tests call it to try both."""
    global _current
    with _lock:
        _current = Limits.from_environment(PUBLIC if public else Limits())
    return _current


def _cgroup_limit() -> int | None:
    """The container's memory limit in bytes (cgroup v2, then v1), or None where there is none."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:   # "max" or a huge number means no limit
            return int(text)
    return None


def _meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def usable_memory() -> int:
    """Bytes this process may use in all: the container's limit where there is one, else the
    machine's total memory (8 GB where neither can be read)."""
    return _cgroup_limit() or _meminfo("MemTotal") or 8 * GB


def memory_budget(limits: Limits | None = None) -> int:
    """Bytes one model or one training run may take: ``memory_share`` of :func:`usable_memory`."""
    limits = limits or current()
    return int(limits.memory_share * usable_memory())


def request_bytes(limits: Limits | None = None) -> int:
    """Bytes one request's image and its prediction may take: ``request_mb``, else the memory budget."""
    limits = limits or current()
    return int(limits.request_mb * MB) if limits.request_mb > 0 else memory_budget(limits)


class Deadline:
    """When one request's work must stop: ``seconds`` after it began (0: no time limit), or as
    soon as ``wanted()`` returns False (its visitor has gone: nobody would see the answer).

    Long work calls :meth:`check` between its steps (:class:`segdemo.inference.Segmenter` before
    every convolution), which raises :class:`~segdemo.errors.LimitError` once the time is up."""

    def __init__(self, seconds: float = 0.0, wanted: Callable[[], bool] | None = None):
        self.seconds = float(seconds or 0.0)
        self.started = time.monotonic()
        self.wanted = wanted

    @classmethod
    def for_request(cls, wanted: Callable[[], bool] | None = None, limits: Limits | None = None) -> "Deadline":
        """A deadline of ``request_seconds`` from now."""
        return cls((limits or current()).request_seconds, wanted)

    def left(self) -> float | None:
        """Seconds left (None: no time limit)."""
        return None if self.seconds <= 0 else self.seconds - (time.monotonic() - self.started)

    def check(self) -> None:
        left = self.left()
        if left is not None and left < 0:
            raise LimitError(f"stopped after {self.seconds:g} s, the time one request may take here "
                             "(request_seconds): try a smaller image or a lighter model")
        if self.wanted is not None and not self.wanted():
            raise LimitError("stopped: the request was cancelled or its page was closed")


def size_text(count_bytes: float) -> str:
    """``count_bytes`` for a person: "512 MB", "40 GB"."""
    if count_bytes >= GB:
        return f"{count_bytes / GB:.0f} GB" if count_bytes >= 10 * GB else f"{count_bytes / GB:.1f} GB"
    return f"{count_bytes / MB:.0f} MB"


def count_text(count: float) -> str:
    """A count for a person: "950", "3.2 thousand", "207 million", "1.3 billion"."""
    for size, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million"), (1e3, "thousand")):
        if count >= size:
            value = count / size
            return f"{value:.1f} {word}" if value < 10 and round(value, 1) != round(value) else f"{value:.0f} {word}"
    return f"{count:.0f}"
