"""The Annotate tab through its API endpoints, against the real app."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

from apphelpers import wait_for
from segdemo.painting import layer_from_labels
from segdemo.data import shapes

pytestmark = pytest.mark.slow


def painted_layer(tmp_path: Path, labels: np.ndarray, colors, name="layer.png") -> Path:
    path = tmp_path / name
    Image.fromarray(layer_from_labels(labels, colors), "RGBA").save(path)
    return path


def editor(background: Path | None, layers: list[Path]) -> dict:
    return {"background": handle_file(str(background)) if background else None,
            "layers": [handle_file(str(p)) for p in layers], "composite": None}


def test_two_classes_save_reopen_round_trip_and_resave_keeps_the_old(app, client, tmp_path):
    lines = "background\nroad #ff0000\ntree #00c000"
    client.predict("two-classes", "custom (edit the list)", lines, api_name="/annotate_create")
    image = shapes.generate(1, 64, seed=5)[0][0]
    image_path = tmp_path / "photo.png"
    Image.fromarray(image).save(image_path)
    client.predict("two-classes", handle_file(str(image_path)), api_name="/annotate_open_upload")
    labels = np.zeros((64, 64), dtype=np.uint8)
    labels[5:20, 5:30] = 1
    labels[30:60, 10:50] = 2
    colors = [(0, 0, 0), (255, 0, 0), (0, 192, 0)]
    layer = painted_layer(tmp_path, labels, colors)
    message = client.predict("two-classes", editor(image_path, [layer]), "first", api_name="/annotate_save")[0]
    assert "Saved" in message
    store = app.context.workspace().store
    saved_image, saved_labels = store.load("two-classes", "first")
    assert np.array_equal(saved_labels, labels) and np.array_equal(saved_image, image)
    # reopen: the editor gets the same painting back
    reopened = client.predict("two-classes", "first", api_name="/annotate_open_item")
    shown = np.asarray(Image.open(reopened[0]["background"]).convert("RGB"))
    assert reopened[0]["layers"] == [] and (shown[labels == 0] == image[labels == 0]).all()
    assert (shown[labels == 2] != image[labels == 2]).any()   # the labels drawn over the image
    back = np.asarray(Image.open(client.predict("two-classes", api_name="/annotate_labels")))
    assert np.array_equal(back, labels)
    # re-save a change: the earlier version is kept
    changed = labels.copy()
    changed[0:4, 0:4] = 2
    message = client.predict("two-classes", editor(image_path, [painted_layer(tmp_path, changed, colors, "c.png")]),
                             "first", api_name="/annotate_save")[0]
    assert "previous version" in message
    assert np.array_equal(store.load("two-classes", "first")[1], changed)
    assert any(name.endswith("replaced-mask.png") for name in store.history("two-classes"))


def test_prefill_from_the_model_then_edit(app, client, tmp_path):
    client.predict("prefilled", "shapes", "", api_name="/annotate_create")
    client.predict("prefilled", 3, 192, api_name="/annotate_open_shapes")
    _, message = client.predict("prefilled", "unet_shapes", 0.5, api_name="/annotate_prefill")
    assert "Pre-filled" in message
    info = app.context.workspace().store.info("prefilled")
    predicted = np.asarray(Image.open(client.predict("prefilled", api_name="/annotate_labels")))
    images, masks = shapes.generate(1, 192, seed=3)
    truth = np.zeros((192, 192), dtype=np.uint8)
    for channel in range(6):
        truth[masks[0, channel] == 1] = channel + 1
    assert (predicted == truth).mean() > 0.97  # the model did most of the work
    edited = predicted.copy()
    edited[:10, :10] = 4  # the user paints a correction
    layer_path = tmp_path / "edited.png"
    Image.fromarray(layer_from_labels(edited, info.colors), "RGBA").save(layer_path)
    background = tmp_path / "bg.png"
    Image.fromarray(images[0]).save(background)
    client.predict("prefilled", editor(background, [layer_path]), "shapes-3", api_name="/annotate_save")
    assert np.array_equal(app.context.workspace().store.load("prefilled", "shapes-3")[1], edited)
    cleaned, note = client.predict("prefilled", editor(background, [layer_path]), 20, api_name="/annotate_cleanup")
    assert "Removed specks" in note


def test_export_and_reimport_give_identical_files(app, client, tmp_path):
    client.predict("exported", "DRIVE vessels", "", api_name="/annotate_create")
    client.predict("exported", 1, 64, api_name="/annotate_open_shapes")
    labels = np.zeros((64, 64), dtype=np.uint8)
    labels[10:20, :] = 1
    layer = painted_layer(tmp_path, labels, [(0, 0, 0), (230, 40, 40)])
    for name in ("a", "b"):
        client.predict("exported", editor(None, [layer]), name, api_name="/annotate_save")
    archive = client.predict("exported", api_name="/annotate_export")
    with zipfile.ZipFile(archive) as opened:
        assert sorted(opened.namelist()) == ["classes.json", "images/a.png", "images/b.png", "masks/a.png", "masks/b.png"]
    client.predict(handle_file(archive), "reimported", api_name="/annotate_import")
    store = app.context.workspace().store
    for original, copy in zip(store.items("exported"), store.items("reimported")):
        assert original.image.read_bytes() == copy.image.read_bytes()
        assert original.mask.read_bytes() == copy.mask.read_bytes()
    voc = client.predict("exported", api_name="/annotate_export_voc")
    with zipfile.ZipFile(voc) as opened:
        assert "VOCdevkit/VOC2012/SegmentationClass/a.png" in opened.namelist()


@pytest.mark.parametrize("name", ["../escape", "/etc/x", ".hidden", "a/b", "x" * 100])
def test_hostile_names_are_refused(app, client, name):
    with pytest.raises(Exception, match="not allowed"):
        client.predict(name, "shapes", "", api_name="/annotate_create")
    with pytest.raises(Exception, match="not allowed|no dataset"):
        client.predict("exported" if "exported" in app.context.workspace().store.datasets() else "x", editor(None, []), name,
                       api_name="/annotate_save")
    root = app.context.workspace().store.root
    assert all(path.resolve().is_relative_to(root) for path in root.rglob("*"))
    assert not (root.parent / "escape").exists()


def test_train_a_few_steps_on_the_saved_annotations(app, client, tmp_path):
    client.predict("to-train", "shapes", "", api_name="/annotate_create")
    images, masks = shapes.generate(3, 96, seed=11)
    info = app.context.workspace().store.info("to-train")
    for index, (image, mask) in enumerate(zip(images, masks)):
        labels = np.zeros(mask.shape[1:], dtype=np.uint8)
        for channel in range(6):
            labels[mask[channel] == 1] = channel + 1
        background = tmp_path / f"image{index}.png"
        Image.fromarray(image).save(background)
        client.predict("to-train", handle_file(str(background)), api_name="/annotate_open_upload")
        client.predict("to-train", editor(background, [painted_layer(tmp_path, labels, info.colors, f"l{index}.png")]),
                       f"item-{index}", api_name="/annotate_save")
    message = client.predict("unet", 8, "annotations: to-train", None, 2, 2, 0.003, 64, 60, "unet_shapes",
                             api_name="/train_start")
    assert "Started run" in message
    status = wait_for(lambda: (s := client.predict(api_name="/train_status"))["state"] in ("finished", "stopped", "failed") and s,
                      timeout=300)
    assert status["state"] == "finished", status["message"]
    names = wait_for(lambda: [n for n in client.predict(api_name="/models") if "fine-tuned" in n])
    assert names


def test_shapes_images_of_a_size_or_seed_out_of_range_are_refused_with_a_message(client):
    client.predict(name="sizes", classes_from="shapes", class_list="", api_name="/annotate_create")
    with pytest.raises(Exception, match="greater than maximum value 384"):  # the slider's range holds over the API
        client.predict(dataset="sizes", seed=0, size=100_000, api_name="/annotate_open_shapes")
    with pytest.raises(Exception, match="seed must be 0 or more"):
        client.predict(dataset="sizes", seed=-1, size=64, api_name="/annotate_open_shapes")
    editor_value, _, message = client.predict(dataset="sizes", seed=3, size=64, api_name="/annotate_open_shapes")
    assert "Opened" in message


def test_recoloring_a_class_redraws_the_open_image_and_keeps_its_labels_and_strokes(app, client, tmp_path):
    """A stroke painted before "Save classes" keeps the class it was painted as; the editor's
    background is tinted in the new colors."""
    client.predict("recolored", "shapes", "", api_name="/annotate_create")
    client.predict("recolored", 3, 192, api_name="/annotate_open_shapes")
    client.predict("recolored", "unet_shapes", 0.5, api_name="/annotate_prefill")
    before = np.asarray(Image.open(client.predict("recolored", api_name="/annotate_labels")))
    info = app.context.workspace().store.info("recolored")
    stroke = np.zeros_like(before)
    stroke[:10, :10] = 4   # a ring stroke in the old ring color, not yet applied
    layer_path = tmp_path / "stroke.png"
    Image.fromarray(layer_from_labels(stroke, info.colors), "RGBA").save(layer_path)
    lines = "\n".join(f"{name} {'#ff00ff' if name == 'ring' else '#%02x%02x%02x' % tuple(color)}"
                      for name, color in zip(info.classes, info.colors))
    result = client.predict("recolored", lines, editor(None, [layer_path]), api_name="/annotate_classes")
    after = np.asarray(Image.open(client.predict("recolored", api_name="/annotate_labels")))
    expected = before.copy()
    expected[:10, :10] = 4
    assert np.array_equal(after, expected)
    background = np.asarray(Image.open(result[2]["value"]["background"]).convert("RGB"))   # an editor update
    ring = after == 4
    assert background[ring][:, 1].mean() < background[ring][:, 0].mean()   # magenta now, not the old blue
