"""The app's data folder: the one place that knows where uploads, models, runs and datasets live.

::

    <root>/uploads/            dataset zips uploaded for training (kept while a run reads them)
    <root>/models/trained/     checkpoints of runs trained in the app      } listed in every
    <root>/models/uploaded/    checkpoints visitors uploaded               } model picker
    <root>/runs/<run id>/      training runs: best.pt, last.pt, log.jsonl
    <root>/datasets/<name>/    annotation datasets (segdemo.annotations)
    <root>/workspaces/<digest>/   in public mode, one such folder per visitor (segdemo.workspaces)
    <root>/secrets/<name>      random values the app keeps across restarts (mode 0600)

It survives restarts. The root is ``--data-dir``, ``SEGDEMO_DATA_DIR``, or ``.segdemo`` in the
working directory. Nothing under it is ever handed to gradio to serve: files a page downloads are
linked or copied out first.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from .filenames import RUN_ID, safe_name
from .files import link_or_copy

ENVIRONMENT_VARIABLE = "SEGDEMO_DATA_DIR"


@dataclass(frozen=True)
class DataFolder:
    root: Path

    @classmethod
    def at(cls, path: str | os.PathLike | None = None) -> "DataFolder":
        """The data folder at ``path``, else ``$SEGDEMO_DATA_DIR``, else ``./.segdemo`` (created)."""
        root = Path(path or os.environ.get(ENVIRONMENT_VARIABLE) or Path.cwd() / ".segdemo").resolve()
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def models(self) -> Path:
        """Holds ``trained/`` and ``uploaded/`` (:class:`segdemo.catalog.ModelCatalog`)."""
        return self.root / "models"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    def secret(self, name: str) -> str:
        """A random value kept under ``secrets/`` across restarts (made on first use)."""
        path = self.root / "secrets" / name
        if not path.is_file():
            path.parent.mkdir(mode=0o700, exist_ok=True)
            value = secrets.token_urlsafe(32)
            try:
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
                    file.write(value)
            except FileExistsError:  # another process made it first: use theirs
                pass
        return path.read_text().strip()

    def keep_upload(self, path: str | os.PathLike, fallback: str = "upload") -> Path:
        """Keep an uploaded file (gradio deletes its own copy after a while) as
        ``uploads/<random>/<its name>``: two uploads of the same name (two visitors'
        ``shared.zip``) never replace each other, even while a run reads one, and messages
        still name the file as its sender knows it."""
        path = Path(path)
        return link_or_copy(path, self.uploads / secrets.token_hex(8) / f"{safe_name(path.stem, fallback)}"
                                                                          f"{path.suffix.lower()}")

    def remove_uploads(self, keep=()) -> None:
        """Remove the kept uploads except ``keep`` (paths): the caller knows no run reads them."""
        keep = {Path(path).resolve().parent for path in keep}
        for upload in self.uploads.iterdir() if self.uploads.is_dir() else []:
            if upload.resolve() in keep:
                continue
            if upload.is_dir() and not upload.is_symlink():
                shutil.rmtree(upload, ignore_errors=True)
            else:
                upload.unlink(missing_ok=True)

    def prune_runs(self, keep: int, in_use=()) -> list[str]:
        """Remove all but the newest ``keep`` run folders (run ids begin with their start time),
        never one of ``in_use`` (run ids); returns the ids removed. A model a run added to the
        pickers stays: it is a link (or copy) of the run's checkpoint under ``models/``."""
        runs = sorted(folder.name for folder in self.runs.iterdir()
                      if folder.is_dir() and RUN_ID.match(folder.name)) if self.runs.is_dir() else []
        removed = [run for run in runs[:max(len(runs) - keep, 0)] if run not in set(in_use)]
        for run in removed:
            shutil.rmtree(self.runs / run, ignore_errors=True)
        return removed
