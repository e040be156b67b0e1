"""The app's shared objects, created once per process and handed to every tab.

Per-visitor values live in ``gr.State``; what every visitor shares (the model catalog, the one
background trainer, the data folder and its annotation store) is made explicitly, here, by
:func:`segdemo.ui.app.create_context`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..annotations import DatasetStore
from ..catalog import ModelCatalog
from ..datafolder import DataFolder
from ..engine import BackgroundTrainer


@dataclass
class AppContext:
    catalog: ModelCatalog
    trainer: BackgroundTrainer
    data: DataFolder
    store: DatasetStore
