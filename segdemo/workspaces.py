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
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from .annotations import DatasetStore
from .catalog import ModelCache, ModelCatalog
from .datafolder import DataFolder
from .errors import UserError

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


@dataclass
class Workspace:
    """One visitor's things: where they live, the models they can pick, their annotation datasets."""

    key: str | None            # None: the single-user workspace
    data: DataFolder
    catalog: ModelCatalog
    store: DatasetStore


class Workspaces:
    """The app's workspaces: one (single-user) or one per key (public).

    Args:
        data: the app's data folder.
        shipped_dir: the shipped checkpoints, listed in every workspace.
        public: one workspace per key instead of one for everybody.
        default_model: the model listed first.
    """

    def __init__(self, data: DataFolder, shipped_dir: str | Path, *, public: bool = False,
                 default_model: str = "unet_shapes"):
        self.data = data
        self.shipped_dir = Path(shipped_dir)
        self.public = public
        self.default_model = default_model
        self.cache = ModelCache()
        self._lock = threading.Lock()
        self._open: OrderedDict[str | None, Workspace] = OrderedDict()
        # The models every visitor has: the shipped ones and the pretrained ones.
        self.shared = ModelCatalog(self.shipped_dir, data.root / "shared", default=default_model, cache=self.cache)

    @property
    def root(self) -> Path:
        """Where the public workspaces' folders are."""
        return self.data.root / "workspaces"

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
                return self._open[key]
        workspace = self._make(key)
        with self._lock:
            workspace = self._open.setdefault(key, workspace)
            while len(self._open) > OPEN_WORKSPACES:
                self._open.popitem(last=False)
        return workspace

    def _make(self, key: str | None) -> Workspace:
        # A workspace's folder appears with the first thing saved in it: a visitor who only looks
        # (or a page polling before it has said which workspace it holds) leaves nothing behind.
        data = self.data if key is None else DataFolder((self.root / folder_name(key)).resolve())
        catalog = ModelCatalog(self.shipped_dir, data.models, default=self.default_model, cache=self.cache)
        return Workspace(key=key, data=data, catalog=catalog, store=DatasetStore(data.datasets))
