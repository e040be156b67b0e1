"""Files between the app and gradio: uploads checked on the way in, pictures and downloads on the
way out (through scratch folders, never from the data folder itself)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ..files import link_or_copy
from ..image_files import save_png
from .messages import refuse

# Upload limit for files the app reads (images, masks, checkpoints, dataset zips).
MAX_UPLOAD_BYTES = 200 * 2**20

# Files handed to gradio (exports, downloads, API results) are copied into its cache when the
# event ends; our copies are removed after this long.
SCRATCH_KEEP_SECONDS = 600

_scratch_lock = threading.Lock()
_scratch_pruned = 0.0
SCRATCH_PREFIX = "segdemo-scratch-"   # + the process id: each app process has its own


def remove_stale_scratch() -> list[str]:
    """Remove the scratch folders of app processes that have stopped (a killed app leaves its
    ``segdemo-scratch-<pid>``): only those whose process no longer runs. Called at start."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(SCRATCH_PREFIX + "*"):
        pid = folder.name[len(SCRATCH_PREFIX):]
        if not pid.isdigit() or int(pid) == os.getpid() or _running(int(pid)):
            continue
        try:
            if folder.is_dir() and not folder.is_symlink() and folder.stat().st_uid == os.getuid():
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        except OSError:
            pass
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)   # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True       # someone else's process
    return True


def scratch_folder(prefix: str) -> Path:
    """A new, empty folder for files a handler gives gradio to serve.

    Gradio copies such files into its cache (atomically, by content) when the event ends, so
    ours are only needed for a moment; folders older than ``SCRATCH_KEEP_SECONDS`` are removed
    here, at most once a minute, so that a long-running app does not fill the disk one request
    at a time. The folders live in the temporary directory, which gradio may serve from; the
    data directory never is.
    """
    global _scratch_pruned
    root = Path(tempfile.gettempdir()) / f"{SCRATCH_PREFIX}{os.getpid()}"
    root.mkdir(exist_ok=True)
    now = time.time()
    with _scratch_lock:
        if now - _scratch_pruned > 60:
            _scratch_pruned = now
            for old in root.iterdir():
                try:
                    if now - old.stat().st_mtime > SCRATCH_KEEP_SECONDS:
                        shutil.rmtree(old, ignore_errors=True)
                except OSError:
                    pass
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def png_file(array: np.ndarray, name: str, palette=None) -> str:
    """``array`` written as ``name`` (a PNG) in a new scratch folder, for an output to show.

    Pictures that several visitors may get at the same moment (a run's snapshot, a segmentation
    of the same example) go out as files: gradio copies a file into its cache atomically, but it
    writes an array's PNG over the same content-named cache file in place, so one visitor could
    read a picture another's request is rewriting, half-written.
    """
    path = scratch_folder("png-") / name
    save_png(path, array, palette=palette)
    return str(path)


def bytes_file(data: bytes, name: str) -> str:
    """``data`` (an encoded picture, a GIF) written as ``name`` in a new scratch folder, for an
    output to show (as :func:`png_file`, for what is encoded already)."""
    path = scratch_folder("bytes-") / name
    path.write_bytes(data)
    return str(path)


def download(path: str | Path, name: str) -> str:
    """A file of the data folder offered for download as ``name``: linked (or copied) into a
    scratch folder, since gradio may serve only those."""
    return str(link_or_copy(path, scratch_folder("download-") / name))


def file_path(upload) -> str | None:
    """The local path of a gradio upload (filepath string, FileData dict, or tempfile wrapper)."""
    if upload is None or upload == "":
        return None
    if isinstance(upload, dict):
        return upload.get("path")
    return getattr(upload, "name", upload)


def checked_upload(upload, what: str = "file", *, limit: int = MAX_UPLOAD_BYTES) -> str | None:
    """An upload's path after a size check (None when nothing was uploaded); a message for an
    empty or oversized file."""
    path = file_path(upload)
    if path is None:
        return None
    size = Path(path).stat().st_size
    if size == 0:
        raise refuse(f"the {what} is empty (0 bytes)")
    if size > limit:
        raise refuse(f"the {what} is {size / 2**20:.0f} MB; the limit is {limit / 2**20:.0f} MB")
    return path


def required_upload(upload, what: str, message: str, *, limit: int = MAX_UPLOAD_BYTES) -> str:
    """:func:`checked_upload` for an upload a handler cannot do without (``message`` if missing)."""
    path = checked_upload(upload, what, limit=limit)
    if path is None:
        raise refuse(message)
    return path
