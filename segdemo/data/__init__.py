"""Data sources: synthetic shapes, DRIVE, Pascal VOC 2012 and image/mask folders.

Open one by its spec with :func:`open_source` (``"shapes"``, ``"drive:PATH"``, ``"voc:PATH"``,
``"folder:PATH"``); each describes itself through :class:`DatasetInfo`.
"""

from .archive import ArchiveError, FileTree
from .base import DatasetInfo, DataSource, PairsDataset, open_source, parse_spec, source_entries, source_names
from . import shapes, drive, voc, folder  # noqa: F401  (registers the sources)

__all__ = [
    "ArchiveError", "DatasetInfo", "DataSource", "FileTree", "PairsDataset", "open_source",
    "parse_spec", "source_entries", "source_names", "shapes", "drive", "voc", "folder",
]
