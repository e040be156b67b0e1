"""Files that survive a crash: staged and atomic writes, whole-file links, and JSON that never holds NaN.

Checkpoints, annotation datasets and run logs are all written through these, so a kill or a full
disk leaves the old file or the new one, never half of one. Nothing here imports torch.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading
from pathlib import Path

_FOLDER_LOCKS: dict[Path, threading.RLock] = {}
_FOLDER_LOCKS_GUARD = threading.Lock()


def folder_lock(folder: str | os.PathLike) -> threading.RLock:
    """The one lock of ``folder`` in this process. Objects that write into a folder (a dataset
    store, a model catalog) take it rather than a lock of their own: two objects for one folder
    (a workspace reopened after it left the cache while a request still held the old one) then
    cannot interleave their writes."""
    key = Path(folder).resolve()
    with _FOLDER_LOCKS_GUARD:
        return _FOLDER_LOCKS.setdefault(key, threading.RLock())


def staged_write(path: str | os.PathLike, write, sync: bool = True) -> Path:
    """Call ``write(file_object)`` on a hidden temporary file beside ``path`` and fsync it (unless
    ``sync`` is False); returns the temporary file, for the caller to rename into place (it is
    removed if writing fails)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o644)  # mkstemp's 0600 would make shipped and exported files private
        with os.fdopen(handle, "wb") as file:
            write(file)
            if sync:
                file.flush()
                os.fsync(file.fileno())
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return Path(temporary)


def atomic_write(path: str | os.PathLike, write, sync: bool = True) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, fsync, then rename it over
    ``path``: readers see the old file or the new one, never a partial one. ``sync=False`` leaves
    out the fsyncs, for files written often that a crash may lose (a run's probe frames)."""
    path = Path(path)
    temporary = staged_write(path, write, sync)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if not sync:
        return
    try:  # make the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError:
        pass


def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Put ``source``'s content at ``target``: a hard link where the file system allows (nothing is
    copied), else an atomic copy. Either way ``target`` appears whole or not at all."""
    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".link", dir=target.parent)
    os.close(handle)
    os.unlink(temporary)
    try:
        os.link(source, temporary)
    except OSError:  # another file system, or none that links
        with open(source, "rb") as original:
            atomic_write(target, lambda file: shutil.copyfileobj(original, file))
        return target
    try:
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def sync_all(paths, threads: int = 16) -> None:
    """Make many new files (and folders) durable at once: fsync each from a pool of threads.
    The file system commits concurrent fsyncs together: on this project's ext4 disks, 1000 small
    files took 3.2 s one after another and 0.1 s from 16 threads."""
    from concurrent.futures import ThreadPoolExecutor

    def sync(path) -> None:
        handle = os.open(path, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(sync, paths))


def json_safe(value):
    """Replace NaN/inf by None, recursively, so metrics can be written as JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
