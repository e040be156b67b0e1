"""DRIVE: retinal vessel segmentation (binary), from its official folder layout or a zip of it.

Layout (``training/`` and ``test/``, 565×584 RGB images)::

    training/images/21_training.tif   training/1st_manual/21_manual1.gif   training/mask/21_training_mask.gif
    test/images/01_test.tif           test/1st_manual/01_manual1.gif       test/mask/01_test_mask.gif

The target is ``(1, H, W)``: 1 on vessels, 0 elsewhere, and 255 (ignored) outside the camera's
field of view, so losses and metrics only count the retina.
"""

from __future__ import annotations

import numpy as np

from ..errors import ArchiveError
from ..image_files import check_same_size, read_image, read_label_map
from ..tasks import BINARY, IGNORE_INDEX
from .archive import FileTree
from .base import DatasetInfo, DataSource, PairsDataset, register_source
from .transforms import train_transform

# Cyan: a red vessel colour vanished on a red fundus (and is the error map's false-positive red).
INFO = DatasetInfo(name="drive", task=BINARY, classes=("vessel",), colors=((0, 220, 230),))
SPLITS = ("training", "test")
DEFAULT_CROP = 256


def _stem(name: str) -> str:
    return name.rsplit("/", 1)[-1].rsplit(".", 1)[0]


def vessel_target(manual: np.ndarray, fov: np.ndarray | None) -> np.ndarray:
    """Manual annotation (0/255 or 0/1) and field-of-view mask → ``(1, H, W)`` uint8 target."""
    target = (manual > (127 if manual.max() > 1 else 0)).astype(np.uint8)
    if fov is not None:
        target[fov == 0] = IGNORE_INDEX
    return target[None]


@register_source("drive", needs_path=True, markers=("training/images/", "test/images/"),
                 help="DRIVE retinal vessels: a folder or .zip in the official layout")
class DriveSource(DataSource):
    """DRIVE's training split for training (random crops, flips) and its test split for validation
    (whole images). If the test split has no manual annotations, the last four training images
    are held out instead."""

    def __init__(self, path: str, *, crop_size: int = DEFAULT_CROP):
        super().__init__(INFO)
        self.tree = FileTree(path)
        self.crop_size = crop_size
        prefix = self.tree.find_prefix("training/images/")
        if prefix is None:
            prefix = self.tree.find_prefix("test/images/")
        if prefix is None:
            raise ArchiveError(f"{self.tree.path.name} is not in DRIVE's layout: no training/images/ "
                               "or test/images/ folder")
        self.prefix = prefix
        self.samples = {split: self._find(split) for split in SPLITS}
        train, val = self.samples["training"], self.samples["test"]
        if not train and not val:
            raise ArchiveError(f"{self.tree.path.name} holds no DRIVE image with a 1st_manual annotation")
        if not val:
            train, val = train[:-4] or train, train[-4:]
        if not train:
            train = val
        self.train_items, self.val_items = train, val

    def _find(self, split: str) -> list[tuple[str, str, str | None]]:
        """(image, manual, fov mask or None) paths of one split, matched by the leading number."""
        names = self.tree.names()
        base = f"{self.prefix}{split}/"
        by_folder: dict[str, dict[str, str]] = {"images": {}, "1st_manual": {}, "mask": {}}
        for name in names:
            if not name.startswith(base):
                continue
            folder, _, file = name[len(base):].partition("/")
            if folder in by_folder and file and "/" not in file and not file.startswith("."):
                by_folder[folder][_stem(file).split("_")[0]] = name
        found = []
        for number, image in sorted(by_folder["images"].items()):
            manual = by_folder["1st_manual"].get(number)
            if manual is not None:
                found.append((image, manual, by_folder["mask"].get(number)))
        return found

    def load(self, item) -> tuple[np.ndarray, np.ndarray]:
        image_name, manual_name, fov_name = item
        image = read_image(self.tree.read(image_name))
        manual = read_label_map(self.tree.read(manual_name))
        check_same_size(image, manual, f"manual annotation {manual_name.rsplit('/', 1)[-1]}")
        fov = None
        if fov_name is not None:
            fov = read_label_map(self.tree.read(fov_name))
            check_same_size(image, fov, f"field-of-view mask {fov_name.rsplit('/', 1)[-1]}")
        return image, vessel_target(manual, fov)

    def train_dataset(self, crop_size=None, seed=None):
        transform = train_transform(crop_size or self.crop_size, flip=True, vertical_flip=True)
        return PairsDataset(self.train_items, self.load, transform, cache=True)

    def val_dataset(self):
        return PairsDataset(self.val_items, self.load, cache=True)

    def held_bytes(self) -> int:
        return 2 * PairsDataset.CACHE_BYTES  # both splits cache their decoded pairs
