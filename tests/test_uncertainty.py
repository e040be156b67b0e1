"""Where a model is unsure and what to label next: the entropy layer, the ranking, images waiting
to be labelled in the dataset store, and the Annotate tab's panel over the real app."""

from __future__ import annotations

import dataclasses
import zipfile

import numpy as np
import pytest

from segdemo import limits
from segdemo.annotations import CLASS_PRESETS, DatasetStore
from segdemo.data import shapes
from segdemo.errors import UserError
from segdemo.prediction import Prediction
from segdemo.tasks import BINARY, MULTICLASS, MULTILABEL
from segdemo.uncertainty import (
    entropy_map,
    image_uncertainty,
    rank_by_uncertainty,
    uncertainty_picture,
)


def prediction(probabilities, task=MULTICLASS) -> Prediction:
    probabilities = np.asarray(probabilities, dtype=np.float32)
    count = len(probabilities)
    return Prediction(probabilities, task, tuple(f"c{i}" for i in range(count)), ((i * 20, 0, 0) for i in range(count)))


def one_hot(classes: int, shape=(6, 7), winner: int = 1) -> np.ndarray:
    probabilities = np.zeros((classes, *shape), dtype=np.float32)
    probabilities[winner] = 1.0
    return probabilities


# --- the entropy layer --------------------------------------------------------------------------------
@pytest.mark.parametrize("classes", [2, 3, 21])
def test_multiclass_entropy_is_0_when_certain_and_1_when_uniform(classes):
    certain = entropy_map(prediction(one_hot(classes)))
    uniform = entropy_map(prediction(np.full((classes, 6, 7), 1.0 / classes)))
    assert certain.shape == (6, 7) and certain.dtype == np.float32
    assert np.allclose(certain, 0.0, atol=1e-6)
    assert np.allclose(uniform, 1.0, atol=1e-5)
    half = entropy_map(prediction(np.stack([np.full((6, 7), 0.9), np.full((6, 7), 0.1),
                                            *np.zeros((classes - 2, 6, 7))])))
    assert 0.0 < half.min() and half.max() < 1.0   # in between


@pytest.mark.parametrize("task", [BINARY, MULTILABEL])
def test_binary_and_multilabel_entropy_is_0_at_0_and_1_and_1_at_a_half(task):
    channels = 1 if task == BINARY else 3
    sure = np.zeros((channels, 4, 5), np.float32)
    sure[0, :2] = 1.0                          # sure yes above, sure no below
    assert np.allclose(entropy_map(prediction(sure, task)), 0.0, atol=1e-6)
    unsure = sure.copy()
    unsure[-1, 3, 4] = 0.5                     # one pixel of one channel: a coin toss
    entropy = entropy_map(prediction(unsure, task))
    assert entropy[3, 4] == pytest.approx(1.0, abs=1e-5)   # the largest over channels: not diluted by the others
    assert np.count_nonzero(entropy > 1e-6) == 1
    half_precision = prediction(np.full((channels, 4, 5), 0.5, np.float16), task)  # as a page keeps one
    assert np.allclose(entropy_map(half_precision), 1.0, atol=1e-3)


def test_the_picture_has_the_image_shape_and_shows_the_image_where_the_model_is_sure():
    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    entropy = np.zeros((30, 40), np.float32)
    entropy[10:20, 10:20] = 1.0
    picture = uncertainty_picture(image, entropy)
    assert picture.shape == (30, 40, 3) and picture.dtype == np.uint8
    sure, unsure = picture[0:10, 0:10], picture[10:20, 10:20]
    gray = (0.299 * image[0:10, 0:10, 0] + 0.587 * image[0:10, 0:10, 1] + 0.114 * image[0:10, 0:10, 2]) * 0.6
    assert np.abs(sure.astype(float) - gray[:, :, None]).max() <= 2     # the image, dimmed to gray
    assert unsure[:, :, 1].mean() > sure[:, :, 1].mean() + 60           # viridis's bright yellow-green
    with pytest.raises(ValueError, match="entropy map"):
        uncertainty_picture(image, entropy[:5])


def test_a_small_unsure_region_counts_in_the_image_score():
    entropy = np.zeros((100, 100), np.float32)
    entropy[:5, :] = 1.0                       # 5 % of the pixels: one small unsure object
    assert entropy.mean() == pytest.approx(0.05)
    assert image_uncertainty(entropy) == pytest.approx(0.5)   # half of the top tenth
    assert image_uncertainty(np.zeros((10, 10))) == 0.0
    with pytest.raises(ValueError):
        image_uncertainty(entropy, top=0.0)


def test_rank_puts_the_unsure_image_first_and_reads_predictions_one_at_a_time():
    confident = prediction(one_hot(3, (20, 20)))
    mixed = one_hot(3, (20, 20))
    mixed[:, :10] = 1.0 / 3                   # half the image: no idea
    unsure = prediction(mixed)
    slightly = one_hot(3, (20, 20))
    slightly[:, 0, :] = [[0.5], [0.5], [0.0]]  # one row torn between two classes
    read = []

    def predictions():
        for name, made in (("confident", confident), ("unsure", unsure), ("slightly", prediction(slightly))):
            read.append(name)
            yield name, made

    ranking = rank_by_uncertainty(predictions())
    assert [name for name, _ in ranking] == ["unsure", "slightly", "confident"]
    assert ranking[0][1] == pytest.approx(1.0, abs=1e-5) and ranking[-1][1] == pytest.approx(0.0, abs=1e-6)
    assert read == ["confident", "unsure", "slightly"]
    assert rank_by_uncertainty([("b", confident), ("a", confident)]) == [("a", 0.0), ("b", 0.0)]  # ties by name


# --- images waiting to be labelled in the store ---------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    store = DatasetStore(tmp_path / "datasets")
    store.create("d", CLASS_PRESETS["shapes"])
    return store


def noise(size=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


def test_added_images_wait_until_saved_and_are_kept_in_history(store, tmp_path):
    path = tmp_path / "from file.png"
    from PIL import Image

    Image.fromarray(noise(24, 3)).save(path)
    names = store.add_images("d", [("first", noise()), ("../escape", noise(seed=1)), ("from file", path)])
    assert names == ["first", "escape", "from file"]       # names made safe
    assert store.unlabelled("d") == ["escape", "first", "from file"]
    assert np.array_equal(store.load_unlabelled("d", "first"), noise())
    assert np.array_equal(store.load_unlabelled("d", "from file"), noise(24, 3))
    assert store.items("d") == []                          # not items: no mask yet
    assert store.add_images("d", [("first", noise(seed=2))]) == ["first-2"]   # a taken name gets a suffix

    store.save("d", "first", noise(), np.ones((32, 32), np.uint8))
    assert "first" not in store.unlabelled("d") and [item.name for item in store.items("d")] == ["first"]
    assert any(name.startswith("first-") and name.endswith("-labelled-image.png") for name in store.history("d"))
    assert store.add_images("d", [("first", noise())]) == ["first-3"]   # an item's name is taken too
    with pytest.raises(UserError, match="no image to label named"):
        store.load_unlabelled("d", "first")

    archive = store.export_zip("d", tmp_path / "d.zip")
    with zipfile.ZipFile(archive) as opened:                # exports see only the labelled pair
        assert sorted(opened.namelist()) == ["classes.json", "images/first.png", "masks/first.png"]
    from segdemo.data import open_source

    assert len(open_source(f"folder:{store.dataset_path('d')}").info.classes) == 7   # training's reader opens it as before


def test_adding_is_all_or_nothing_within_room_size_and_count(tmp_path, monkeypatch):
    asked = []

    def room(size, what):
        asked.append((size, what))
        if len(asked) > 1:
            raise UserError("your workspace is full")

    store = DatasetStore(tmp_path / "datasets", room=room)
    store.create("d", CLASS_PRESETS["shapes"])
    asked.clear()
    with pytest.raises(UserError, match="workspace is full"):
        store.add_images("d", [("a", noise()), ("b", noise(seed=1))])
    assert store.unlabelled("d") == [] and not any((store.dataset_path("d") / "unlabelled").iterdir())
    assert asked[0][1] == "item" and asked[0][0] > 32 * 32 * 3 // 2   # the encoded PNG's bytes

    monkeypatch.setattr(limits, "_current", dataclasses.replace(limits.current(), annotation_side=40, dataset_items=2))
    plain = DatasetStore(tmp_path / "other")
    plain.create("d", CLASS_PRESETS["shapes"])
    with pytest.raises(UserError, match="annotation_side"):
        plain.add_images("d", [("small", noise()), ("large", noise(64))])
    assert plain.unlabelled("d") == []
    plain.add_images("d", [("a", noise()), ("b", noise())])
    with pytest.raises(UserError, match="dataset_items"):
        plain.add_images("d", [("c", noise())])
    with pytest.raises(UserError):
        plain.add_images("d", [])


# --- the panel over the real app ------------------------------------------------------------------------
@pytest.mark.slow
def test_add_rank_and_label_next_over_the_api(app, client, tmp_path):
    """Two images added to label, ranked by the shipped shapes U-Net: a photo (outside what it knows)
    before a shapes image; Label next opens the photo, and saving it takes it off the list."""
    import cv2
    from gradio_client import handle_file
    from PIL import Image
    from skimage import data

    client.predict("to-label", "shapes", "", api_name="/annotate_create")
    with pytest.raises(Exception, match="no image to rank"):
        client.predict("to-label", "unet_shapes", api_name="/annotate_rank")
    with pytest.raises(Exception, match="no image waits to be labelled"):
        client.predict("to-label", "unet_shapes", api_name="/annotate_label_next")
    paths = []
    for name, picture in (("a-shapes", shapes.generate(1, 128, seed=4)[0][0]),
                          ("b-photo", cv2.resize(data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA))):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(picture).save(paths[-1])
    message, waiting, *_ = client.predict("to-label", [handle_file(str(p)) for p in paths],
                                          api_name="/annotate_add_images")
    assert "Added 2 images" in message and "**2** images" in waiting
    store = app.context.workspace().store
    assert store.unlabelled("to-label") == ["a-shapes", "b-photo"]

    table, message, *_ = client.predict("to-label", "unet_shapes", api_name="/annotate_rank")
    rows = table["data"]
    assert [row[1] for row in rows] == ["b-photo", "a-shapes"], rows
    assert rows[0][2] > rows[1][2] and all(row[3] == "to label" for row in rows)

    editor, item, message = client.predict("to-label", "unet_shapes", api_name="/annotate_label_next")[:3]
    assert item == "b-photo" and "least sure" in message
    opened = np.asarray(Image.open(editor["background"]).convert("RGB"))
    assert np.array_equal(opened, store.load_unlabelled("to-label", "b-photo"))

    picture, message = client.predict("unet_shapes", api_name="/annotate_uncertainty")
    assert np.asarray(Image.open(picture["value"] if isinstance(picture, dict) else picture)).shape[:2] == (128, 128)
    assert "Uncertainty of" in message

    from segdemo.painting import layer_from_labels

    layer = tmp_path / "layer.png"
    Image.fromarray(layer_from_labels(np.zeros((128, 128), np.uint8), store.info("to-label").colors), "RGBA").save(layer)
    client.predict("to-label", {"background": handle_file(str(paths[1])), "layers": [handle_file(str(layer))],
                                "composite": None}, "b-photo", api_name="/annotate_save")
    assert store.unlabelled("to-label") == ["a-shapes"]
    item = client.predict("to-label", "unet_shapes", api_name="/annotate_label_next")[1]
    assert item == "a-shapes"


@pytest.mark.slow
@pytest.mark.browser
def test_the_panel_in_the_browser_adds_ranks_opens_the_top_one_and_shows_its_uncertainty(page, app, tmp_path):
    from apphelpers import ARTIFACTS, wait_for
    from PIL import Image
    from skimage import data

    paths = [tmp_path / "calm-shapes.png", tmp_path / "coffee-photo.png"]
    Image.fromarray(shapes.generate(1, 160, seed=8)[0][0]).save(paths[0])
    Image.fromarray(data.coffee()[::3, ::3]).save(paths[1])
    page.get_by_role("tab", name="Annotate").click()
    page.fill("#annotate-new-name textarea, #annotate-new-name input", "browser-next")
    page.click("#annotate-create")
    wait_for(lambda: "Created" in page.inner_text("#annotate-message"))
    page.locator("#annotate-add-images input[type=file]").set_input_files([str(p) for p in paths])
    wait_for(lambda: "Added 2 images" in page.inner_text("#annotate-message"), timeout=60)
    wait_for(lambda: "2" in page.inner_text("#annotate-waiting"))
    page.click("#annotate-rank")
    wait_for(lambda: "Ranked 2" in page.inner_text("#annotate-message"), timeout=60)
    ranking = lambda: page.inner_text("#annotate-ranking")
    wait_for(lambda: "calm-shapes" in ranking() and ranking().index("coffee-photo") < ranking().index("calm-shapes"))
    page.click("#annotate-label-next")
    wait_for(lambda: "Opened" in page.inner_text("#annotate-message") and "coffee-photo" in page.inner_text("#annotate-message"),
             timeout=60)
    assert page.input_value("#annotate-item textarea, #annotate-item input") == "coffee-photo"
    page.click("#annotate-show-uncertainty")
    wait_for(lambda: "Uncertainty of" in page.inner_text("#annotate-message"), timeout=60)
    wait_for(lambda: page.locator("#annotate-uncertainty img").count() > 0 and page.evaluate(
        "() => { const i = document.querySelector('#annotate-uncertainty img'); return i && i.complete && i.naturalWidth > 0; }"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#annotate-editor").locator("xpath=../..").screenshot(path=str(ARTIFACTS / "annotate-uncertainty-beside-editor.png"))
    page.locator("#annotate-ranking").get_by_text("calm-shapes").click()   # a row of the ranking opens its image
    wait_for(lambda: "calm-shapes" in page.inner_text("#annotate-message") and
             page.input_value("#annotate-item textarea, #annotate-item input") == "calm-shapes")
    wait_for(lambda: not page.locator("#annotate-uncertainty").is_visible())   # the coffee's picture goes
    page.locator("#annotate-label-next-panel").screenshot(path=str(ARTIFACTS / "annotate-label-next-panel.png"))
