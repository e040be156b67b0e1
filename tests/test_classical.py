"""The classical methods (segdemo.classical): Frangi's vessels on a synthetic retina whose truth is
known, the field of view found in the image, GrabCut on a shapes image, the catalog, and the real
app answering with them in /segment, the Upload tab, Compare, the model card and the Annotate tab's
pre-fill."""

from __future__ import annotations

import time
import tracemalloc

import cv2
import numpy as np
import pytest
from apphelpers import run_fresh, save_image
from gradio_client import handle_file
from PIL import Image

from segdemo.catalog import CLASSICAL, ModelCatalog
from segdemo.classical import GRABCUT, METHODS, VESSELS, create
from segdemo.classical.grabcut import default_box
from segdemo.classical.vessels import find_field_of_view
from segdemo.data import shapes
from segdemo.errors import ImageError, LimitError
from segdemo.limits import Deadline

VESSEL_MODEL = f"{CLASSICAL}: {METHODS[VESSELS]}"
GRABCUT_MODEL = f"{CLASSICAL}: {METHODS[GRABCUT]}"


def synthetic_retina(size: int = 384, seed: int = 0):
    """A fundus-like image: a branching tree of dark curved vessels 1–6 pixels wide on a shaded
    reddish-orange disc with noise, on a black surround. Returns the ``(H, W, 3)`` uint8 image, the
    vessels (bool, inside the disc) and the disc (bool)."""
    rng = np.random.default_rng(seed)
    middle, radius = size / 2, 0.45 * size
    rows, columns = np.mgrid[:size, :size].astype(np.float32)
    distance = np.hypot(columns - middle, rows - middle) / radius
    disc = distance <= 1.0
    vessels = np.zeros((size, size), np.uint8)
    step = 4.0

    def grow(x: float, y: float, angle: float, width: float, depth: int) -> None:
        bend = rng.normal(0, 0.04)
        for _ in range(int(rng.uniform(0.25, 0.4) * size * (0.6 + 0.1 * width) / step)):
            angle += bend + rng.normal(0, 0.05)
            nx, ny = x + step * np.cos(angle), y + step * np.sin(angle)
            cv2.line(vessels, (round(4 * x), round(4 * y)), (round(4 * nx), round(4 * ny)), 1,
                     max(1, round(width)), cv2.LINE_8, shift=2)
            x, y = nx, ny
        if width > 1.2 and depth < 6:
            for side in (-1, 1):
                grow(x, y, angle + side * rng.uniform(0.35, 0.7), width * rng.uniform(0.65, 0.8), depth + 1)

    root = (middle + 0.25 * size * rng.choice([-1, 1]), middle)  # where the optic disc would be
    for quarter in range(4):
        grow(*root, quarter * np.pi / 2 + np.pi / 4 + rng.uniform(-0.4, 0.4), 6.0, 0)
    vessels = vessels.astype(bool) & disc
    shading = 1.0 - 0.35 * distance**2 + 0.1 * (columns - middle) / size
    image = shading[..., None] * np.array([205, 95, 35], np.float32)
    image *= (1 - 0.35 * cv2.GaussianBlur(vessels.astype(np.float32), (0, 0), 0.7))[..., None]  # a soft edge
    image += rng.normal(0, 4, image.shape)
    image[~disc] = rng.normal(3, 2, (int((~disc).sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8), vessels, disc


def f1(found: np.ndarray, truth: np.ndarray, where: np.ndarray) -> float:
    found, truth = found[where], truth[where]
    return 2 * (found & truth).sum() / (found.sum() + truth.sum())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


@pytest.fixture(scope="module")
def retina():
    return synthetic_retina(seed=1)


def test_frangi_finds_the_vessels_of_a_synthetic_retina(retina):
    from segdemo.metrics import score

    image, vessels, disc = retina
    prediction = create(VESSELS).predict(image)
    assert prediction.task == "binary" and prediction.classes == ("vessel",)
    assert f1(prediction.labels() == 1, vessels, disc) >= 0.7
    assert not prediction.labels()[~disc].any()  # nothing outside the retina, nor on its rim
    truth = np.where(disc, vessels, 255).astype(np.uint8)
    assert score(prediction, truth)["auc"] > 0.9
    # 0.5 is the filter's own threshold: the slider keeps more vessels below it, fewer above.
    counts = [(prediction.labels(threshold) == 1).sum() for threshold in (0.3, 0.5, 0.7)]
    assert counts[0] > counts[1] > counts[2] > 0


def test_the_field_of_view_is_found_in_the_image(retina):
    image, _, disc = retina
    assert iou(find_field_of_view(image), disc) >= 0.95
    photo = np.full((120, 160, 3), 180, np.uint8)  # no dark surround: not a fundus photograph
    photo[40:80, 50:110] = 40
    assert find_field_of_view(photo).all()
    black = create(VESSELS).predict(np.zeros((64, 64, 3), np.uint8))  # nothing to find, and no error
    assert not black.probabilities.any() and "whole image" in black.path


def test_a_given_field_of_view_is_where_vessels_are_looked_for(retina):
    image, vessels, disc = retina
    model = create(VESSELS)
    half = disc.copy()
    half[:, : image.shape[1] // 2] = False
    prediction = model.predict(image, field_of_view=half.astype(np.uint8) * 255)
    labels = prediction.labels() == 1
    assert not labels[~half].any() and f1(labels, vessels, half) >= 0.7
    assert "from the mask" in prediction.path
    with pytest.raises(ImageError, match="must be the same size"):
        model.predict(image, field_of_view=half[:-1])
    with pytest.raises(ImageError, match="marks no pixel"):
        model.predict(image, field_of_view=np.zeros_like(half))


def test_the_filter_stops_at_the_deadline(retina):
    with pytest.raises(LimitError, match="cancelled"):
        create(VESSELS).predict(retina[0], deadline=Deadline(wanted=lambda: False))
    past = Deadline(0.001)
    time.sleep(0.01)
    with pytest.raises(LimitError, match="request_seconds"):
        create(GRABCUT).predict(retina[0], deadline=past)


def test_the_work_estimate_covers_the_memory_used_and_refuses_what_is_over_budget(retina):
    model = create(VESSELS)
    image = retina[0]
    model.predict(image[:64, :64])  # scikit-image's first call allocates what it keeps
    tracemalloc.start()
    try:
        model.predict(image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    flop, memory = model.work(*image.shape[:2])
    assert peak <= memory and flop > 0
    with pytest.raises(LimitError, match="request_gflop"):
        model.check_work(8000, 8000, flop, None)
    height, width = model.largest_within(8000, 6000, 10 * flop, None)
    assert model.work(height, width)[0] <= 10 * flop and abs(height / width - 8 / 6) < 0.01


def test_grabcut_finds_the_shapes_in_its_default_box():
    image = shapes.generate(1, 192, seed=4)[0][0]
    prediction = create(GRABCUT).predict(image)
    found = prediction.labels() == 1
    x0, y0, x1, y1 = default_box(192, 192)
    box = np.zeros(found.shape, bool)
    box[y0:y1, x0:x1] = True
    bright = image.max(axis=2) > 128
    assert found.any() and not found[~box].any()
    assert (found & bright).sum() >= 0.95 * found.sum()          # what it marks is shapes
    assert (found & bright & box).sum() >= 0.6 * (bright & box).sum()  # and most of the shapes in the box
    assert "default box" in prediction.path
    with pytest.raises(ImageError, match="at least 2 pixels"):
        create(GRABCUT).predict(np.zeros((1, 1, 3), np.uint8))


def test_the_catalog_lists_the_classical_models_after_the_shipped_ones(tmp_path):
    from apphelpers import SHIPPED

    catalog = ModelCatalog(SHIPPED, tmp_path / "models", include_pretrained=False)
    names = catalog.names()
    shipped = [path.stem for path in sorted(SHIPPED.glob("*.pt"))]
    assert names[0] == "unet_shapes" and set(names[: len(shipped)]) == set(shipped)
    assert names[len(shipped):len(shipped) + 2] == sorted([VESSEL_MODEL, GRABCUT_MODEL])
    vessel = catalog.get(VESSEL_MODEL)
    assert vessel is catalog.get(VESSEL_MODEL) and vessel.name == VESSEL_MODEL and "vessel" in vessel.name
    assert vessel.meta["domain"] == "retina" and not vessel.learned and vessel.weight_bytes() == 0
    grabcut = catalog.get(GRABCUT_MODEL)
    assert grabcut.meta["domain"] == "any" and grabcut.classes == ("object",)
    with pytest.raises(Exception, match="cannot be removed"):
        catalog.remove(VESSEL_MODEL)
    assert VESSEL_MODEL not in ModelCatalog(SHIPPED, tmp_path / "models", include_classical=False).names()


def test_the_classical_models_list_and_predict_without_torch():
    run_fresh(
        "import sys\n"
        "from segdemo.catalog import ModelCatalog\n"
        "catalog = ModelCatalog('checkpoints', '/nonexistent-models', include_pretrained=False)\n"
        f"assert {VESSEL_MODEL!r} in catalog.names() and 'skimage' not in sys.modules\n"
        "from segdemo.data import shapes\n"
        "image = shapes.generate(1, 64, seed=0)[0][0]\n"
        f"for name in ({VESSEL_MODEL!r}, {GRABCUT_MODEL!r}):\n"
        "    catalog.get(name).predict(image)\n"
        "assert 'torch' not in sys.modules, 'a classical model imported torch'\n")


# --- the real app ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def retina_files(tmp_path_factory, retina):
    """The synthetic retina as files: the image (PNG), its vessels (a 0/255 GIF, as DRIVE's
    1st_manual) and its field of view (a 0/255 GIF, as DRIVE's *_mask.gif)."""
    folder = tmp_path_factory.mktemp("retina")
    image, vessels, disc = retina
    return (save_image(folder / "01_test.png", image),
            save_image(folder / "01_manual1.gif", vessels.astype(np.uint8) * 255, mode="L"),
            save_image(folder / "01_test_mask.gif", disc.astype(np.uint8) * 255, mode="L"))


@pytest.mark.slow
def test_the_app_segments_with_the_vessel_model_and_scores_it(client, retina_files, retina):
    image, manual, fov = (handle_file(str(path)) for path in retina_files)
    overlay, labels_file, info = client.predict(image=image, model=VESSEL_MODEL, api_name="/segment")
    labels = np.asarray(Image.open(labels_file))
    assert labels.shape == retina[0].shape[:2] and set(np.unique(labels)) == {0, 1}
    assert Image.open(overlay).size == labels.shape[::-1]
    assert info["model"] == VESSEL_MODEL and 0.03 < info["fractions"]["vessel"] < 0.3
    result = client.predict(image, manual, VESSEL_MODEL, 0.5, 0.5, fov, api_name="/segment_upload")
    metrics, summary = result[3], result[5]
    assert metrics["headers"][1] == "Dice (F1)" and "field of view from the mask" in summary
    rows = {row[0]: row for row in metrics["data"]}
    assert float(rows["vessel"][1]) >= 0.7
    assert {"sensitivity", "specificity", "auc"} <= set(rows) and float(rows["auc"][1]) > 0.9
    # Another model ignores the field of view, and says so.
    result = client.predict(image, None, GRABCUT_MODEL, 0.5, 0.5, fov, api_name="/segment_upload")
    assert "was not used" in result[5]


@pytest.mark.slow
def test_the_app_compares_a_classical_and_a_learned_model_and_shows_their_cards(client):
    gallery, times = client.predict([GRABCUT_MODEL, "unet_shapes"], "shapes image", 4, None, 0.5, api_name="/compare")
    assert len(gallery) == 3 and [row[0] for row in times["data"]] == [GRABCUT_MODEL, "unet_shapes"]
    assert times["data"][0][1] == "none (classical)" and float(times["data"][0][2]) > 0
    assert not any("outside its domain" in item["caption"] for item in gallery)
    gallery, _ = client.predict([VESSEL_MODEL, "unet_shapes"], "shapes image", 4, None, 0.5, api_name="/compare")
    captions = [item["caption"] for item in gallery[1:]]   # after the input | truth picture
    assert "outside its domain" in captions[0] and "outside its domain" not in captions[1], captions
    details, stages, _ = client.predict(VESSEL_MODEL, api_name="/model_card")
    assert "Classical method" in details and "Frangi" in details and "nothing is learned" in details
    assert len(stages["data"]) == 1 and "no layers" in stages["data"][0][0]
    with pytest.raises(Exception, match="no layers"):
        client.predict(VESSEL_MODEL, "shapes image", 3, None, api_name="/model_features")


@pytest.mark.slow
def test_the_app_prefills_an_annotation_with_grabcut(app, client):
    client.predict("objects", "custom (edit the list)", "background\nobject #ffaa00", api_name="/annotate_create")
    client.predict("objects", 4, 192, api_name="/annotate_open_shapes")
    _, message = client.predict("objects", GRABCUT_MODEL, 0.5, api_name="/annotate_prefill")
    assert f"Pre-filled from **{GRABCUT_MODEL}**" in message
    painted = np.asarray(Image.open(client.predict("objects", api_name="/annotate_labels")))
    image = shapes.generate(1, 192, seed=4)[0][0]
    assert np.array_equal(painted == 1, create(GRABCUT).predict(image).labels() == 1) and (painted == 1).any()


def test_a_one_class_model_prefills_the_class_picked_in_a_dataset_without_its_class(app, client):
    """GrabCut's "object" is not a shapes class: its pre-fill paints the class asked for (the
    assist panel's), or the dataset's first class, and says so."""
    client.predict("shapes-for-grabcut", "shapes", "", api_name="/annotate_create")
    client.predict("shapes-for-grabcut", 4, 192, api_name="/annotate_open_shapes")
    found = create(GRABCUT).predict(shapes.generate(1, 192, seed=4)[0][0]).labels() == 1
    for class_name, index in (("disk", 2), (None, 1)):
        _, message = client.predict("shapes-for-grabcut", GRABCUT_MODEL, 0.5, class_name,
                                    api_name="/annotate_prefill")
        painted = np.asarray(Image.open(client.predict("shapes-for-grabcut", api_name="/annotate_labels")))
        assert np.array_equal(painted == index, found) and found.any(), class_name
        assert "'object' is not in this dataset" in message
