"""Image/mask folders: segdemo's own dataset format, also the one annotations are saved in.

Layout (a folder or a zip of it)::

    classes.json        {"task": "multiclass", "classes": [...], "colors": [[r, g, b], ...]}
    images/<name>.<png|jpg|tif|...>
    masks/<name>.png    # palette or grayscale PNG of class indices, 255 = ignore

For ``multiclass`` datasets a mask value is the class index (class 0 is usually "background").
For ``binary`` datasets (one class) a mask value of 1 marks the class, 0 the rest.
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import ArchiveError, ImageError
from ..image_files import image_size, read_image
from ..mask_doctor import Finding, MaskDoctor, read_fixed_mask
from ..tasks import BINARY, MAX_LABELS, MULTICLASS
from .archive import FileTree
from .base import DatasetInfo, DataSource, PairsDataset, register_source, too_many_classes
from .transforms import train_transform

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
CLASSES_FILE = "classes.json"
DEFAULT_CROP = 256
HEADER_BYTES = 2**20   # what is read of an image to learn its size (a JPEG's may follow its EXIF block)


def parse_classes(text: str | bytes) -> DatasetInfo:
    """Read ``classes.json``; the task defaults to multiclass, colors to VOC's palette."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArchiveError(f"{CLASSES_FILE} is not valid JSON ({error})") from error
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or not data["classes"]:
        raise ArchiveError(f'{CLASSES_FILE} needs a non-empty "classes" list')
    task = data.get("task", MULTICLASS)
    if task not in (MULTICLASS, BINARY):
        raise ArchiveError(f"{CLASSES_FILE}: index masks suit a multiclass or binary task, not {task!r}")
    if len(data["classes"]) > MAX_LABELS:  # before a color is made for each
        raise ArchiveError(f"{CLASSES_FILE}: {too_many_classes(len(data['classes']))}")
    classes = [str(c) for c in data["classes"]]
    colors = data.get("colors")
    if colors is None:
        from .voc import voc_colormap
        colors = voc_colormap(max(len(classes), 2))[1:len(classes) + 1] if task == BINARY \
            else voc_colormap(len(classes))
    try:
        return DatasetInfo(name=str(data.get("name", "folder")), task=task, classes=tuple(classes),
                           colors=tuple(tuple(int(v) for v in c) for c in colors))
    except (ValueError, TypeError) as error:
        raise ArchiveError(f"{CLASSES_FILE}: {error}") from error


def classes_json(info: DatasetInfo) -> str:
    """The ``classes.json`` text for ``info``."""
    return json.dumps(info.to_dict(), indent=2)


def mask_labels(info: DatasetInfo) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """The names and colors of a mask's values: the classes of a multiclass dataset; background
    (black) and the class of a binary one (0 and 1)."""
    if info.task == BINARY:
        return ("background", info.classes[0]), ((0, 0, 0), info.colors[0])
    return info.classes, info.colors


def member_size(tree: FileTree, name: str) -> tuple[int, int]:
    """The ``(H, W)`` of the image ``name`` in ``tree``, from its header (its first megabyte;
    the whole file only when the header lies further in)."""
    try:
        return image_size(tree.head(name, HEADER_BYTES), name=name)
    except ImageError:
        return image_size(tree.read(name), name=name)


def find_pairs(names: list[str], prefix: str = "") -> list[tuple[str, str]]:
    """``(image, mask)`` relative paths, matched by file stem, for images that have a mask."""
    masks = {}
    images = {}
    for name in names:
        if not name.startswith(prefix):
            continue
        folder, _, file = name[len(prefix):].partition("/")
        if not file or "/" in file or file.startswith("."):
            continue
        stem, dot, extension = file.rpartition(".")
        if folder == "masks" and extension.lower() == "png":
            masks[stem] = name
        elif folder == "images" and "." + extension.lower() in IMAGE_EXTENSIONS:
            images[stem] = name
    return [(images[stem], masks[stem]) for stem in sorted(images) if stem in masks]


@register_source("folder", needs_path=True, markers=(CLASSES_FILE,),
                 help="images/ + masks/ + classes.json (segdemo's format): a folder or .zip")
class FolderSource(DataSource):
    """Every fifth pair (by name) is held out for validation; with fewer than five pairs, all of
    them serve for both training and validation (a teaching run on a handful of annotations)."""

    def __init__(self, path: str, *, crop_size: int = DEFAULT_CROP):
        self.tree = FileTree(path)
        prefix = self.tree.find_prefix(CLASSES_FILE)
        if prefix is None:
            raise ArchiveError(f"{self.tree.path.name} has no {CLASSES_FILE}: expected classes.json, "
                               "images/ and masks/")
        self.prefix = prefix
        super().__init__(parse_classes(self.tree.read(prefix + CLASSES_FILE)))
        self.crop_size = crop_size
        pairs = find_pairs(self.tree.names(), prefix)
        if not pairs:
            raise ArchiveError(f"{self.tree.path.name} has no image in images/ with a mask of the same "
                               "name in masks/")
        self.pairs = pairs
        if len(pairs) >= 5:
            self.val_items = pairs[::5]
            held_out = set(self.val_items)
            self.train_items = [p for p in pairs if p not in held_out]
        else:
            self.train_items = self.val_items = pairs

    def load(self, item) -> tuple[np.ndarray, np.ndarray]:
        image_name, mask_name = item
        image = read_image(self.tree.read(image_name))
        names, colors = mask_labels(self.info)
        label = read_fixed_mask(self.tree.read(mask_name), name=mask_name[len(self.prefix):], classes=names,
                                colors=colors, image_size=image.shape[:2])
        return image, (label[None] if self.info.task == BINARY else label)

    def check(self) -> list[Finding]:
        """Every mask checked by the mask doctor before a run trains on them (each decoded once,
        images only read to their headers): what it found and fixed (a loader fixes the same way),
        or :class:`~segdemo.errors.MaskError` naming every mask that cannot be used."""
        doctor = MaskDoctor(*mask_labels(self.info))
        for image_name, mask_name in self.pairs:
            doctor.read(self.tree.read(mask_name), name=mask_name[len(self.prefix):],
                        image_size=member_size(self.tree, image_name))
        return doctor.finish()

    def train_dataset(self, crop_size=None, seed=None):
        return PairsDataset(self.train_items, self.load, train_transform(crop_size or self.crop_size))

    def val_dataset(self):
        return PairsDataset(self.val_items, self.load)
