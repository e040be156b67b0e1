"""Pascal VOC 2012 segmentation (21 classes, multiclass), from its official layout or a zip of it.

Layout::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png      # palette PNG: pixel value = class index
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt

Labels are palette PNGs whose pixel values already are class indices 0–20, with 255 on object
borders ("ignore"): they are read as indices directly, never through an RGB lookup table.
"""

from __future__ import annotations

import numpy as np

from ..errors import ArchiveError, ImageError
from ..image_files import check_same_size, read_image, read_label_map
from ..tasks import IGNORE_INDEX, MULTICLASS
from .archive import FileTree
from .base import DatasetInfo, DataSource, PairsDataset, register_source
from .transforms import train_transform

CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def voc_colormap(count: int = 256) -> np.ndarray:
    """VOC's palette: the bits of each index spread over R, G, B from the high bit down.

    Returns ``(count, 3)`` uint8 (index 255, "ignore", is drawn light beige as in VOC's PNGs)."""
    index = np.arange(count)
    colors = np.zeros((count, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            colors[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return colors.astype(np.uint8)


COLORS = tuple(tuple(int(v) for v in c) for c in voc_colormap(len(CLASSES)))
INFO = DatasetInfo(name="voc", task=MULTICLASS, classes=CLASSES, colors=COLORS)
DEFAULT_CROP = 256


@register_source("voc", needs_path=True, markers=("SegmentationClass/",),
                 help="Pascal VOC 2012: a folder or .zip in the official layout")
class VocSource(DataSource):
    """VOC's ``train`` list for training (random rescale 0.5–2×, crop/pad, flip) and ``val`` for
    validation (whole images, which differ in size). Without ``ImageSets`` lists, every tenth
    labelled image is held out for validation."""

    def __init__(self, path: str, *, crop_size: int = DEFAULT_CROP):
        super().__init__(INFO)
        self.tree = FileTree(path)
        self.crop_size = crop_size
        prefix = self.tree.find_prefix("SegmentationClass/")
        if prefix is None:
            raise ArchiveError(f"{self.tree.path.name} is not in VOC's layout: no SegmentationClass/ folder")
        self.prefix = prefix
        names = set(self.tree.names())
        labelled = sorted(
            n[len(prefix) + len("SegmentationClass/"):-4] for n in names
            if n.startswith(prefix + "SegmentationClass/") and n.endswith(".png")
        )
        labelled = [i for i in labelled if f"{prefix}JPEGImages/{i}.jpg" in names]
        if not labelled:
            raise ArchiveError(f"{self.tree.path.name} has no JPEGImages/<id>.jpg with a SegmentationClass/<id>.png")
        labelled_set = set(labelled)
        lists = {}
        for split in ("train", "val"):
            list_name = f"{prefix}ImageSets/Segmentation/{split}.txt"
            if list_name in names:
                wanted = self.tree.read(list_name).decode("utf-8", "replace").split()
                lists[split] = [i for i in wanted if i in labelled_set]
        if lists.get("train") and lists.get("val"):
            self.train_items, self.val_items = lists["train"], lists["val"]
        else:
            self.val_items = labelled[::10]
            held_out = set(self.val_items)
            self.train_items = [i for i in labelled if i not in held_out] or labelled

    def load(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        image = read_image(self.tree.read(f"{self.prefix}JPEGImages/{image_id}.jpg"))
        label = read_label_map(self.tree.read(f"{self.prefix}SegmentationClass/{image_id}.png"))
        check_same_size(image, label, f"label {image_id}.png")
        unknown = (label >= len(CLASSES)) & (label != IGNORE_INDEX)
        if unknown.any():
            raise ImageError(f"label {image_id}.png holds class values {sorted(set(label[unknown].tolist()))[:5]} "
                             f"outside 0–{len(CLASSES) - 1} and 255")
        return image, label

    def train_dataset(self, crop_size=None, seed=None):
        crop = crop_size or self.crop_size
        transform = train_transform(crop, flip=True, scale=(0.5, 2.0), base_size=crop)
        return PairsDataset(self.train_items, self.load, transform)

    def val_dataset(self):
        return PairsDataset(self.val_items, self.load)
