"""Data sources: synthetic shapes, DRIVE, Pascal VOC 2012 and image/mask folders.

Open one by its spec with :func:`open_source` (``"shapes"``, ``"drive:PATH"``, ``"voc:PATH"``,
``"folder:PATH"``), or find the spec of an uploaded folder or zip with :func:`spec_for_archive`;
each describes itself through :class:`DatasetInfo`.
"""

from .archive import FileTree
from .base import (DatasetInfo, DataSource, PairsDataset, open_source, parse_spec, source_entries, source_names,
                   spec_for_archive)
# Importing registers the sources. An upload is matched against their layouts in this order:
# segdemo's own format first (the Annotate tab's VOC export carries its classes.json too).
from . import shapes, folder, voc, drive  # noqa: F401,E402

__all__ = [
    "DatasetInfo", "DataSource", "FileTree", "PairsDataset", "open_source", "parse_spec", "source_entries",
    "source_names", "spec_for_archive", "shapes", "drive", "voc", "folder",
]
