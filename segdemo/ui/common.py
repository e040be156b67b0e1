"""What every tab shares: the app's shared objects, error reporting, legends and pictures.

Only :mod:`segdemo.ui` imports gradio. Handlers are plain functions over the library; the Blocks
code in each tab module only wires them to components.
"""

from __future__ import annotations

import functools
import html
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from ..catalog import ModelCatalog
from ..errors import CheckpointError
from ..data.archive import ArchiveError
from ..engine import BackgroundTrainer, TrainerBusy
from ..io import ImageError, save_png
from ..models import WeightsUnavailable

log = logging.getLogger(__name__)

# Largest side of pictures sent to the browser: bigger images are predicted at full size but
# shown downscaled (a 4000×4000 overlay would be a 48 MB PNG).
DISPLAY_SIDE = 1600
# Upload limit for files the app reads (images, masks, checkpoints, dataset zips).
MAX_UPLOAD_BYTES = 200 * 2**20

# Files handed to gradio (exports, downloads, API results) are copied into its cache when the
# event ends; our copies are removed after this long.
SCRATCH_KEEP_SECONDS = 600

USER_ERRORS = (ImageError, CheckpointError, ArchiveError, WeightsUnavailable, TrainerBusy, ValueError, KeyError)


_scratch_lock = threading.Lock()
_scratch_pruned = 0.0


def scratch_folder(prefix: str) -> Path:
    """A new, empty folder for files a handler gives gradio to serve.

    Gradio copies such files into its cache (atomically, by content) when the event ends, so
    ours are only needed for a moment; folders older than ``SCRATCH_KEEP_SECONDS`` are removed
    here, at most once a minute, so that a long-running app does not fill the disk one request
    at a time. The folders live in the temporary directory, which gradio may serve from; the
    data directory never is.
    """
    global _scratch_pruned
    root = Path(tempfile.gettempdir()) / f"segdemo-scratch-{os.getpid()}"
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


@dataclass
class AppContext:
    """The app's shared, explicitly created objects (one per process)."""

    catalog: ModelCatalog
    trainer: BackgroundTrainer
    data_dir: Path
    store: object = None  # the annotation dataset store (segdemo.annotations.DatasetStore)


def user_errors(function):
    """Turn the library's user-facing errors into ``gr.Error`` (a red message in the page, an
    error over the API) instead of a crash; anything else is logged and reported briefly."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
            raise gr.Error(str(message), print_exception=False) from error
        except MemoryError as error:
            raise gr.Error("out of memory: try a smaller image or model", print_exception=False) from error
        except OSError as error:
            log.exception("I/O error in %s", function.__name__)
            raise gr.Error(f"could not read or write a file: {error.strerror or error}", print_exception=False) from error

    return wrapper


def file_path(upload) -> str | None:
    """The local path of a gradio upload (filepath string, FileData dict, or tempfile wrapper)."""
    if upload is None or upload == "":
        return None
    if isinstance(upload, dict):
        return upload.get("path")
    return getattr(upload, "name", upload)


def checked_upload(upload, what: str = "file", *, limit: int = MAX_UPLOAD_BYTES) -> str | None:
    """An upload's path after a size check; ``gr.Error`` for empty or oversized files."""
    path = file_path(upload)
    if path is None:
        return None
    size = Path(path).stat().st_size
    if size == 0:
        raise gr.Error(f"the {what} is empty (0 bytes)", print_exception=False)
    if size > limit:
        raise gr.Error(f"the {what} is {size / 2**20:.0f} MB; the limit is {limit / 2**20:.0f} MB",
                       print_exception=False)
    return path


def hex_color(color) -> str:
    return "#{:02x}{:02x}{:02x}".format(*[int(v) for v in color[:3]])


def legend_html(names, colors) -> str:
    """Colored chips naming each class."""
    chips = "".join(
        f'<span class="segdemo-chip"><span style="background:{hex_color(c)}"></span>{html.escape(str(n))}</span>'
        for n, c in zip(names, colors))
    return f'<div class="segdemo-legend">{chips}</div>'


def downscale(image: np.ndarray, side: int = DISPLAY_SIDE, *, nearest: bool = False) -> np.ndarray:
    """Shrink an ``(H, W[, C])`` array so its longer side is at most ``side`` (for display)."""
    import cv2

    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(image, size, interpolation=interpolation)


def side_by_side(*pictures: np.ndarray, gap: int = 4) -> np.ndarray:
    """Pictures of equal height in one row, separated by white gaps."""
    height = pictures[0].shape[0]
    spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
    parts = []
    for index, picture in enumerate(pictures):
        if index:
            parts.append(spacer)
        parts.append(picture)
    return np.concatenate(parts, axis=1)


def format_dice(value) -> str:
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.3f}"


CSS = """
.segdemo-legend { display: flex; flex-wrap: wrap; gap: 6px 14px; margin: 4px 0; }
.segdemo-chip { display: inline-flex; align-items: center; gap: 6px; font-size: 0.9em; }
.segdemo-chip span { display: inline-block; width: 14px; height: 14px; border-radius: 3px;
                     border: 1px solid rgba(0,0,0,0.25); }
.segdemo-progress { height: 14px; background: #e5e7eb; border-radius: 7px; overflow: hidden; }
.segdemo-progress div { height: 100%; background: #4f46e5; transition: width 0.4s; }
.segdemo-explain { font-size: 0.92em; opacity: 0.85; }
"""


def live_dropdown(choices, **options) -> gr.Dropdown:
    """A picker whose choices grow while the app runs (trained models, new datasets). Gradio
    checks a value against the choices the session was built with, which would refuse a model
    trained after the page (or API client) connected; the handlers check names themselves, with
    a clear message, so the server accepts any value here."""
    return gr.Dropdown(choices, allow_custom_value=True, **options)
