"""Workspaces: each visitor's datasets, uploads, models and runs, kept apart from everyone else's.

In **single-user** mode (``python app.py`` on your own machine) there is one workspace: the data
folder itself, laid out exactly as :class:`~segdemo.datafolder.DataFolder` says. In **public** mode
(a Space, or ``--workspaces``) every visitor has one of their own, named by a random key that only
their browser (or API client) holds::

    <data folder>/workspaces/<digest of the key>/   a DataFolder: uploads/ models/ runs/ datasets/

The key itself never becomes a path: it must look like a key (letters, digits, ``-``, ``_``; 16 to
64 of them) and the folder is named by its SHA-256 digest, so neither a hostile key (``../../x``)
nor a folder name found on disk leads anywhere else. Shipped checkpoints and pretrained models are
shared, read-only, and loaded once for everyone (one :class:`~segdemo.catalog.ModelCache`).

In public mode :class:`Quotas` bound each workspace (disk, datasets, models) and the server's
free disk; every write checks them first (:meth:`Workspace.room`), and workspaces unused for a
while are removed (:meth:`Workspaces.clean`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from .annotations import DatasetStore
from .catalog import ModelCache, ModelCatalog
from .datafolder import DataFolder
from .errors import UserError

log = logging.getLogger(__name__)

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
OPEN_WORKSPACES = 256  # workspace objects kept ready (each holds a catalog and a store); more are reopened


def new_key() -> str:
    """A fresh, unguessable workspace key (32 URL-safe characters, 192 random bits)."""
    return secrets.token_urlsafe(24)


def check_key(key: str) -> str:
    """``key`` if it looks like a workspace key, else a :class:`~segdemo.errors.UserError`."""
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise UserError("that is not a workspace key: a key is 16 to 64 letters, digits, '-' or '_'")
    return key


def folder_name(key: str) -> str:
    """The folder of ``key``'s workspace: a digest, so the key never becomes a path."""
    return hashlib.sha256(check_key(key).encode()).hexdigest()[:32]


MB = 2**20
LAST_USED = ".last-used"  # touched (at most hourly) when a workspace is opened: what cleaning goes by


@dataclass(frozen=True)
class Quotas:
    """What one workspace may hold, and when an unused one goes. Each is set by an environment
    variable of the same name in upper case with a ``SEGDEMO_`` prefix (:meth:`from_environment`)."""

    workspace_mb: float = 200.0      # disk a workspace may use: datasets, uploads, models, runs
    datasets: int = 20               # annotation datasets per workspace
    models: int = 20                 # uploaded and trained models per workspace
    run_mb: float = 20.0             # room a training run needs free before it starts
    unused_days: float = 7.0         # a workspace not opened for this long is removed
    min_free_mb: float = 1024.0      # below this much free disk the app refuses every write

    @classmethod
    def from_environment(cls) -> "Quotas":
        values = {}
        for name, default in cls.__dataclass_fields__.items():
            text = os.environ.get(f"SEGDEMO_{name.upper()}")
            if text:
                values[name] = type(default.default)(float(text))
        return cls(**values)


def folder_bytes(folder: Path) -> int:
    """The bytes of every file under ``folder`` (0 if it does not exist)."""
    total = 0
    for directory, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total


@dataclass
class Workspace:
    """One visitor's things: where they live, the models they can pick, their annotation datasets."""

    key: str | None            # None: the single-user workspace
    data: DataFolder
    catalog: ModelCatalog
    store: DatasetStore
    quotas: Quotas | None = field(default=None, repr=False)   # None: no limits (single-user)

    def room(self, size: int, what: str) -> None:
        """Refuse, with a message, to add ``size`` bytes (and, for ``what`` = "dataset" or "model",
        one more of them) when it would exceed the workspace's quota or the server's free disk."""
        quotas = self.quotas
        if quotas is None:
            return
        if what == "dataset" and len(self.store.datasets()) >= quotas.datasets:
            raise UserError(f"your workspace holds {quotas.datasets} datasets, the most it may; delete one first")
        if what == "model":
            count = sum(1 for kind in ("trained", "uploaded") for _ in (self.data.models / kind).glob("*.pt"))
            if count >= quotas.models:
                raise UserError(f"your workspace holds {quotas.models} models, the most it may")
        existing = next(folder for folder in (self.data.root, *self.data.root.parents) if folder.exists())
        free = shutil.disk_usage(existing).free
        if free - size < quotas.min_free_mb * MB:
            raise UserError("the server's disk is nearly full: nothing more can be saved now; try again later")
        used = folder_bytes(self.data.root)
        if used + size > quotas.workspace_mb * MB:
            raise UserError(f"your workspace would hold {(used + size) / MB:.0f} MB; the limit is "
                            f"{quotas.workspace_mb:g} MB. Delete datasets or models you no longer need")

    def room_for_run(self) -> None:
        """Refuse to start a run that could not save its checkpoints, or register its model."""
        self.room(int((self.quotas.run_mb if self.quotas else 0) * MB), "model")

    def keep_upload(self, path: str | os.PathLike, fallback: str = "upload") -> Path:
        """Keep an upload in the workspace (see :meth:`DataFolder.keep_upload`), within its quota."""
        self.room(Path(path).stat().st_size, "upload")
        return self.data.keep_upload(path, fallback)


class Workspaces:
    """The app's workspaces: one (single-user) or one per key (public).

    Args:
        data: the app's data folder.
        shipped_dir: the shipped checkpoints, listed in every workspace.
        public: one workspace per key instead of one for everybody.
        default_model: the model listed first.
    """

    def __init__(self, data: DataFolder, shipped_dir: str | Path, *, public: bool = False,
                 default_model: str = "unet_shapes", quotas: Quotas | None = None):
        self.data = data
        self.shipped_dir = Path(shipped_dir)
        self.public = public
        self.default_model = default_model
        self.quotas = (quotas or Quotas()) if public else None
        self._cleaned = 0.0
        self.cache = ModelCache()
        self._lock = threading.Lock()
        self._open: OrderedDict[str | None, Workspace] = OrderedDict()
        # The models every visitor has: the shipped, classical and pretrained ones.
        self.shared = ModelCatalog(self.shipped_dir, data.root / "shared", default=default_model, cache=self.cache,
                                   published_dir=self.published_models)

    @property
    def root(self) -> Path:
        """Where the public workspaces' folders are."""
        return self.data.root / "workspaces"

    @property
    def published_models(self) -> Path:
        """Models a teacher published: in every workspace's pickers (segdemo.sharing)."""
        return self.data.root / "published" / "models"

    def get(self, key: str | None = None) -> Workspace:
        """The workspace of ``key`` (created on first use). In single-user mode the key is
        ignored: everybody has the one workspace."""
        if not self.public:
            key = None
        elif key is None:
            raise UserError("this app keeps a workspace per visitor: a workspace key is needed")
        else:
            check_key(key)
        with self._lock:
            if key in self._open:
                self._open.move_to_end(key)
                workspace = self._open[key]
                self._mark_used(workspace)
                return workspace
        workspace = self._make(key)
        self._mark_used(workspace)
        with self._lock:
            workspace = self._open.setdefault(key, workspace)
            while len(self._open) > OPEN_WORKSPACES:
                self._open.popitem(last=False)
        return workspace

    def _make(self, key: str | None) -> Workspace:
        # A workspace's folder appears with the first thing saved in it: a visitor who only looks
        # (or a page polling before it has said which workspace it holds) leaves nothing behind.
        data = self.data if key is None else DataFolder((self.root / folder_name(key)).resolve())
        workspace = Workspace(key=key, data=data, catalog=None, store=None, quotas=self.quotas)
        room = workspace.room if self.quotas is not None else None
        workspace.catalog = ModelCatalog(self.shipped_dir, data.models, default=self.default_model, cache=self.cache,
                                         room=room, published_dir=self.published_models if self.public else None)
        workspace.store = DatasetStore(data.datasets, room=room)
        return workspace

    def _mark_used(self, workspace: Workspace) -> None:
        """Note that a public workspace is in use (at most hourly), and clean up now and then."""
        if workspace.key is None:
            return
        marker = workspace.data.root / LAST_USED
        try:
            if workspace.data.root.is_dir() and time.time() - marker.stat().st_mtime > 3600:
                marker.touch()
        except FileNotFoundError:
            if workspace.data.root.is_dir():
                marker.touch()
        if time.time() - self._cleaned > 3600:
            self._cleaned = time.time()
            threading.Thread(target=self.clean, name="segdemo-clean", daemon=True).start()

    def clean(self, now: float | None = None) -> list[str]:
        """Remove the workspaces not opened for ``quotas.unused_days``; returns their folder names."""
        if self.quotas is None or not self.root.is_dir():
            return []
        limit = (now or time.time()) - self.quotas.unused_days * 86400
        removed = []
        for folder in self.root.iterdir():
            marker = folder / LAST_USED
            try:
                used = marker.stat().st_mtime if marker.exists() else folder.stat().st_mtime
            except OSError:
                continue
            if used < limit:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        with self._lock:  # forget them, so that a returning visitor starts afresh
            for key in [k for k, w in self._open.items() if w.data.root.name in removed]:
                del self._open[key]
        if removed:
            log.info("removed %d workspaces unused for %g days", len(removed), self.quotas.unused_days)
        return removed
