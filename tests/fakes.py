"""Small datasets that the tests write themselves, in the official layouts of DRIVE, Pascal VOC
2012 and segdemo's image/mask folders (nothing is downloaded)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from segdemo.data.voc import voc_colormap


def _disk(height, width, row, col, radius):
    rows, cols = np.ogrid[:height, :width]
    return (rows - row) ** 2 + (cols - col) ** 2 < radius ** 2


def write_drive(root: Path, *, train_numbers=(21, 22, 23), test_numbers=(1, 2), size=(60, 64),
                seed=0) -> Path:
    """A DRIVE tree: RGB .tif images, .gif manual annotations (0/255), .gif field-of-view masks."""
    rng = np.random.default_rng(seed)
    height, width = size
    for split, numbers in (("training", train_numbers), ("test", test_numbers)):
        for folder in ("images", "1st_manual", "mask"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for number in numbers:
            vessels = np.zeros((height, width), dtype=bool)
            for _ in range(3):  # a few straight "vessels"
                row = rng.integers(5, height - 5)
                vessels[row:row + 2, :] = True
                col = rng.integers(5, width - 5)
                vessels[:, col:col + 2] = True
            fov = _disk(height, width, height / 2, width / 2, min(height, width) * 0.48)
            image = np.zeros((height, width, 3), dtype=np.uint8)
            image[..., 0] = 150 + rng.integers(0, 40, (height, width))
            image[..., 1] = np.where(vessels, 30, 90)
            image[~fov] = 0
            Image.fromarray(image).save(root / split / "images" / f"{number:02d}_{split}.tif")
            Image.fromarray((vessels * 255).astype(np.uint8)).convert("P").save(
                root / split / "1st_manual" / f"{number:02d}_manual1.gif")
            Image.fromarray((fov * 255).astype(np.uint8)).convert("P").save(
                root / split / "mask" / f"{number:02d}_{split}_mask.gif")
    return root


def write_voc(root: Path, *, train_ids=("2007_000032", "2007_000039", "2007_000063"),
              val_ids=("2007_000033", "2007_000042"), seed=0, sizes=((48, 64), (50, 40))) -> Path:
    """A VOCdevkit/VOC2012 tree: JPEG images, palette PNG labels with 255 borders, split lists."""
    rng = np.random.default_rng(seed)
    base = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    palette = voc_colormap(256)
    for index, image_id in enumerate((*train_ids, *val_ids)):
        height, width = sizes[index % len(sizes)]
        label = np.zeros((height, width), dtype=np.uint8)
        cls = int(rng.integers(1, 21))
        disk = _disk(height, width, height / 2, width / 2, min(height, width) / 3)
        label[disk] = cls
        border = disk & ~_disk(height, width, height / 2, width / 2, min(height, width) / 3 - 1.5)
        label[border] = 255
        image = np.full((height, width, 3), 40, dtype=np.uint8)
        image[disk] = palette[cls]
        Image.fromarray(image).save(base / "JPEGImages" / f"{image_id}.jpg", quality=95)
        png = Image.fromarray(label, mode="P")
        png.putpalette(palette.reshape(-1).tolist())
        png.save(base / "SegmentationClass" / f"{image_id}.png")
    (base / "ImageSets/Segmentation/train.txt").write_text("\n".join(train_ids) + "\n")
    (base / "ImageSets/Segmentation/val.txt").write_text("\n".join(val_ids) + "\n")
    return root


def write_folder(root: Path, *, count=4, size=(40, 48), classes=("background", "square", "disk"),
                 seed=0) -> Path:
    """segdemo's folder format: classes.json, images/*.png, masks/*.png (palette)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    colors = voc_colormap(len(classes)).tolist()
    (root / "classes.json").write_text(json.dumps({"task": "multiclass", "classes": list(classes),
                                                   "colors": colors}))
    height, width = size
    for index in range(count):
        label = np.zeros((height, width), dtype=np.uint8)
        top, left = rng.integers(2, height // 2), rng.integers(2, width // 2)
        label[top:top + 10, left:left + 10] = 1
        label[_disk(height, width, height - 12, width - 12, 6)] = min(2, len(classes) - 1)
        image = (np.asarray(colors, dtype=np.uint8)[label] // 2 + 30).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"sample_{index}.png")
        png = Image.fromarray(label, mode="P")
        png.putpalette([v for c in colors for v in c])
        png.save(root / "masks" / f"sample_{index}.png")
    return root


def zip_tree(folder: Path, zip_path: Path, *, top: str | None = None) -> Path:
    """Zip a folder, optionally under a top-level directory name (as datasets are often shipped)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                name = path.relative_to(folder).as_posix()
                archive.write(path, f"{top}/{name}" if top else name)
    return zip_path


def zip_with(path: Path, entries) -> Path:
    """A zip of ``(name, data)`` entries written as given (hostile names included)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return path
