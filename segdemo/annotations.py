"""Annotation datasets on disk: segdemo's folder format, written so nothing is ever lost.

A dataset is a folder under the store's root::

    <root>/<dataset>/classes.json
    <root>/<dataset>/images/<item>.png
    <root>/<dataset>/masks/<item>.png      # palette PNG of class indices (0 = background)
    <root>/<dataset>/history/<item>-<time>-{image,mask}.png   # earlier versions, deleted pairs
    <root>/<dataset>/unlabelled/<name>.png  # images added to be labelled later (not items: no mask yet)
    <root>/<dataset>/.thumbnails/<item>.{json,png,mask.png}   # a cache: pixel counts, small pictures

Every write goes to a temporary file and is renamed into place (a crash leaves the old file);
saving over an existing item first moves the old pair into ``history/``, and deleting moves it
there too, so an annotation is never lost silently. Every name a user gives is sanitized and
every path is checked to stay inside the root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .data.archive import FileTree
from .data.base import DatasetInfo
from .data.drive import INFO as DRIVE
from .data.folder import (
    CLASSES_FILE,
    classes_json,
    find_pairs,
    mask_labels,
    member_size,
    parse_classes,
)
from .data.shapes import CLASSES as SHAPES_CLASSES
from .data.shapes import COLORS as SHAPES_COLORS
from .data.voc import CLASSES as VOC_CLASSES
from .data.voc import COLORS as VOC_COLORS
from .errors import AnnotationError, ArchiveError, ImageError
from .filenames import MAX_NAME_LENGTH, check_name, follows_rule, safe_name
from .files import atomic_write, folder_lock, staged_write, sync_all
from .image_files import (
    check_same_size,
    image_size,
    png_bytes,
    read_image,
    read_label_map,
)
from .limits import current
from .mask_doctor import MaskDoctor
from .tasks import IGNORE_INDEX, MAX_CLASS_NAME, MAX_LABELS, MULTICLASS

THUMBNAILS = ".thumbnails"  # per pair: its pixel counts and small pictures, so views never decode it again
THUMBNAIL_SIDE = 256
UNLABELLED = "unlabelled"   # images added to a dataset without a mask, to be labelled later
IMPORTING = ".importing-"   # a dataset being imported is written under this hidden name, then renamed

# Class lists a new dataset can start from (the first class is the background).
CLASS_PRESETS: dict[str, DatasetInfo] = {
    "shapes": DatasetInfo("shapes", MULTICLASS, ("background", *SHAPES_CLASSES), ((0, 0, 0), *SHAPES_COLORS)),
    "DRIVE vessels": DatasetInfo("drive", MULTICLASS, ("background", *DRIVE.classes), ((0, 0, 0), *DRIVE.colors)),
    "Pascal VOC": DatasetInfo("voc", MULTICLASS, VOC_CLASSES, VOC_COLORS),
}


def parse_class_lines(text: str) -> DatasetInfo:
    """Classes from lines of ``name`` or ``name #rrggbb``; the first is the background."""
    from .data.voc import voc_colormap

    names, colors = [], []
    palette = voc_colormap(256)
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        match = re.match(r"^(.*?)\s*(#[0-9a-fA-F]{6})?$", line)
        name = match.group(1).strip()
        if not name:
            raise AnnotationError(f"a class needs a name: {line!r}")
        if len(name) > MAX_CLASS_NAME:
            raise AnnotationError(f"class names are at most {MAX_CLASS_NAME} characters; "
                                  f"{name[:20]!r}… is {len(name)}")
        names.append(name)
        color = match.group(2)
        colors.append(tuple(int(color[i:i + 2], 16) for i in (1, 3, 5)) if color else tuple(int(v) for v in palette[len(colors)]))
    if len(names) < 2:
        raise AnnotationError("a dataset needs at least two classes: the background and one more")
    if len(names) > MAX_LABELS:
        raise AnnotationError(f"at most {MAX_LABELS} classes fit a label mask (one byte per pixel, 255 marks "
                              "ignored pixels)")
    if len(set(colors)) != len(colors):
        raise AnnotationError("two classes share a color; every class needs its own")
    return DatasetInfo("annotations", MULTICLASS, tuple(names), tuple(colors))


def class_lines(info: DatasetInfo) -> str:
    return "\n".join(f"{name} #{''.join(f'{v:02x}' for v in color)}" for name, color in zip(info.classes, info.colors))


def _history_stamp() -> str:
    """When something was put into ``history/``: the time to the microsecond, in its file name."""
    return time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 10**6:06d}"


def _remove_stale(paths, age: float = 3600.0) -> None:
    """Remove the files and folders among ``paths`` that were last written over ``age`` seconds ago:
    what an import or an add that a crash interrupted left (a younger one may be another
    request's, still being written)."""
    for path in paths:
        try:
            if time.time() - path.stat().st_mtime > age:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        except OSError:
            pass


def _free_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3`` … (cut to the longest name allowed): the first not in ``taken``."""
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        suffix = f"-{number}"
        candidate = name[:MAX_NAME_LENGTH - len(suffix)] + suffix
    return candidate


@dataclass(frozen=True)
class Item:
    name: str
    image: Path
    mask: Path


class DatasetStore:
    """Annotation datasets under ``root`` (a data folder's ``datasets``).

    Args:
        root: the folder.
        room: called as ``room(bytes, what)`` before anything is written (``what``: "dataset" for a
            new one, "item" for a saved pair); it raises to refuse, e.g. a workspace over its quota.
    """

    def __init__(self, root: str | Path, room: Callable[[int, str], None] | None = None):
        self.root = Path(root).resolve()  # made by the first dataset: a visitor who only looks writes nothing
        self.room = room
        self._lock = folder_lock(self.root)

    def _check_room(self, size: int, what: str) -> None:
        if self.room is not None:
            self.room(size, what)

    # --- paths ------------------------------------------------------------------------------------
    def _inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise AnnotationError("that path is outside the data directory")
        return resolved

    def dataset_path(self, dataset: str) -> Path:
        path = self._inside(self.root / check_name(dataset, "dataset name"))
        if not (path / CLASSES_FILE).is_file():
            raise AnnotationError(f"there is no dataset named {dataset!r}")
        with self._lock:
            self._recover(path)
        return path

    # --- datasets ---------------------------------------------------------------------------------
    def datasets(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / CLASSES_FILE).is_file() and follows_rule(p.name))

    def create(self, dataset: str, info: DatasetInfo) -> str:
        dataset = check_name(dataset, "dataset name")
        with self._lock:
            path = self._inside(self.root / dataset)
            if (path / CLASSES_FILE).exists():
                raise AnnotationError(f"a dataset named {dataset!r} exists already")
            self._check_room(0, "dataset")
            for folder in ("images", "masks", "history"):
                (path / folder).mkdir(parents=True, exist_ok=True)
            self._write_classes(path, info, dataset)
        return dataset

    def _write_classes(self, path: Path, info: DatasetInfo, dataset: str) -> None:
        info = DatasetInfo(dataset, MULTICLASS, info.classes, info.colors)
        data = classes_json(info).encode()
        atomic_write(path / CLASSES_FILE, lambda file: file.write(data))

    def info(self, dataset: str) -> DatasetInfo:
        return parse_classes((self.dataset_path(dataset) / CLASSES_FILE).read_text())

    def set_classes(self, dataset: str, info: DatasetInfo) -> None:
        """Rename or recolor classes, or add new ones at the end; removing classes that masks use
        is refused (it would silently change annotations)."""
        path = self.dataset_path(dataset)
        with self._lock:
            current = self.info(dataset)
            if len(info.classes) < len(current.classes):
                used = self.stats(dataset)["pixels"]
                lost = [name for name, count in list(used.items())[len(info.classes):] if count]
                if lost:
                    raise AnnotationError(f"classes {lost} are used by saved masks and cannot be removed")
            self._write_classes(path, info, dataset)

    # --- items ------------------------------------------------------------------------------------
    def items(self, dataset: str) -> list[Item]:
        path = self.dataset_path(dataset)
        names = [p.relative_to(path).as_posix() for folder in ("images", "masks")
                 for p in (path / folder).iterdir() if p.is_file()]
        return [Item(Path(image).stem, path / image, path / mask) for image, mask in find_pairs(names)]

    def load(self, dataset: str, item: str) -> tuple[np.ndarray, np.ndarray]:
        """``(image (H, W, 3), labels (H, W))`` of a saved pair."""
        path = self.dataset_path(dataset)
        item = check_name(item, "item name")
        image_path, mask_path = path / "images" / f"{item}.png", path / "masks" / f"{item}.png"
        if not image_path.is_file() or not mask_path.is_file():
            raise AnnotationError(f"{dataset} has no item named {item!r}")
        return read_image(image_path), read_label_map(mask_path)

    def save(self, dataset: str, item: str, image: np.ndarray, labels: np.ndarray) -> dict:
        """Save a pair. An existing pair of that name is first kept in ``history/``.

        The pair is written as one transaction: both new files are written to temporary files,
        the old pair is linked into ``history/``, a journal names what is being replaced, and
        only then are the two files renamed into place. A crash at any point leaves either the
        old pair or the new one (the journal lets :meth:`_recover` roll back a half-placed pair).

        Returns ``{"item": name, "replaced": path of the kept previous mask, or None}``."""
        path = self.dataset_path(dataset)
        item = check_name(item, "item name")
        info = self.info(dataset)
        targets = {"image": path / "images" / f"{item}.png", "mask": path / "masks" / f"{item}.png"}
        contents = self._encoded(dataset, info, image, labels)
        image, labels = np.asarray(image, dtype=np.uint8), np.asarray(labels, dtype=np.uint8)
        with self._lock:
            items = current().dataset_items
            if not targets["mask"].exists() and len(self.items(dataset)) >= items:
                raise AnnotationError(f"{dataset} holds {items} items already, the most a dataset may (dataset_items)")
            self._check_room(sum(len(data) for data in contents.values()), "item")
            staged = {}
            try:
                for kind in targets:
                    staged[kind] = staged_write(targets[kind], lambda file, data=contents[kind]: file.write(data))
                kept = self._keep_in_history(path, item, "replaced", link=True)
                journal = path / f".pending-{item}.json"
                record = json.dumps({"item": item, "kept": {k: str(v) if v else None for k, v in kept.items()}})
                atomic_write(journal, lambda file: file.write(record.encode()))
                for kind in ("image", "mask"):
                    os.replace(staged[kind], targets[kind])
                journal.unlink()
                self._take_off_unlabelled(path, item)
            finally:
                for temporary in staged.values():
                    Path(temporary).unlink(missing_ok=True)
            self._write_summary(path, item, image, labels, self._stamp(Item(item, targets["image"], targets["mask"])))
        return {"item": item, "replaced": str(kept["mask"]) if kept.get("mask") else None}

    @staticmethod
    def _encoded(dataset: str, info: DatasetInfo, image, labels) -> dict[str, bytes]:
        """The PNGs of a pair after checking it: an RGB image within ``annotation_side``, a mask
        of its size whose values ``info`` defines."""
        image = np.asarray(image, dtype=np.uint8)
        labels = np.asarray(labels, dtype=np.uint8)
        if image.ndim != 3 or image.shape[2] != 3:
            raise AnnotationError("the image must be RGB")
        side = current().annotation_side
        if max(image.shape[:2]) > side:
            raise AnnotationError(f"the image is {image.shape[1]}×{image.shape[0]}; images up to {side} pixels a side "
                                  "can be annotated (annotation_side)")
        check_same_size(image, labels, "mask")
        used = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
        unknown = sorted(set(used.tolist()) - set(range(info.num_classes)) - {IGNORE_INDEX})
        if unknown:
            raise AnnotationError(f"the mask uses class values {unknown[:5]} that {dataset} does not define")
        return {"image": png_bytes(image), "mask": png_bytes(labels, palette=info.colors)}

    def _keep_in_history(self, path: Path, item: str, why: str, *, link: bool) -> dict:
        """Put the item's current files into history/: hard-linked (they stay in place) or moved."""
        stamp = _history_stamp()
        history = path / "history"
        history.mkdir(exist_ok=True)
        kept = {}
        for kind, folder in (("image", "images"), ("mask", "masks")):
            source = path / folder / f"{item}.png"
            kept[kind] = None
            if source.exists():
                target = history / f"{item}-{stamp}-{why}-{kind}.png"
                if link:
                    try:
                        os.link(source, target)
                    except OSError:  # no hard links on this file system: copy instead
                        shutil.copy2(source, target)
                else:
                    os.replace(source, target)
                kept[kind] = target
        return kept

    def _recover(self, path: Path) -> None:
        """Undo saves that a crash interrupted (see :meth:`save`) and drop stale temporary files."""
        for journal in path.glob(".pending-*.json"):
            try:
                record = json.loads(journal.read_text())
                item = check_name(record["item"], "item name")
            except (OSError, ValueError, KeyError):
                journal.unlink(missing_ok=True)
                continue
            for kind, folder in (("image", "images"), ("mask", "masks")):
                current = path / folder / f"{item}.png"
                old = record["kept"].get(kind)
                if old and Path(old).exists():
                    restoring = current.with_name(f".{current.name}.restore")
                    shutil.copy2(old, restoring)
                    os.replace(restoring, current)
                else:
                    current.unlink(missing_ok=True)  # the pair was new: remove its half
            journal.unlink(missing_ok=True)
        for stale in [*path.glob("images/.*.tmp"), *path.glob("masks/.*.tmp")]:
            stale.unlink(missing_ok=True)

    def delete(self, dataset: str, item: str) -> None:
        """Delete a pair (it is kept in ``history/``)."""
        path = self.dataset_path(dataset)
        item = check_name(item, "item name")
        with self._lock:
            kept = self._keep_in_history(path, item, "deleted", link=False)
            if not any(kept.values()):
                raise AnnotationError(f"{dataset} has no item named {item!r}")
            for cached in (path / THUMBNAILS).glob(f"{item}.*"):
                cached.unlink(missing_ok=True)

    def history(self, dataset: str) -> list[str]:
        return sorted(p.name for p in (self.dataset_path(dataset) / "history").glob("*.png"))

    def stats(self, dataset: str) -> dict:
        """How many pairs, and how many pixels of each class (from each pair's cached counts)."""
        info = self.info(dataset)
        counts = np.zeros(256, dtype=np.int64)
        items = self.items(dataset)
        for item in items:
            counts += self._summary(item, pictures=False)[0]
        return {"items": len(items), "pixels": {name: int(counts[i]) for i, name in enumerate(info.classes)}}

    def thumbnail(self, item: Item) -> tuple[np.ndarray, np.ndarray]:
        """A saved pair at most ``THUMBNAIL_SIDE`` pixels a side: ``(image (h, w, 3), labels (h, w))``."""
        return self._summary(item, pictures=True)[1:]

    # --- images to label (no mask yet) ----------------------------------------------------------------
    def add_images(self, dataset: str, named_images) -> list[str]:
        """Add images that have no mask yet to ``dataset``, to be labelled later. They wait in
        ``unlabelled/`` (:meth:`unlabelled`, :meth:`load_unlabelled`) until a pair of the same name
        is saved, which moves the image into ``history/`` (:meth:`save`). They are not items:
        exports and training see only the labelled pairs.

        All or nothing: every image's size is checked first, from its header (each within
        ``annotation_side``, all together within ``import_megapixels``, the dataset's images to
        label within ``dataset_items``); then each is decoded, checked against the store's
        ``room`` and written to a temporary file, one image in memory at a time; only when all
        are written are they renamed into place.

        Args:
            named_images: ``(name, image)`` pairs, the image an ``(H, W, 3)`` uint8 array or
                anything :func:`~segdemo.image_files.read_image` reads (a path, bytes). Each name
                is made to follow the naming rule (:func:`~segdemo.filenames.safe_name`); one that
                an item or another image to label has already gets a suffix (``-2``, ``-3`` …).

        Returns:
            The names the images were stored under, in order.
        """
        path = self.dataset_path(dataset)
        limits = current()
        named_images = [(safe_name(str(name), "image"), source) for name, source in named_images]
        if not named_images:
            raise AnnotationError("choose one or more images to add")
        pixels = 0
        for name, source in named_images:
            if isinstance(source, np.ndarray):  # read_image refuses what is no image, below
                height, width = source.shape[:2] if source.ndim >= 2 else (0, 0)
            else:
                height, width = image_size(source, name=name)
            if max(height, width) > limits.annotation_side:
                raise AnnotationError(f"{name} is {width}×{height}; images up to {limits.annotation_side} pixels a "
                                      "side can be annotated (annotation_side)")
            pixels += height * width
        if limits.import_megapixels > 0 and pixels > limits.import_megapixels * 1e6:
            raise AnnotationError(f"the {len(named_images)} images hold {pixels / 1e6:,.0f} megapixels; one request may "
                                  f"add {limits.import_megapixels:,.0f} here (import_megapixels): add fewer at a time")
        self._check_unlabelled_count(dataset, len(named_images))
        waiting = path / UNLABELLED
        _remove_stale(waiting.glob(".*.tmp"))   # temporary files an add that a crash interrupted left
        staged: list[Path] = []
        try:
            for name, source in named_images:
                data = png_bytes(read_image(source, name=name))
                with self._lock:
                    self._check_room(len(data), "item")   # what is staged already counts
                    staged.append(staged_write(waiting / f"{name}.png", lambda file, data=data: file.write(data)))
                del data
            with self._lock:
                self._check_unlabelled_count(dataset, len(named_images))
                taken = {*self.unlabelled(dataset), *(item.name for item in self.items(dataset))}
                names = []
                for (name, _), temporary in zip(named_images, staged):
                    name = _free_name(name, taken)
                    taken.add(name)
                    os.replace(temporary, waiting / f"{name}.png")
                    names.append(name)
        finally:
            for temporary in staged:
                temporary.unlink(missing_ok=True)
        return names

    def _check_unlabelled_count(self, dataset: str, adding: int) -> None:
        items, waiting = current().dataset_items, len(self.unlabelled(dataset))
        if waiting + adding > items:
            raise AnnotationError(f"{dataset} has {waiting} images to label; with {adding} more it would pass "
                                  f"{items}, the most a dataset may hold (dataset_items)")

    def unlabelled(self, dataset: str) -> list[str]:
        """The names of ``dataset``'s images waiting to be labelled (added by :meth:`add_images`)."""
        path = self.dataset_path(dataset)
        return sorted(file.stem for file in (path / UNLABELLED).glob("*.png")
                      if follows_rule(file.stem) and not (path / "masks" / file.name).exists())

    def load_unlabelled(self, dataset: str, name: str) -> np.ndarray:
        """The ``(H, W, 3)`` image ``name`` waiting to be labelled in ``dataset``."""
        path = self.dataset_path(dataset) / UNLABELLED / f"{check_name(name, 'image name')}.png"
        if not path.is_file():
            raise AnnotationError(f"{dataset} has no image to label named {name!r}")
        return read_image(path)

    def _take_off_unlabelled(self, path: Path, item: str) -> None:
        """Move the image to label named ``item`` (if there is one) into ``history/``: it has a mask now."""
        waiting = path / UNLABELLED / f"{item}.png"
        if waiting.exists():
            (path / "history").mkdir(exist_ok=True)
            os.replace(waiting, path / "history" / f"{item}-{_history_stamp()}-labelled-image.png")

    # --- the cache of pixel counts and thumbnails ------------------------------------------------------
    @staticmethod
    def _stamp(item: Item) -> list[int]:
        """What a pair's cache entry is valid for: its two files' sizes and modification times."""
        image, mask = item.image.stat(), item.mask.stat()
        return [image.st_size, image.st_mtime_ns, mask.st_size, mask.st_mtime_ns]

    def _summary(self, item: Item, *, pictures: bool) -> tuple:
        """``(pixel counts (256,), image thumbnail, labels thumbnail)`` of a pair, from its cache
        entry when that is valid for the pair as saved, else decoded from the pair (one pair in
        memory at a time) and cached. Without ``pictures`` only the counts are wanted."""
        cache = item.image.parent.parent / THUMBNAILS
        try:
            record = json.loads((cache / f"{item.name}.json").read_text())
            if record["stamp"] == self._stamp(item):
                counts = np.zeros(256, dtype=np.int64)
                for value, count in record["counts"].items():
                    counts[int(value)] = int(count)
                if not pictures:
                    return counts, None, None
                return (counts, read_image(cache / f"{item.name}.png"),
                        read_label_map(cache / f"{item.name}.mask.png"))
        except (OSError, ValueError, KeyError, TypeError, ImageError):
            pass  # none yet, or the pair changed, or a damaged entry: made again
        stamp = self._stamp(item)  # before reading: a save meanwhile leaves an entry that is made again
        image, labels = read_image(item.image), read_label_map(item.mask)
        return self._write_summary(item.image.parent.parent, item.name, image, labels, stamp)

    def _write_summary(self, path: Path, name: str, image: np.ndarray, labels: np.ndarray, stamp: list[int]) -> tuple:
        """Cache the counts and thumbnails of the pair ``name`` of the dataset at ``path``, valid
        for its files as ``stamp`` describes them (a cache: written without fsync, rebuilt if lost)."""
        counts = np.bincount(labels.ravel(), minlength=256).astype(np.int64)
        scale = min(1.0, THUMBNAIL_SIDE / max(image.shape[:2]))
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        small_image = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image
        small_labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST) if scale < 1 else labels
        cache = path / THUMBNAILS
        try:
            cache.mkdir(exist_ok=True)
            record = {"stamp": stamp, "counts": {str(v): int(counts[v]) for v in np.flatnonzero(counts)}}
            for target, data in ((cache / f"{name}.png", png_bytes(small_image)),
                                 (cache / f"{name}.mask.png", png_bytes(small_labels)),
                                 (cache / f"{name}.json", json.dumps(record).encode())):
                temporary = target.with_name(f".{target.name}.tmp")
                temporary.write_bytes(data)
                os.replace(temporary, target)
        except OSError:
            pass  # a full disk loses only the cache
        return counts, small_image, small_labels

    # --- exchange ---------------------------------------------------------------------------------
    def export_zip(self, dataset: str, target: str | Path) -> Path:
        """The dataset as a zip in segdemo's folder format (``classes.json``, ``images/``, ``masks/``)."""
        path = self.dataset_path(dataset)
        target = Path(target)

        def write(file):
            with zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.write(path / CLASSES_FILE, CLASSES_FILE)
                for item in self.items(dataset):
                    archive.write(item.image, f"images/{item.name}.png")
                    archive.write(item.mask, f"masks/{item.name}.png")

        atomic_write(target, write)
        return target

    def export_voc(self, dataset: str, target: str | Path, *, val_every: int = 5) -> Path:
        """The dataset in Pascal VOC's layout (JPEG images, palette PNG labels, split lists)."""
        items = self.items(dataset)
        val = {item.name for item in items[::val_every]} if len(items) >= val_every else set()
        base = "VOCdevkit/VOC2012"
        target = Path(target)

        def write(file):
            with zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as archive:
                for item in items:
                    image = read_image(item.image)
                    ok, jpeg = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
                    archive.writestr(f"{base}/JPEGImages/{item.name}.jpg", jpeg.tobytes())
                    archive.write(item.mask, f"{base}/SegmentationClass/{item.name}.png")
                train = [i.name for i in items if i.name not in val]
                archive.writestr(f"{base}/ImageSets/Segmentation/train.txt", "\n".join(train) + "\n")
                archive.writestr(f"{base}/ImageSets/Segmentation/val.txt", "\n".join(sorted(val)) + "\n")
                archive.writestr(f"{base}/classes.json", (self.dataset_path(dataset) / CLASSES_FILE).read_text())

        atomic_write(target, write)
        return target

    def export_coco(self, dataset: str, target: str | Path) -> Path:
        """The dataset as a zip in COCO's instance format: ``annotations/instances.json`` and
        ``images/<item>.png``.

        Categories are the dataset's classes after the background, each with its class index as
        its id. Each connected region (8-connected) of a class in a label map is one annotation, as
        COCO's instances are one object each (a detector's box and area are per object); two
        touching objects of one class are one region in a label map and stay one annotation.
        ``segmentation`` is the region's uncompressed-size RLE from ``pycocotools.mask.encode``,
        ``area`` and ``bbox`` ``[x, y, w, h]`` come from it, ``iscrowd`` is 0. Painting every
        annotation's mask with its category gives back the label map exactly; ignored pixels
        (255) belong to no object and are not exported."""
        from pycocotools import mask as coco_mask  # only an export needs it

        info = self.info(dataset)
        items = self.items(dataset)
        target = Path(target)

        def write(file):
            images, annotations = [], []
            with zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as archive:
                for image_id, item in enumerate(items, start=1):
                    labels = read_label_map(item.mask)
                    height, width = labels.shape
                    images.append({"id": image_id, "file_name": f"{item.name}.png", "width": width, "height": height})
                    archive.write(item.image, f"images/{item.name}.png")
                    for category in np.flatnonzero(np.bincount(labels.ravel(), minlength=256)[1:len(info.classes)]) + 1:
                        count, regions, stats, _ = cv2.connectedComponentsWithStats(
                            (labels == category).astype(np.uint8), connectivity=8)
                        region = np.zeros((height, width), np.uint8, order="F")
                        for index in range(1, count):
                            x, y, w, h = (int(v) for v in stats[index, :4])
                            region[y:y + h, x:x + w] = regions[y:y + h, x:x + w] == index
                            rle = coco_mask.encode(region)
                            region[y:y + h, x:x + w] = 0   # only its box was written: the rest is 0 already
                            annotations.append({
                                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(category),
                                "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
                                "area": int(coco_mask.area(rle)),
                                "bbox": [float(v) for v in coco_mask.toBbox(rle)], "iscrowd": 0})
                categories = [{"id": index, "name": name, "supercategory": "object"}
                              for index, name in enumerate(info.classes) if index]
                document = {"info": {"description": f"{dataset}, exported by segdemo"}, "licenses": [],
                            "images": images, "categories": categories, "annotations": annotations}
                archive.writestr("annotations/instances.json", json.dumps(document))

        atomic_write(target, write)
        return target

    def import_zip(self, zip_path: str | Path, dataset: str) -> dict:
        """Create dataset ``dataset`` from a zip in segdemo's folder format.

        Everything that can be known without decoding is checked first: the number of files
        (from the zip's last record, at most two per ``dataset_items`` pair), names, the layout,
        and every image's and mask's size from its header (``annotation_side``; all images
        together within ``import_megapixels``), so a zip of
        100,000 files or of 8000² PNGs is refused before one pixel is decoded. Then the pairs are
        decoded, checked and written one at a time (memory for one pair) into a hidden folder
        that becomes the dataset only once all are in: a refusal or a crash leaves no dataset.

        Every mask goes through :class:`segdemo.mask_doctor.MaskDoctor` as it is decoded (once):
        what can be fixed unambiguously is (0/255 masks, class colors instead of indices, a
        palette at other indices), the rest is refused, naming every such file, with
        :class:`~segdemo.errors.MaskError` (image/mask size mismatches from the headers, before
        any pixel is decoded). A binary dataset (one class) becomes background + its class.

        Returns ``{"dataset": name, "items": pairs, "findings": [Finding, ...]}``."""
        dataset = check_name(dataset, "dataset name")
        limits = current()
        _remove_stale(self.root.glob(IMPORTING + "*") if self.root.is_dir() else [])   # interrupted imports
        tree = FileTree(zip_path, max_files=2 * limits.dataset_items + 16,
                        files_limit=f"two files for each of at most {limits.dataset_items:,} pairs, dataset_items")
        try:
            prefix = tree.find_prefix(CLASSES_FILE)
            if prefix is None:
                raise ArchiveError("the zip has no classes.json: expected classes.json, images/ and masks/")
            info = parse_classes(tree.read(prefix + CLASSES_FILE))
            info = DatasetInfo(info.name, MULTICLASS, *mask_labels(info))
            doctor = MaskDoctor(info.classes, info.colors)
            if len(info.classes) > 255:
                raise ArchiveError(f"classes.json names {len(info.classes)} classes; at most 255 fit a label mask")
            pairs = find_pairs(tree.names(), prefix)
            if not pairs:
                raise ArchiveError("the zip has no image in images/ with a mask of the same name in masks/")
            if len(pairs) > limits.dataset_items:
                raise ArchiveError(f"the zip holds {len(pairs):,} pairs; a dataset may hold {limits.dataset_items:,} "
                                   "(dataset_items)")
            items = [(check_name(Path(image_name).stem, "item name"), image_name, mask_name)
                     for image_name, mask_name in pairs]
            pixels = sum(self._declared_pixels(tree, image_name, mask_name, limits.annotation_side, doctor,
                                               mask_name[len(prefix):])
                         for item, image_name, mask_name in items)
            doctor.raise_refusals()   # sizes that disagree, known from the headers alone
            if limits.import_megapixels > 0 and pixels > limits.import_megapixels * 1e6:
                raise ArchiveError(f"the zip's {len(items):,} images hold {pixels / 1e6:,.0f} megapixels; one import may "
                                   f"decode {limits.import_megapixels:,.0f} here (import_megapixels): import fewer or "
                                   "smaller images at a time")
            with self._lock:
                if (self.root / dataset / CLASSES_FILE).exists():
                    raise AnnotationError(f"a dataset named {dataset!r} exists already")
                self._check_room(sum(tree.size(name) for _, *names in items for name in names), "dataset")
            staging = self._inside(self.root / f"{IMPORTING}{dataset}-{os.getpid()}-{time.time_ns()}")
            try:
                for folder in ("images", "masks", "history"):
                    (staging / folder).mkdir(parents=True)
                self._write_classes(staging, info, dataset)
                written = [staging / folder for folder in ("images", "masks")]
                for item, image_name, mask_name in items:
                    image = read_image(tree.read(image_name), name=image_name)
                    labels = doctor.read(tree.read(mask_name), name=mask_name[len(prefix):],
                                         image_size=image.shape[:2])
                    if labels is None:
                        continue   # refused: named with the others once all are read
                    for kind, data in self._encoded(dataset, info, image, labels).items():
                        target = staging / f"{kind}s" / f"{item}.png"
                        target.write_bytes(data)   # hidden until the folder is renamed: no temporary file
                        written.append(target)
                    self._write_summary(staging, item, image, labels, self._stamp(
                        Item(item, staging / "images" / f"{item}.png", staging / "masks" / f"{item}.png")))
                    del image, labels
                findings = doctor.finish()   # refuses here, naming every mask that cannot be used
                sync_all(written)   # all durable before the dataset appears
                with self._lock:
                    target = self._inside(self.root / dataset)
                    if (target / CLASSES_FILE).exists():
                        raise AnnotationError(f"a dataset named {dataset!r} exists already")
                    self._check_room(0, "dataset")
                    os.replace(staging, target)   # an empty folder of that name is replaced
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            tree.close()
        return {"dataset": dataset, "items": len(items), "findings": findings}

    @staticmethod
    def _declared_pixels(tree: FileTree, image_name: str, mask_name: str, side: int, doctor: MaskDoctor,
                         shown: str) -> int:
        """The pixels of a pair's image, from its header; an image or mask larger than ``side`` is
        refused at once, a mask whose size differs from its image's recorded by ``doctor``
        (``shown``: the mask's name there)."""
        (height, width), mask_size = member_size(tree, image_name), member_size(tree, mask_name)
        for name, (big_height, big_width) in ((image_name, (height, width)), (mask_name, mask_size)):
            if max(big_height, big_width) > side:
                raise ArchiveError(f"{name} is {big_width}×{big_height}; images up to {side} pixels a side can be "
                                   "annotated (annotation_side)")
        doctor.check_size(shown, mask_size, (height, width))
        return height * width
