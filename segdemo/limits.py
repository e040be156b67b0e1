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
from dataclasses import dataclass
from pathlib import Path

MB = 2**20
GB = 2**30

# Not a setting but a fact of the formats: a label map is one byte per pixel and 255 marks ignored
# pixels (segdemo.tasks.IGNORE_INDEX), so a dataset or model has at most 255 classes.
MAX_CLASSES = 255


@dataclass(frozen=True)
class Limits:
    """Caps on single requests and runs (quotas on what a workspace keeps are
    :class:`segdemo.workspaces.Quotas`)."""

    model_parameters: int = 100_000_000   # any model built from metadata: upload, Train tab, API, CLI
    memory_share: float = 0.6             # of the memory this process may use, what one model or run may take

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


# A shared app: many visitors share one machine, so one visitor's model or run gets less of it.
PUBLIC = Limits(memory_share=0.3)

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


def size_text(count_bytes: float) -> str:
    """``count_bytes`` for a person: "512 MB", "40 GB"."""
    if count_bytes >= GB:
        return f"{count_bytes / GB:.0f} GB" if count_bytes >= 10 * GB else f"{count_bytes / GB:.1f} GB"
    return f"{count_bytes / MB:.0f} MB"
