"""The mask doctor: masks other tools wrote are checked on import (Annotate zip, folder datasets, the
Train tab's zip), fixed where they have one meaning and refused, naming the files, where not."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from apphelpers import wait_for
from fakes import zip_with
from gradio_client import handle_file
from PIL import Image

from segdemo.annotations import DatasetStore
from segdemo.data import open_source
from segdemo.errors import MaskError
from segdemo.mask_doctor import FIXED, NOTED, REFUSED, MaskDoctor, findings_table
from segdemo.ui.train_tab import UPLOADED

VESSELS = {"classes": ["background", "vessel"], "colors": [[0, 0, 0], [230, 40, 40]]}
SHAPES3 = {"classes": ["background", "road", "tree"], "colors": [[0, 0, 0], [255, 0, 0], [0, 192, 0]]}


def png(array: np.ndarray, palette=None) -> bytes:
    image = Image.fromarray(array, mode="P" if palette is not None else None)
    if palette is not None:
        image.putpalette([v for color in palette for v in color] + [0] * (768 - 3 * len(palette)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def labels_of(seed: int, shape=(24, 32), classes=2) -> np.ndarray:
    """A label map with a rectangle of each class after the background, placed by ``seed``."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    for value in range(1, classes):
        y, x = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
        labels[y:y + 6, x:x + 7] = value
    return labels


def dataset_zip(path, classes: dict, masks: dict[str, bytes], sizes=None):
    """A zip in segdemo's folder format: ``classes``, one image per mask (``sizes`` by name: the
    image's (H, W), else the mask's)."""
    entries = [("classes.json", json.dumps(classes))]
    for name, data in masks.items():
        height, width = (sizes or {}).get(name) or Image.open(io.BytesIO(data)).size[::-1]
        image = np.random.default_rng(len(name)).integers(0, 255, (height, width, 3), dtype=np.uint8)
        entries += [(f"images/{name}.png", png(image)), (f"masks/{name}.png", data)]
    return zip_with(path, entries)


@pytest.fixture
def store(tmp_path):
    return DatasetStore(tmp_path / "datasets")


def test_a_zip_of_0_255_masks_is_fixed_and_the_table_says_so(store, tmp_path):
    truths = {f"m{index}": labels_of(index) for index in range(3)}
    archive = dataset_zip(tmp_path / "binary.zip", VESSELS,
                          {name: png(labels * 255) for name, labels in truths.items()})
    result = store.import_zip(archive, "binary")
    for name, labels in truths.items():
        assert np.array_equal(store.load("binary", name)[1], labels)  # 0/1 now, where 255 was
    rows = {(finding.file, finding.action) for finding in result["findings"] if "0/255" in finding.problem}
    assert rows == {(f"masks/{name}.png", FIXED) for name in truths}
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(folder)
    from_folder = store.import_zip(folder, "from-folder")   # a folder is read the same way
    assert from_folder["findings"] == result["findings"]
    assert np.array_equal(store.load("from-folder", "m1")[1], truths["m1"])
    table = findings_table(result["findings"])
    assert table["headers"] == ["file", "problem", "action"] and ["masks/m0.png"] == [
        row[0] for row in table["data"] if row[0] == "masks/m0.png"]


def test_a_binary_class_list_imports_as_background_and_its_class(store, tmp_path):
    labels = labels_of(5)
    binary = {"task": "binary", "classes": ["vessel"], "colors": [[230, 40, 40]]}
    result = store.import_zip(dataset_zip(tmp_path / "one.zip", binary, {"v": png(labels * 255)}), "one")
    assert store.info("one").classes == ("background", "vessel")
    assert np.array_equal(store.load("one", "v")[1], labels) and [f.action for f in result["findings"]] == [FIXED]


def test_rgb_masks_with_unknown_colors_are_refused_naming_the_file_and_color(store, tmp_path):
    colored = np.zeros((24, 32, 3), np.uint8)
    colored[4:10, 4:12] = (255, 0, 0)
    colored[12:20, 2:9] = (17, 99, 201)   # no class has this color
    good = np.zeros((24, 32, 3), np.uint8)
    good[4:10, 4:12] = (255, 0, 0)
    archive = dataset_zip(tmp_path / "rgb.zip", SHAPES3, {"good": png(good), "odd": png(colored)})
    with pytest.raises(MaskError, match=r"masks/odd\.png.*#1163c9") as refused:
        store.import_zip(archive, "rgb")
    assert "masks/good.png" not in str(refused.value)
    assert [f.file for f in refused.value.findings if f.action == REFUSED] == ["masks/odd.png"]
    assert store.datasets() == []   # nothing imported


def test_rgb_masks_with_class_colors_become_class_indices(store, tmp_path):
    labels = labels_of(4, classes=3)
    colors = np.asarray(SHAPES3["colors"], np.uint8)
    noisy = colors[labels].astype(np.int16) + np.random.default_rng(1).integers(-3, 4, (*labels.shape, 3))
    archive = dataset_zip(tmp_path / "colors.zip", SHAPES3, {"exact": png(colors[labels]),
                                                             "noisy": png(np.clip(noisy, 0, 255).astype(np.uint8))})
    result = store.import_zip(archive, "colors")
    assert np.array_equal(store.load("colors", "exact")[1], labels)
    assert np.array_equal(store.load("colors", "noisy")[1], labels)   # lossy saving moved colors a little
    assert {f.file for f in result["findings"] if f.action == FIXED and "RGB" in f.problem} == {
        "masks/exact.png", "masks/noisy.png"}


def test_anti_aliased_rgb_masks_have_their_edges_snapped_and_a_region_of_an_unknown_color_is_still_refused():
    """Drawing tools smooth edges: the in-between colors of a 1–2 pixel seam are snapped to the
    nearest class color (and said so); a region of a color of its own is not a seam."""
    import cv2

    smooth = np.zeros((64, 64, 3), np.uint8)
    cv2.circle(smooth, (20, 20), 12, (255, 0, 0), -1, lineType=cv2.LINE_AA)
    cv2.rectangle(smooth, (36, 30), (58, 58), (0, 192, 0), -1)
    cv2.circle(smooth, (47, 44), 8, (255, 0, 0), -1, lineType=cv2.LINE_AA)
    doctor = MaskDoctor(SHAPES3["classes"], SHAPES3["colors"])
    labels = doctor.read(png(smooth), name="smooth.png")
    sharp = np.zeros((64, 64), np.uint8)
    cv2.rectangle(sharp, (36, 30), (58, 58), 2, -1)
    for center, radius in (((20, 20), 12), ((47, 44), 8)):
        cv2.circle(sharp, center, radius, 1, -1)
    assert labels is not None and (labels == sharp).mean() > 0.98
    assert [f.action for f in doctor.findings] == [FIXED] and "snapped" in doctor.findings[0].problem
    blotted = smooth.copy()
    blotted[2:8, 40:50] = (17, 99, 201)   # 6 pixels thick: a color of its own
    doctor = MaskDoctor(SHAPES3["classes"], SHAPES3["colors"])
    assert doctor.read(png(blotted), name="blotted.png") is None and "#1163c9" in doctor.refused[0].problem


def test_a_palette_at_other_indices_is_remapped_by_color_and_values_beyond_the_classes_are_refused():
    labels = labels_of(7, classes=3)
    swapped = [(0, 0, 0), (0, 192, 0), (255, 0, 0)]   # index 1 painted in tree's color, 2 in road's
    doctor = MaskDoctor(SHAPES3["classes"], SHAPES3["colors"])
    fixed = doctor.read(png(labels, swapped), name="swapped.png")
    assert np.array_equal(fixed, np.array([0, 2, 1], np.uint8)[labels])
    assert doctor.findings[-1].action == FIXED and "remapped by color" in doctor.findings[-1].problem
    same = [(0, 0, 0), (255, 0, 0), (255, 0, 0)]   # two indices in one class's color: no one meaning
    assert np.array_equal(doctor.read(png(labels, same), name="same.png"), labels)
    assert doctor.findings[-1].action == NOTED and "read as class indices" in doctor.findings[-1].problem
    beyond = labels.copy()
    beyond[0, 0] = 7
    assert doctor.read(png(beyond), name="beyond.png") is None
    with pytest.raises(MaskError, match=r"beyond\.png: class values 7 lie beyond the last class \(2 'tree'"):
        doctor.finish()


def test_size_mismatches_are_refused_from_the_headers(store, tmp_path):
    archive = dataset_zip(tmp_path / "sizes.zip", VESSELS, {"fits": png(labels_of(1)), "wrong": png(labels_of(2))},
                          sizes={"wrong": (30, 32)})
    with pytest.raises(MaskError, match=r"masks/wrong\.png: the mask is 32×24 pixels but its image is 32×30"):
        store.import_zip(archive, "sizes")
    assert store.datasets() == []


def test_empty_masks_and_unused_classes_are_noted_and_kept(store, tmp_path):
    masks = {"empty": png(np.zeros((24, 32), np.uint8)), "roads": png(labels_of(3, classes=2))}
    result = store.import_zip(dataset_zip(tmp_path / "empty.zip", SHAPES3, masks), "empty")
    assert [item.name for item in store.items("empty")] == ["empty", "roads"]
    noted = {(f.file, f.problem) for f in result["findings"] if f.action == NOTED}
    assert ("masks/empty.png", "empty: every pixel is background") in noted
    assert any(file == "(all masks)" and "'tree'" in problem and "'road'" not in problem for file, problem in noted)


def test_a_clean_zip_has_nothing_to_report(store, tmp_path):
    masks = {name: png(labels_of(seed, classes=3), SHAPES3["colors"]) for seed, name in enumerate(("a", "b"))}
    assert store.import_zip(dataset_zip(tmp_path / "clean.zip", SHAPES3, masks), "clean")["findings"] == []


def test_a_folder_dataset_fixes_as_it_loads_and_checks_before_training(tmp_path):
    truths = {f"p{index}": labels_of(index) for index in range(2)}
    archive = dataset_zip(tmp_path / "train.zip", VESSELS, {name: png(labels * 255) for name, labels in truths.items()})
    source = open_source(f"folder:{archive}")
    assert [f.action for f in source.check()] == [FIXED, FIXED]
    for item in source.pairs:
        assert np.array_equal(source.load(item)[1], truths[item[0].split("/")[-1][:-4]])
    odd = np.zeros((24, 32, 3), np.uint8)
    odd[:5, :5] = (9, 9, 250)
    refused = open_source(f"folder:{dataset_zip(tmp_path / 'odd.zip', VESSELS, {'odd': png(odd)})}")
    with pytest.raises(MaskError, match=r"masks/odd\.png.*#0909fa"):
        refused.check()


@pytest.mark.slow
def test_the_annotate_import_shows_the_table_and_the_train_tab_fixes_and_refuses_the_same_way(app, client, tmp_path):
    truths = {f"m{index}": labels_of(index, shape=(48, 48)) for index in range(2)}
    binary = dataset_zip(tmp_path / "binary.zip", VESSELS, {name: png(labels * 255) for name, labels in truths.items()})
    _, message, table = client.predict(handle_file(str(binary)), "doctored", api_name="/annotate_import")
    assert "fixed 2 problems" in message
    assert [row[0] for row in table["data"] if row[2] == FIXED] == ["masks/m0.png", "masks/m1.png"]
    store = app.context.workspace().store
    assert all(np.array_equal(store.load("doctored", name)[1], labels) for name, labels in truths.items())
    odd = np.zeros((48, 48, 3), np.uint8)
    odd[10:20, 10:20] = (12, 34, 56)
    unknown = dataset_zip(tmp_path / "odd.zip", VESSELS, {"odd": png(odd)})
    train = ("unet", 8, UPLOADED)
    settings = (1, 4, 0.001, 32, 30)
    with pytest.raises(Exception, match=r"masks/odd\.png.*#0c2238"):
        client.predict(*train, handle_file(str(unknown)), *settings, api_name="/train_start")
    with pytest.raises(Exception, match=r"masks/odd\.png.*#0c2238"):
        client.predict(handle_file(str(unknown)), "odd", api_name="/annotate_import")
    started = client.predict(*train, handle_file(str(binary)), *settings, api_name="/train_start")
    try:
        assert "Started run" in started and "fixed 2 problems" in started and "| masks/m0.png |" in started
    finally:
        client.predict(api_name="/train_stop")
        wait_for(lambda: client.predict(api_name="/train_status")["state"] in ("stopped", "finished", "failed"))


@pytest.mark.browser
@pytest.mark.slow
def test_the_import_table_on_the_page_and_a_coco_export(page, tmp_path):
    truths = {f"b{index}": labels_of(index, shape=(48, 48)) for index in range(2)}
    truths["blank"] = np.zeros((48, 48), np.uint8)
    archive = dataset_zip(tmp_path / "page.zip", VESSELS, {name: png(labels * 255) for name, labels in truths.items()})
    page.get_by_role("tab", name="Annotate").click()
    page.get_by_text("import / export").click()
    page.set_input_files("#annotate-import-file input[type=file]", str(archive))
    page.get_by_label("name for the imported dataset").fill("on-page")
    page.wait_for_timeout(500)
    page.click("#annotate-import")
    wait_for(lambda: "fixed 2 problems" in page.inner_text("#annotate-message"), timeout=60)
    table = page.inner_text("#annotate-import-check")
    assert "masks/b0.png" in table and "0/255" in table and "empty: every pixel is background" in table
    page.click("#annotate-export-coco")
    wait_for(lambda: "on-page-coco.zip" in (page.locator("#annotate-exported a").first.get_attribute("href") or ""),
             timeout=60)
