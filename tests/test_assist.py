"""Annotation help without a model (segdemo.assist): a box and clicks turned into a mask by GrabCut,
flood fill, painting with the class lock; and the Annotate tab's endpoints over them."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data as photos
from skimage import draw

from segdemo import assist
from segdemo.data import shapes
from segdemo.errors import ImageError


def dice(found: np.ndarray, truth: np.ndarray) -> float:
    return 2 * (found & truth).sum() / (found.sum() + truth.sum())


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return cols.min(), rows.min(), cols.max() + 1, rows.max() + 1


def noisy_background(height=120, width=160, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(60, 10, (height, width, 3)).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", ["filled square", "disk"])
def test_a_box_around_a_shape_gives_its_mask(shape):
    channel = shapes.CLASSES.index(shape)
    tried = 0
    for seed in range(12):
        images, masks = shapes.generate(1, 192, seed=seed)
        truth = masks[0, channel].astype(bool)
        x0, y0, x1, y1 = bounding_box(truth)
        others = np.delete(masks[0], channel, axis=0).any(axis=0)
        if others[y0:y1, x0:x1].any():
            continue  # another shape in the box: the box alone cannot say which one is meant
        tried += 1
        assert dice(assist.box_mask(images[0], (x0, y0, x1, y1)), truth) >= 0.9, seed
    assert tried >= 6


def test_a_box_around_an_object_pasted_into_a_photo_gives_its_mask():
    """A patch of the cat photo in the shape of an ellipse, pasted into three other photos."""
    cat = photos.chelsea()
    for photo, (x, y) in ((photos.astronaut(), (200, 220)), (photos.rocket(), (320, 200)), (photos.coffee(), (300, 250))):
        height, width = photo.shape[:2]
        truth = np.zeros((height, width), bool)
        truth[draw.ellipse(y, x, 60, 85, shape=(height, width))] = True
        composite = photo.copy()
        rows, cols = np.nonzero(truth)
        composite[rows, cols] = cat[rows - y + 150, cols - x + 220]
        assert dice(assist.box_mask(composite, bounding_box(truth)), truth) >= 0.8


@pytest.mark.parametrize("box, says", [((10, 10, 10, 40), "empty"), ((10, 10, 11, 40), "empty"),
                                       ((-5, 10, 40, 40), "not inside"), ((10, 10, 200, 40), "not inside"),
                                       (("a", 1, 2, 3), "four numbers"), ((1, 2, 3), "four numbers")])
def test_an_empty_or_outside_box_is_refused_with_a_clear_error(box, says):
    image = noisy_background()
    with pytest.raises(ImageError, match=says):
        assist.box_mask(image, box)


def test_clicks_move_the_result_the_way_they_say():
    # The object: a red half and a half of the background's own texture (GrabCut alone drops it);
    # in the box with it, a blue square that is not part of it (GrabCut alone keeps it).
    image = noisy_background()
    obj = np.zeros(image.shape[:2], bool)
    obj[30:90, 40:100] = True
    image[30:90, 40:70] = (220, 60, 60)
    textured = np.zeros_like(obj)
    textured[30:90, 70:100] = True
    stray = np.zeros_like(obj)
    stray[40:80, 110:140] = True
    image[stray] = (60, 60, 220)
    box = (35, 25, 145, 95)
    plain = assist.box_mask(image, box)
    assert plain[stray].mean() > 0.9 and plain[textured].mean() < 0.2
    without_stray = assist.box_mask(image, box, negative=[(125, 60)])
    assert without_stray[stray].mean() < 0.1
    assert dice(without_stray, obj) > dice(plain, obj)
    with_texture = assist.box_mask(image, box, positive=[(85, 40), (85, 60), (85, 80)], negative=[(125, 60)])
    assert with_texture[textured].mean() > without_stray[textured].mean()
    assert dice(with_texture, obj) > dice(without_stray, obj)
    with pytest.raises(ImageError, match="not inside"):
        assist.box_mask(image, box, positive=[(500, 10)])


def test_a_starting_mask_says_which_of_two_things_in_the_box_is_meant():
    image = noisy_background()
    red = np.zeros(image.shape[:2], bool)
    red[40:80, 30:80] = True
    blue = np.zeros_like(red)
    blue[45:75, 95:125] = True
    image[red], image[blue] = (220, 60, 60), (60, 60, 220)
    box = (20, 30, 140, 90)
    assert assist.box_mask(image, box)[blue].mean() > 0.9
    started = assist.box_mask(image, box, mask=red)
    assert dice(started, red) > 0.95 and started[blue].mean() < 0.1
    with pytest.raises(ImageError, match="mask"):
        assist.box_mask(image, box, mask=red[:-1])


def test_flood_fill_takes_the_connected_region_of_similar_colour():
    image = np.zeros((60, 80, 3), np.uint8)
    image[:, :40] = (200, 100, 50)
    image[10:30, 10:30] = (210, 95, 55)    # close to the left half's colour
    image[40:50, 10:20] = (100, 100, 100)  # far from it
    image[:, 60:] = (200, 100, 50)         # the same colour, not connected
    region = assist.flood_fill(image, (5, 5), tolerance=20)
    expected = np.zeros((60, 80), bool)
    expected[:, :40] = True
    expected[40:50, 10:20] = False
    assert np.array_equal(region, expected)
    assert np.array_equal(assist.flood_fill(image, (15, 15), tolerance=0), image.sum(axis=2) == 360)  # only the inner square
    assert assist.flood_fill(image, (5, 5), tolerance=255).all()
    # A slow gradient: every pixel is compared with the clicked one, so the fill stops.
    ramp = np.repeat(np.repeat(np.arange(80, dtype=np.uint8)[None, :, None], 60, axis=0), 3, axis=2)
    assert assist.flood_fill(ramp, (0, 0), tolerance=10).sum() == 60 * 11
    for point in ((80, 5), (-1, 5), (5, 60)):
        with pytest.raises(ImageError, match="not inside"):
            assist.flood_fill(image, point, 10)
    with pytest.raises(ImageError, match="tolerance"):
        assist.flood_fill(image, (5, 5), 300)


def test_paint_sets_a_class_and_its_lock_keeps_the_others():
    labels = np.zeros((4, 6), np.uint8)
    labels[:, 0] = 2           # another class
    labels[:, 1] = 1           # the class painted
    mask = np.zeros((4, 6), bool)
    mask[1:3, :4] = True
    painted = assist.paint(labels, mask, 1)
    assert (painted[mask] == 1).all() and np.array_equal(painted[~mask], labels[~mask])
    assert labels[1, 0] == 2   # a new map: the given one is untouched
    locked = assist.paint(labels, mask, 1, lock=True)
    assert (locked[:, 0] == 2).all()                       # class 2 kept its pixels
    assert (locked[1:3, 1:4] == 1).all() and locked[0, 2] == 0
    with pytest.raises(ImageError):
        assist.paint(labels, mask[:, :3], 1)


def test_strokes_paint_their_classes_and_the_lock_keeps_the_others_but_not_from_erasing():
    before = np.array([[0, 1, 2, 3, 2, 1]], np.uint8)
    painted = np.array([[1, 1, 1, 1, 1, 0]], bool)
    classes = np.array([[1, 1, 1, 0, 0, 0]], np.uint8)   # class 1 over 0, 1, 2; background over 3, 2
    assert np.array_equal(assist.paint_strokes(before, painted, classes), [[1, 1, 1, 0, 0, 1]])
    assert np.array_equal(assist.paint_strokes(before, painted, classes, lock=True), [[1, 1, 2, 0, 0, 1]])
    assert before[0, 2] == 2                                # a new map: the given one is untouched
    nothing = np.zeros_like(painted)
    assert np.array_equal(assist.paint_strokes(before, nothing, classes, lock=True), before)
    with pytest.raises(ImageError):
        assist.paint_strokes(before, painted, classes[:, :3])


def test_boxes_and_clicks_are_read_from_text_and_json():
    assert assist.parse_box("10, 20, 30, 40") == (10, 20, 30, 40)
    assert assist.parse_box("[10, 20, 30.5, 40]") == (10, 20, 30.5, 40)
    assert assist.parse_points("1,2; 3,4") == [(1, 2), (3, 4)]
    assert assist.parse_points("[[1, 2], [3, 4]]") == [(1, 2), (3, 4)]
    assert assist.parse_points("") == [] and assist.parse_points(None) == []
    for bad in ("1,2,3", "[1, 2", "a,b,c,d", "1,2,nan,4"):
        with pytest.raises(ImageError):
            assist.parse_box(bad)
    with pytest.raises(ImageError, match="pairs"):
        assist.parse_points("1,2,3")


# --- the Annotate tab's endpoints (the real app over gradio_client) ------------------------------------------


def _truths(seed: int, size: int = 192) -> tuple[np.ndarray, np.ndarray]:
    images, masks = shapes.generate(1, size, seed=seed)
    return images[0], masks[0].astype(bool)


def _painting(tmp_path, labels: np.ndarray | None, colors) -> dict:
    from gradio_client import handle_file
    from PIL import Image

    from segdemo.painting import layer_from_labels

    layers = []
    if labels is not None:
        Image.fromarray(layer_from_labels(labels, colors), "RGBA").save(tmp_path / "layer.png")
        layers.append(handle_file(str(tmp_path / "layer.png")))
    return {"background": None, "layers": layers, "composite": None}


def _labels(client, dataset: str) -> np.ndarray:
    """The session's labels as the server last wrote them."""
    from PIL import Image

    return np.asarray(Image.open(client.predict(dataset, api_name="/annotate_labels")))


@pytest.mark.slow
def test_the_box_and_flood_fill_endpoints_paint_the_class_and_keep_the_rest(app, client, tmp_path):
    client.predict("assist-api", "shapes", "", api_name="/annotate_create")
    client.predict("assist-api", 0, 192, api_name="/annotate_open_shapes")
    info = app.context.workspace().store.info("assist-api")
    image, truth = _truths(0)
    square, disk, triangle = (info.classes.index(name) for name in ("filled square", "disk", "triangle"))
    # Something else painted already: the triangle's class over the left half of the square's box.
    x0, y0, x1, y1 = bounding_box(truth[square - 1])
    before = np.zeros(image.shape[:2], np.uint8)
    before[y0:y1, x0:(x0 + x1) // 2] = triangle
    before[truth[2]] = triangle
    _, message = client.predict("assist-api", _painting(tmp_path, before, info.colors), f"{x0},{y0},{x1},{y1}",
                                "filled square", "", "", False, api_name="/annotate_box")
    assert "filled square" in message
    labels = _labels(client, "assist-api")
    assert dice(labels == square, truth[square - 1]) >= 0.9
    assert (labels[truth[2]] == triangle).all()          # the rest of the painting is kept
    client.predict("assist-api", _painting(tmp_path, before, info.colors), f"[{x0}, {y0}, {x1}, {y1}]",
                   "filled square", "", "", True, api_name="/annotate_box")
    locked = _labels(client, "assist-api")
    assert (locked[before == triangle] == triangle).all()  # locked: the triangle class kept its pixels
    assert dice(locked == square, truth[square - 1] & (before != triangle)) >= 0.9
    # Flood fill from a pixel of the disk paints the disk.
    rows, cols = np.nonzero(truth[disk - 1])
    point = f"{cols[len(cols) // 2]},{rows[len(rows) // 2]}"
    _, message = client.predict("assist-api", _painting(tmp_path, labels, info.colors), point, "disk", 10, False,
                                api_name="/annotate_flood_fill")
    filled = _labels(client, "assist-api")
    assert dice(filled == disk, truth[disk - 1]) >= 0.9 and "disk" in message
    other = filled != disk
    assert np.array_equal(filled[other], labels[other])


@pytest.mark.slow
def test_the_box_endpoint_says_what_is_missing(app, tmp_path):
    from gradio_client.exceptions import AppError

    fresh = app.client()   # a session with no image open
    fresh.predict("assist-errors", "shapes", "", api_name="/annotate_create")
    empty = _painting(tmp_path, None, None)
    with pytest.raises(AppError, match="open an image first"):
        fresh.predict("assist-errors", empty, "1,1,20,20", "disk", "", "", False, api_name="/annotate_box")
    fresh.predict("assist-errors", 0, 64, api_name="/annotate_open_shapes")
    for box, says in (("", "mark a box first"), ("5,5,5,30", "empty"), ("0,0,70,10", "not inside"),
                      ("1,2,3", "four numbers")):
        with pytest.raises(AppError, match=says):
            fresh.predict("assist-errors", empty, box, "disk", "", "", False, api_name="/annotate_box")
    with pytest.raises(AppError, match="is the background"):
        fresh.predict("assist-errors", empty, "1,1,20,20", "background", "", "", False, api_name="/annotate_box")
    with pytest.raises(AppError, match="not a class"):
        fresh.predict("assist-errors", empty, "1,1,20,20", "cloud", "", "", False, api_name="/annotate_box")
    with pytest.raises(AppError, match="not inside"):
        fresh.predict("assist-errors", empty, "64,3", "disk", 10, False, api_name="/annotate_flood_fill")


@pytest.mark.slow
def test_the_page_paints_strokes_over_the_labels_it_last_wrote_with_the_lock(app):
    """The tab's handlers as the page calls them: an opened item's labels are committed; a stroke
    of the disk's colour over the square and a background stroke over the triangle, lock ticked,
    keep the square and clear the triangle on save; the next box starts from what was saved."""
    from segdemo.annotations import CLASS_PRESETS
    from segdemo.painting import layer_from_labels
    from segdemo.ui import annotate_tab, assist_panel

    context, store = app.context, app.context.workspace().store
    store.create("assist-lock", CLASS_PRESETS["shapes"])
    info = store.info("assist-lock")
    tab = assist_panel.Tab(annotate_tab._dataset, annotate_tab._painted_labels, annotate_tab.editor_value,
                           annotate_tab.labels_drawn)
    image, truth = _truths(0)
    square, disk, triangle = (info.classes.index(name) for name in ("filled square", "disk", "triangle"))
    labels = np.zeros(image.shape[:2], np.uint8)
    labels[truth[square - 1]], labels[truth[triangle - 1]] = square, triangle
    store.save("assist-lock", "start", image, labels)
    value, committed, *_ = annotate_tab.open_item(context, "assist-lock", "start", None)
    assert np.array_equal(committed, labels)
    shown = value["background"]                    # the labels are drawn into the editor's background
    assert (shown[labels == 0] == image[labels == 0]).all() and (shown[labels != 0] != image[labels != 0]).any()
    strokes = np.zeros(image.shape[:2], np.uint8)
    strokes[truth[square - 1]] = disk              # the disk's colour over the square
    stroke = layer_from_labels(strokes, info.colors)
    stroke[truth[triangle - 1]] = (*info.colors[0], 255)   # the background's colour over the triangle
    painting = {"background": shown, "layers": [stroke], "composite": None}
    *_, saved = annotate_tab.save(context, "assist-lock", painting, image, "locked", 1, committed, True)
    kept = np.where(labels == triangle, 0, labels)
    assert np.array_equal(store.load("assist-lock", "locked")[1], kept) and np.array_equal(saved, kept)
    unlocked = annotate_tab._painted_labels(store, "assist-lock", painting, image, committed, False)
    assert (unlocked[truth[square - 1]] == disk).all()   # without the lock the stroke takes the square
    rows, cols = np.nonzero(truth[disk - 1])
    box = f"{cols.min()},{rows.min()},{cols.max() + 1},{rows.max() + 1}"
    untouched = annotate_tab.editor_value(image, saved, info.colors)   # the page sends the value back as sent
    assert untouched["layers"] == []
    _, _, after = assist_panel.box_on_page(context, tab, "assist-lock", untouched, image, box, "disk", "", "",
                                           True, saved, True, None)
    assert (after[truth[square - 1]] == square).all() and (after[truth[triangle - 1]] == 0).all()
    assert dice(after == disk, truth[disk - 1]) >= 0.9
