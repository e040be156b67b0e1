"""COCO export: every saved label map comes back exactly from the exported instances, decoded by
pycocotools itself."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from segdemo.annotations import CLASS_PRESETS, DatasetStore
from segdemo.data import shapes


def shapes_labels(count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shapes images and their label maps (the later of overlapping shapes on top)."""
    images, masks = shapes.generate(count, size, seed=seed)
    labels = np.zeros((count, size, size), np.uint8)
    for channel in range(masks.shape[1]):
        labels[masks[:, channel] == 1] = channel + 1
    return images, labels


def label_maps_from_coco(archive, tmp_path) -> dict[str, np.ndarray]:
    """Each image's label map painted from its instances, as pycocotools reads them."""
    with zipfile.ZipFile(archive) as opened:
        names = opened.namelist()
        (tmp_path / "instances.json").write_bytes(opened.read("annotations/instances.json"))
    coco = COCO(str(tmp_path / "instances.json"))
    rebuilt = {}
    for image in coco.loadImgs(coco.getImgIds()):
        assert f"images/{image['file_name']}" in names
        labels = np.zeros((image["height"], image["width"]), np.uint8)
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            mask = coco_mask.decode(coco.annToRLE(annotation)).astype(bool)
            assert not (labels[mask] != 0).any()   # instances of a label map never overlap
            assert annotation["area"] == mask.sum() and annotation["iscrowd"] == 0
            x, y, w, h = annotation["bbox"]
            rows, columns = np.nonzero(mask)
            assert (x, y, w, h) == (columns.min(), rows.min(), columns.max() - columns.min() + 1,
                                    rows.max() - rows.min() + 1)
            labels[mask] = annotation["category_id"]
        rebuilt[image["file_name"][:-4]] = labels
    return rebuilt


def test_export_then_pycocotools_decode_gives_exactly_the_saved_label_maps(tmp_path):
    store = DatasetStore(tmp_path / "datasets")
    store.create("shapes", CLASS_PRESETS["shapes"])
    images, labels = shapes_labels(3, 72, seed=21)
    labels[0, 5:9, 5:9] = labels[0, 60:64, 60:64] = 2   # one class in two separate regions
    labels[2] = 0                                         # an empty label map: no instance
    for index in range(3):
        store.save("shapes", f"item-{index}", images[index], labels[index])
    archive = store.export_coco("shapes", tmp_path / "shapes-coco.zip")
    document = json.loads(zipfile.ZipFile(archive).read("annotations/instances.json"))
    assert [c["name"] for c in document["categories"]] == list(CLASS_PRESETS["shapes"].classes[1:])
    assert [c["id"] for c in document["categories"]] == list(range(1, 7))
    regions_of_2 = [a for a in document["annotations"] if a["image_id"] == 1 and a["category_id"] == 2]
    assert len(regions_of_2) >= 2   # one instance per connected region
    rebuilt = label_maps_from_coco(archive, tmp_path)
    assert sorted(rebuilt) == ["item-0", "item-1", "item-2"]
    for name, painted in rebuilt.items():
        assert np.array_equal(painted, store.load("shapes", name)[1]), name


@pytest.mark.slow
def test_annotate_export_coco_over_the_api(app, client, tmp_path):
    client.predict("coco", "DRIVE vessels", "", api_name="/annotate_create")
    store = app.context.workspace().store
    images, labels = shapes_labels(2, 64, seed=3)
    for index in range(2):
        store.save("coco", f"v{index}", images[index], np.minimum(labels[index], 1))
    archive = client.predict("coco", api_name="/annotate_export_coco")
    rebuilt = label_maps_from_coco(archive, tmp_path)
    for name, painted in rebuilt.items():
        assert np.array_equal(painted, store.load("coco", name)[1])
    with zipfile.ZipFile(archive) as opened, opened.open("images/v0.png") as image:
        assert Image.open(image).size == (64, 64)
    with pytest.raises(Exception, match="no dataset named"):
        client.predict("missing", api_name="/annotate_export_coco")
