import numpy as np
import pytest

from segdemo import viz
from segdemo.data import shapes
from segdemo.prediction import Prediction
from segdemo.labels import argmax_channels, labels_to_target, probabilities_to_labels, target_to_labels


def reference_colorize(masks, colors):
    """The tutorial's per-pixel loop, as a known answer."""
    out = np.full((masks.shape[1], masks.shape[2], 3), 255, dtype=np.float32)
    for y in range(masks.shape[1]):
        for x in range(masks.shape[2]):
            selected = [colors[c] for c in range(len(colors)) if masks[c, y, x] == 1]
            if selected:
                out[y, x] = np.mean(selected, axis=0)
    return out.round().astype(np.uint8)


def test_colorize_multilabel_matches_the_per_pixel_loop():
    _, masks = shapes.generate(1, size=48, seed=4)
    assert np.array_equal(viz.colorize_multilabel(masks[0], shapes.COLORS),
                          reference_colorize(masks[0], shapes.COLORS))


def test_colorize_labels_and_ignore():
    labels = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    out = viz.colorize_labels(labels, [(0, 0, 0), (10, 20, 30), (40, 50, 60)])
    assert out.shape == (2, 2, 3)
    assert out[0, 1].tolist() == [10, 20, 30] and out[1, 0].tolist() == [40, 50, 60]
    assert out[1, 1].tolist() == list(viz.IGNORE_COLOR)


def test_argmax_matches_numpy():
    values = np.random.default_rng(0).random((21, 37, 53)).astype(np.float32)
    values[3, 0, 0] = values[5, 0, 0] = 2.0  # ties go to the lower index
    indices, best = argmax_channels(values)
    assert np.array_equal(indices, values.argmax(axis=0))
    assert np.array_equal(best, values.max(axis=0))


def test_labels_round_trip():
    probabilities = np.zeros((3, 2, 2), dtype=np.float32)
    probabilities[0, 0, 0] = 0.9
    probabilities[1, 0, 0] = 0.7
    probabilities[2, 1, 1] = 0.6
    labels = probabilities_to_labels(probabilities, "multilabel", 0.5)
    assert labels.tolist() == [[1, 0], [0, 3]]
    assert probabilities_to_labels(probabilities, "multilabel", 0.65).tolist() == [[1, 0], [0, 0]]
    target = labels_to_target(labels, "multilabel", 3)
    assert target.shape == (3, 2, 2)
    assert np.array_equal(target_to_labels(target, "multilabel"), labels)


def test_overlay_blends_only_covered_pixels():
    image = np.full((4, 4, 3), 100, dtype=np.uint8)
    probabilities = np.zeros((1, 4, 4), dtype=np.float32)
    probabilities[0, :2] = 0.9
    prediction = Prediction(probabilities, "binary", ("thing",), [(200, 0, 0)])
    out = viz.overlay(image, prediction, threshold=0.5, opacity=0.5)
    assert out[0, 0].tolist() == [150, 50, 50]
    assert out[3, 3].tolist() == [100, 100, 100]
    full = viz.overlay(image, prediction, opacity=1.0)
    assert full[0, 0].tolist() == [200, 0, 0]
    assert viz.overlay(image, prediction, threshold=0.95, opacity=1.0)[0, 0].tolist() == [100, 100, 100]


def test_overlay_multiclass_leaves_background():
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    probabilities = np.zeros((3, 2, 2), dtype=np.float32)
    probabilities[0] = 1.0
    probabilities[:, 0, 0] = [0.1, 0.2, 0.7]
    prediction = Prediction(probabilities, "multiclass", ("background", "a", "b"),
                            [(0, 0, 0), (0, 255, 0), (0, 0, 250)])
    out = viz.overlay(image, prediction, opacity=1.0)
    assert out[0, 0].tolist() == [0, 0, 250]
    assert out[1, 1].tolist() == [0, 0, 0]


def test_a_prediction_reads_as_a_label_map_and_scores_against_one():
    from segdemo.metrics import score

    probabilities = np.zeros((2, 2, 3), dtype=np.float32)
    probabilities[0, 0, :] = 0.9          # class a: the top row
    probabilities[1, :, 0] = 0.8          # class b: the left column, more sure of a than b at (0, 0)
    prediction = Prediction(probabilities, "multilabel", ("a", "b"), [(255, 0, 0), (0, 0, 255)])
    assert prediction.labels().tolist() == [[1, 1, 1], [2, 0, 0]]
    assert prediction.fractions() == {"background": round(2 / 6, 6), "a": 0.5, "b": round(1 / 6, 6)}
    truth = np.array([[1, 1, 0], [2, 0, 255]], dtype=np.uint8)   # a label map; 255: ignored
    metrics = score(prediction, truth)
    # Multi-label classes are scored channel by channel: b is also predicted at (0, 0), under a.
    assert metrics["dice"][0] == pytest.approx(2 * 2 / (3 + 2)) and metrics["dice"][1] == pytest.approx(2 / 3)
    smaller = prediction.resized(1, 1)
    assert smaller.size == (1, 1) and smaller.classes == prediction.classes
    kept = prediction.resized(2, 3, dtype=np.float16)  # what the Upload tab keeps to redraw
    assert kept.probabilities.dtype == np.float16 and np.array_equal(kept.labels(), prediction.labels())
    assert score(kept, truth)["dice"] == pytest.approx(metrics["dice"])


def test_error_map_categories():
    prediction = np.array([[1, 1, 0, 2]], dtype=np.uint8)
    truth = np.array([[1, 0, 1, 1]], dtype=np.uint8)
    out = viz.label_error_map(prediction, truth)
    assert out[0, 0].tolist() == list(viz.ERROR_COLORS["true positive"])
    assert out[0, 1].tolist() == list(viz.ERROR_COLORS["false positive"])
    assert out[0, 2].tolist() == list(viz.ERROR_COLORS["false negative"])
    assert out[0, 3].tolist() == list(viz.ERROR_COLORS["wrong class"])
    ignored = viz.label_error_map(prediction, np.array([[255, 0, 0, 0]], dtype=np.uint8))
    assert ignored[0, 0].tolist() == list(viz.ERROR_COLORS["ignored"])


def test_channel_maps_are_ordered_dark_to_bright():
    probabilities = np.linspace(0, 1, 10, dtype=np.float32).reshape(1, 1, 10).repeat(2, axis=0)
    prediction = Prediction(probabilities, "multilabel", ("a", "b"), [(1, 1, 1), (2, 2, 2)])
    maps = viz.channel_maps(prediction)
    assert len(maps) == 2 and maps[0].shape == (1, 10, 3)
    brightness = maps[0][0].astype(int).sum(axis=1)
    assert brightness[-1] > brightness[0]
    gray = viz.channel_maps(prediction, heat=False)
    assert gray[0][0, 0].tolist() == [0, 0, 0] and gray[0][0, -1].tolist() == [255, 255, 255]


def test_class_masks_are_the_regions_the_overlay_tints():
    rng = np.random.default_rng(1)
    image = np.full((20, 30, 3), 128, dtype=np.uint8)
    for task, channels in (("multiclass", 4), ("multilabel", 3)):
        raw = rng.random((channels, 20, 30)).astype(np.float32)
        probabilities = raw / raw.sum(axis=0) if task == "multiclass" else raw
        colors = [(0, 0, 0), (250, 0, 0), (0, 250, 0), (0, 0, 250)][-channels:]
        prediction = Prediction(probabilities, task, tuple("abcd"[:channels]), colors)
        regions = viz.class_masks(prediction, threshold=0.6)
        tinted = (viz.overlay(image, prediction, threshold=0.6, opacity=1.0) != image).any(axis=2)
        assert np.array_equal(np.any([mask for _, _, mask in regions], axis=0), tinted), task
        assert all(mask.any() for _, _, mask in regions)
