"""The app's shared objects, created once per process and handed to every tab.

Per-visitor values live in ``gr.State``; what every visitor shares (the workspaces, the one
background trainer, the data folder) is made explicitly, here, by
:func:`segdemo.ui.app.create_context`. A handler finds its visitor's own things (models,
datasets, uploads) with :meth:`AppContext.workspace`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..catalog import ModelCatalog
from ..datafolder import DataFolder
from ..engine import BackgroundTrainer
from ..sharing import Sharing
from ..workspaces import Workspace, Workspaces
from .visitors import Visitors


@dataclass
class AppContext:
    workspaces: Workspaces
    trainer: BackgroundTrainer
    data: DataFolder
    visitors: Visitors
    sharing: Sharing | None = None   # public mode only

    @property
    def public(self) -> bool:
        return self.workspaces.public

    def workspace(self, request=None) -> Workspace:
        """The workspace of the visitor who sent ``request`` (a ``gr.Request``); in single-user
        mode, the one workspace."""
        return self.workspaces.get(self.owner(request))

    def page_catalog(self) -> ModelCatalog:
        """The models a page is built with: the one workspace's, or in public mode the ones every
        visitor shares (each visitor's own join their pickers when their page loads)."""
        return self.workspaces.shared if self.public else self.workspace().catalog

    def owner(self, request=None) -> str | None:
        """The visitor's workspace key, which also names who a training run belongs to (None in
        single-user mode)."""
        return self.visitors.key_for(request) if self.public else None
