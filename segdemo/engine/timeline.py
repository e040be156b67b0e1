"""A run's probe timeline kept in its folder, so that runs can show their probes side by side after
they have left the trainer's memory (a lesson's earlier runs, any run after a restart of the app).

:class:`ProbeTimeline` is a listener beside :class:`~.events.LastPicture`: it writes each
:class:`~.events.ProbeFrame`'s PNG into the run folder's ``timeline/`` and an index of them
(``index.json``: step, training seconds, Dice and file of each kept frame). The index is replaced
whole (a temporary file, then ``os.replace``), so a reader never sees it half-written; a frame's PNG
is written the same way before the index names it, and dropped ones are deleted after the index
stops naming them.

Bounded like :class:`~.events.EventHistory`: at most :data:`MAX_FRAMES` frames (thinned evenly when
full, the first and the latest kept: :func:`~.events.thin_evenly`) and at most :data:`MAX_BYTES`.
Measured: a frame of the live preset's 4 probes (shapes, 12 thumbnails of 96 px) is 4.5-7 kB of
PNG, so a shapes run keeps its 120 frames in under 1 MB; a frame of 4 photos is 80-170 kB, so a run
on photos keeps 12-24 frames within 2 MB. That is a tenth of the room a run must find free in a
workspace (``Quotas.run_mb``, 20 MB) and 1 % of a workspace's disk (``Quotas.workspace_mb``,
200 MB): with the 5 runs a shared app keeps (``Limits.runs_kept``), at most 5 % of it. Writing a
frame (its PNG and the index of up to 120 entries, about 10 kB) takes well under a millisecond
beside the 30 ms of making it.

Reading is defensive, like :func:`~.experiments.read_log_lines`: a missing or damaged index gives no
frames; an entry with bad fields, a file name that is not one of ours, a missing PNG or one that is
not whole are skipped; at most :data:`MAX_FRAMES` entries and :data:`MAX_READ_BYTES` of pictures are
read (thinned evenly when more).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write
from .events import MAX_FRAMES, Event, ProbeFrame, thin_evenly

log = logging.getLogger(__name__)

TIMELINE_DIR = "timeline"              # in a run folder
INDEX_NAME = "index.json"
MAX_BYTES = 2 * 2**20                  # of a run's kept frames (see the module docstring)
MAX_READ_BYTES = 2 * MAX_BYTES         # read back at most (a folder written with other bounds)
MAX_INDEX_BYTES = 256 * 2**10          # an index of 120 frames is about 10 kB
FRAME_FILE = re.compile(r"^\d{8,12}\.png$")
PNG_START = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"            # the last chunk: a PNG cut short lacks it


@dataclass(frozen=True)
class Entry:
    """One kept frame as the index names it."""

    step: int
    seconds: float
    dice: float | None
    probe_seconds: float
    file: str

    def as_dict(self) -> dict:
        return {"step": self.step, "seconds": self.seconds, "dice": self.dice, "probe_seconds": self.probe_seconds,
                "file": self.file}


def frame_file(step: int) -> str:
    """A frame's PNG name: its step, zero-padded so that names sort by step."""
    return f"{step:08d}.png"


class ProbeTimeline:
    """A listener that keeps a run's probe frames in ``folder/timeline/`` (see the module docstring).

    A run resumed into the same folder goes on from the frames kept there: those after the step it
    resumed at belong to a timeline that no longer is, and are replaced as it reaches them again.
    """

    def __init__(self, folder: str | os.PathLike, max_frames: int = MAX_FRAMES, max_bytes: int = MAX_BYTES):
        self.folder = Path(folder) / TIMELINE_DIR
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self._entries, self._sizes = [], {}
        for entry in read_index(folder):
            try:
                self._sizes[entry.file] = (self.folder / entry.file).stat().st_size
            except OSError:
                continue
            self._entries.append(entry)
        self._sweep()

    def __call__(self, event: Event) -> None:
        if not isinstance(event, ProbeFrame):
            return
        name = frame_file(event.step)
        _write_whole(self.folder / name, event.image)
        kept = [entry for entry in self._entries if entry.step < event.step]   # later ones: before a resume
        kept.append(Entry(step=event.step, seconds=float(event.elapsed), dice=event.dice,
                          probe_seconds=float(event.probe_seconds), file=name))
        self._sizes[name] = len(event.image)
        kept = self._bounded(kept)
        _write_whole(self.folder / INDEX_NAME, json.dumps({"frames": [e.as_dict() for e in kept]}).encode())
        names = {entry.file for entry in kept}
        for dropped in [entry.file for entry in self._entries if entry.file not in names]:
            self._sizes.pop(dropped, None)
            try:
                (self.folder / dropped).unlink()
            except OSError:
                log.warning("could not delete %s", self.folder / dropped, exc_info=True)
        self._entries = kept

    def _bounded(self, entries: list[Entry]) -> list[Entry]:
        """``entries`` thinned to :attr:`max_frames` (to half when full, as EventHistory does) and
        then halved while their PNGs take more than :attr:`max_bytes` (two are always kept)."""
        if len(entries) > self.max_frames:
            entries = thin_evenly(entries, self.max_frames // 2 + 1)
        while len(entries) > 2 and sum(self._sizes.get(e.file, 0) for e in entries) > self.max_bytes:
            entries = thin_evenly(entries, len(entries) // 2 + 1)
        return entries

    def _sweep(self) -> None:
        """Delete what a run that stopped mid-write left: temporary files and PNGs no index names."""
        names = {entry.file for entry in self._entries}
        for path in self.folder.iterdir():
            temporary = path.name.startswith(".") and path.name.endswith(".tmp")
            if temporary or (FRAME_FILE.match(path.name) and path.name not in names):
                try:
                    path.unlink()
                except OSError:
                    log.warning("could not delete %s", path, exc_info=True)


def _write_whole(path: Path, data: bytes) -> None:
    """``data`` written to ``path`` through a temporary file: a reader sees the old file or the new
    (not fsynced: a frame a crash loses is one frame)."""
    atomic_write(path, lambda file: file.write(data), sync=False)


# --- reading back ----------------------------------------------------------------------------------
def read_index(run_folder: str | os.PathLike, max_frames: int = MAX_FRAMES) -> list[Entry]:
    """The frames a run folder's timeline index names, oldest first (at most ``max_frames``,
    thinned evenly); a missing, oversized or damaged index gives none, a bad entry is skipped."""
    path = Path(run_folder) / TIMELINE_DIR / INDEX_NAME
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_INDEX_BYTES + 1)
        if len(data) > MAX_INDEX_BYTES:
            raise ValueError(f"over {MAX_INDEX_BYTES} bytes")
        frames = json.loads(data)["frames"]
        if not isinstance(frames, list):
            raise TypeError("no list of frames")
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError):  # damaged: the run keeps its other pictures
        log.warning("could not read the probe timeline %s", path, exc_info=True)
        return []
    entries = []
    for item in frames:
        try:
            dice = item["dice"]
            entry = Entry(step=int(item["step"]), seconds=float(item["seconds"]),
                          dice=None if dice is None else float(dice),
                          probe_seconds=float(item.get("probe_seconds") or 0.0), file=str(item["file"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if FRAME_FILE.match(entry.file):   # never a path out of the folder
            entries.append(entry)
    entries.sort(key=lambda entry: entry.step)
    return thin_evenly(entries, max_frames)


def whole_png(data: bytes) -> bool:
    """Whether ``data`` begins and ends as a PNG does (a file cut short does not)."""
    return data.startswith(PNG_START) and data.endswith(PNG_END)


def read_timeline(run_folder: str | os.PathLike, max_frames: int = MAX_FRAMES,
                  max_bytes: int = MAX_READ_BYTES) -> list[ProbeFrame]:
    """A run folder's kept probe frames, oldest first, as the :class:`~.events.ProbeFrame` events
    they were (their PNG pictures read back): at most ``max_frames`` and ``max_bytes`` of pictures
    (thinned evenly when more, the first and the latest kept). Missing or broken ones are skipped."""
    folder = Path(run_folder) / TIMELINE_DIR
    sized = []
    for entry in read_index(run_folder, max_frames):
        try:
            sized.append((entry, (folder / entry.file).stat().st_size))
        except OSError:
            continue
    while len(sized) > 2 and sum(size for _, size in sized) > max_bytes:
        sized = thin_evenly(sized, len(sized) // 2 + 1)
    frames = []
    for entry, size in sized:
        if size > max_bytes:
            continue
        try:
            with open(folder / entry.file, "rb") as file:
                data = file.read(max_bytes)
        except OSError:
            continue
        if not whole_png(data):
            log.warning("skipped %s: not a whole PNG", folder / entry.file)
            continue
        frames.append(ProbeFrame(step=entry.step, dice=entry.dice, image=data, probe_seconds=entry.probe_seconds,
                                 elapsed=entry.seconds))
    return frames
