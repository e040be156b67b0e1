"""Pictures of masks and predictions, all vectorized numpy (no per-pixel Python loops).

Every function returns ``(H, W, 3)`` uint8 RGB arrays (or lists of them), ready for an image
widget or a PNG.
"""

from __future__ import annotations

import cv2
import numpy as np

from .labels import probabilities_to_labels
from .tasks import IGNORE_INDEX, MULTICLASS, check_task

IGNORE_COLOR = (224, 224, 192)  # VOC's color for "ignore" borders
ERROR_COLORS = {
    "true positive": (0, 170, 70),
    "false positive": (230, 40, 40),
    "false negative": (40, 110, 240),
    "wrong class": (250, 170, 20),
    "ignored": (90, 90, 90),
}


def color_table(colors, *, ignore_color=IGNORE_COLOR) -> np.ndarray:
    """A 256-entry lookup table ``(256, 3)`` uint8: ``colors`` first, 255 → ``ignore_color``,
    other unused values black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    table[: len(colors)] = colors
    table[IGNORE_INDEX] = ignore_color
    return table


def _take_rgb(table: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``table[labels]`` for a uint8 ``(H, W)`` map and a ``(256, 3)`` table, with OpenCV's
    SIMD lookup (10× numpy's fancy indexing); OpenCV copies the table's channel order as is."""
    return cv2.applyColorMap(np.ascontiguousarray(labels, dtype=np.uint8),
                             np.ascontiguousarray(table, dtype=np.uint8).reshape(256, 1, 3))


def colorize_labels(labels: np.ndarray, colors) -> np.ndarray:
    """Color an ``(H, W)`` label map: value ``k`` gets ``colors[k]``, 255 the ignore color."""
    return _take_rgb(color_table(colors), np.asarray(labels))


def colorize_multilabel(masks: np.ndarray, colors, background=(255, 255, 255)) -> np.ndarray:
    """Color a ``(C, H, W)`` multi-label mask: each pixel gets the mean color of its classes
    (overlaps blend), ``background`` where no class is present.

    The tutorial's ``masks_to_colorimg`` loops over pixels; here each pixel's set of classes is
    packed into one byte and looked up in a table of the mean colors of every combination.
    """
    masks = np.asarray(masks)
    channels = masks.shape[0]
    palette = np.asarray(colors, dtype=np.float32).reshape(channels, 3)
    if channels > 8:  # too many combinations for one byte: one matrix product instead
        active = (masks == 1).reshape(channels, -1).astype(np.float32)
        count = active.sum(axis=0)[:, None]
        mean = (active.T @ palette) / np.maximum(count, 1.0)
        out = np.where(count > 0, mean, np.asarray(background, dtype=np.float32))
        return out.reshape(*masks.shape[1:], 3).round().astype(np.uint8)
    code = np.zeros(masks.shape[1:], dtype=np.uint8)
    for index in range(channels):  # one vectorized pass per class
        code |= (masks[index] == 1).view(np.uint8) << index
    return _take_rgb(_combination_table(palette, background), code)


def _combination_table(palette: np.ndarray, background) -> np.ndarray:
    """Mean color of every subset of classes, indexed by the subset's bit pattern."""
    combos = np.arange(256)
    bits = ((combos[:, None] >> np.arange(len(palette))) & 1).astype(np.float32)
    count = bits.sum(axis=1, keepdims=True)
    table = np.where(count > 0, (bits @ palette) / np.maximum(count, 1.0), np.asarray(background, np.float32))
    return table.round().astype(np.uint8)


def _blend(image: np.ndarray, color: np.ndarray, covered: np.ndarray, opacity: float) -> np.ndarray:
    """``color`` over ``image`` with ``opacity`` where ``covered``, ``image`` elsewhere."""
    opacity = float(np.clip(opacity, 0.0, 1.0))
    color = np.array(color, dtype=np.uint8, copy=True)
    # Where nothing is drawn the color is the image itself, so one weighted sum does everything.
    cv2.copyTo(image, (~np.asarray(covered, dtype=bool)).view(np.uint8), color)
    return cv2.addWeighted(np.ascontiguousarray(image), 1.0 - opacity, color, opacity, 0.0)


def overlay(image: np.ndarray, probabilities: np.ndarray, task: str, colors, *,
            threshold: float = 0.5, opacity: float = 0.5, labels: np.ndarray | None = None) -> np.ndarray:
    """Draw a prediction over its image.

    Args:
        image: ``(H, W, 3)`` uint8.
        probabilities: ``(C, H, W)`` from :meth:`segdemo.inference.Segmenter.predict`.
        task: ``multilabel``, ``binary`` or ``multiclass``.
        colors: one ``(r, g, b)`` per output channel.
        threshold: for multi-label and binary tasks, the probability at which a class is drawn.
        opacity: 0 (image only) to 1 (mask only).
        labels: for multiclass tasks, the label map if already computed (saves the argmax).

    Multiclass class 0 (background) is left untinted; multi-label overlaps blend their colors.
    """
    check_task(task)
    probabilities = np.asarray(probabilities)
    if task == MULTICLASS:
        if labels is None:
            labels = probabilities_to_labels(probabilities, task)
        color = _take_rgb(color_table(colors), labels)
        covered = labels != 0
    else:
        active = (probabilities > threshold).astype(np.uint8)
        color = colorize_multilabel(active, colors, background=(0, 0, 0))
        covered = active.any(axis=0)
    return _blend(image, color, covered, opacity)


def overlay_labels(image: np.ndarray, labels: np.ndarray, colors, *, opacity: float = 0.5,
                   skip_zero: bool = True) -> np.ndarray:
    """Draw an ``(H, W)`` label map over its image (ground truths, annotations)."""
    color = _take_rgb(color_table(colors), np.asarray(labels, dtype=np.uint8))
    covered = (labels != 0) if skip_zero else np.ones(labels.shape, dtype=bool)
    return _blend(image, color, covered & (labels != IGNORE_INDEX), opacity)


_HEAT_TABLE: np.ndarray | None = None


def _heat_table() -> np.ndarray:
    """A 256-step perceptual color map (matplotlib's viridis), built once."""
    global _HEAT_TABLE
    if _HEAT_TABLE is None:
        from matplotlib import colormaps

        _HEAT_TABLE = (colormaps["viridis"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
    return _HEAT_TABLE


def channel_maps(probabilities: np.ndarray, *, heat: bool = True) -> list[np.ndarray]:
    """One picture per output channel: 0 → dark, 1 → bright (viridis, or gray with ``heat=False``)."""
    pictures = []
    table = _heat_table() if heat else None
    for channel in np.asarray(probabilities, dtype=np.float32):
        gray = cv2.convertScaleAbs(channel, alpha=255.0)  # saturating and rounded to 0..255
        pictures.append(_take_rgb(table, gray) if heat else cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB))
    return pictures


def error_map(prediction: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """Where a prediction is right and wrong, against a ground truth.

    Takes two boolean ``(H, W)`` masks (one class) or two ``(H, W)`` label maps (0 = background;
    255 in ``truth`` = ignored). Colors: :data:`ERROR_COLORS` (true positive green, false positive
    red, false negative blue, wrong class orange, ignored gray); true negatives stay black.
    """
    prediction = np.asarray(prediction)
    truth = np.asarray(truth)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and ground truth {truth.shape} differ in size")
    ignored = np.zeros(truth.shape, dtype=bool) if ignore is None else np.asarray(ignore, dtype=bool)
    if truth.dtype != bool:
        ignored = ignored | (truth == IGNORE_INDEX)
    predicted_fg = prediction != 0
    true_fg = (truth != 0) & ~ignored
    same = prediction == truth
    categories = np.zeros(truth.shape, dtype=np.uint8)  # 0: true negative
    categories[predicted_fg & true_fg & same] = 1
    categories[predicted_fg & ~true_fg] = 2
    categories[~predicted_fg & true_fg] = 3
    categories[predicted_fg & true_fg & ~same] = 4
    categories[ignored] = 5
    table = np.zeros((256, 3), dtype=np.uint8)
    table[1:6] = [ERROR_COLORS[k] for k in ("true positive", "false positive", "false negative",
                                            "wrong class", "ignored")]
    return _take_rgb(table, categories)
