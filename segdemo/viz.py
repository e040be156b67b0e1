"""Pictures of predictions, masks and label maps, all vectorized numpy (no per-pixel Python loops).

Every function returns ``(H, W, 3)`` uint8 RGB arrays (or lists of them), ready for an image
widget or a PNG. Predictions are drawn from a :class:`~segdemo.prediction.Prediction`, so a model's
answer looks the same in every tab, over the API, in the predict CLI and in training snapshots.
"""

from __future__ import annotations

import cv2
import numpy as np

from .prediction import Prediction
from .tasks import IGNORE_INDEX, MULTICLASS

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


def overlay(image: np.ndarray, prediction: Prediction, *, threshold: float = 0.5,
            opacity: float = 0.5) -> np.ndarray:
    """Draw a prediction over its ``(H, W, 3)`` uint8 image.

    Multiclass: each pixel is tinted by its most probable class, class 0 (the background) left
    untinted. Multi-label and binary: each class whose probability passes ``threshold`` is drawn,
    overlapping classes blend their colors. ``opacity`` runs from 0 (image only) to 1 (mask only).
    """
    if prediction.task == MULTICLASS:
        return overlay_labels(image, prediction.labels(), prediction.colors, opacity=opacity)
    return overlay_masks(image, prediction.probabilities > threshold, prediction.colors, opacity=opacity)


def class_masks(prediction: Prediction, *, threshold: float = 0.5) -> list[tuple[str, tuple, np.ndarray]]:
    """``(name, color, mask)`` of each class :func:`overlay` draws, for a viewer that draws them
    itself (the Upload tab's highlight-on-click legend): the pixels of each class of the label map
    (multiclass, background left out), or of each class over ``threshold`` (multi-label, binary:
    they may overlap). Classes with no pixel are left out."""
    if prediction.task == MULTICLASS:
        labels = prediction.labels()
        regions = [(prediction.classes[value], prediction.colors[value], labels == value)
                   for value in np.unique(labels) if 0 < value < len(prediction.classes)]
    else:
        regions = [(name, color, channel > threshold)
                   for name, color, channel in zip(prediction.classes, prediction.colors, prediction.probabilities)]
    return [(name, color, mask) for name, color, mask in regions if mask.any()]


def overlay_masks(image: np.ndarray, masks: np.ndarray, colors, *, opacity: float = 0.5) -> np.ndarray:
    """Draw ``(C, H, W)`` multi-label masks (1 or True where a class is) over their image; where
    classes overlap, their colors blend."""
    active = np.asarray(masks).astype(np.uint8)
    color = colorize_multilabel(active, colors, background=(0, 0, 0))
    return _blend(image, color, active.any(axis=0), opacity)


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


def _gray(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as uint8 0..255 (saturating and rounded)."""
    return cv2.convertScaleAbs(np.asarray(values, dtype=np.float32), alpha=255.0)


def heat_colors(values: np.ndarray) -> np.ndarray:
    """An ``(H, W)`` array of values in [0, 1] (a probability, an uncertainty) drawn in viridis on
    that absolute scale, 0 dark and 1 bright (outside values clipped): ``(H, W, 3)`` uint8."""
    return _take_rgb(_heat_table(), _gray(values))


def channel_maps(prediction: Prediction, *, heat: bool = True) -> list[np.ndarray]:
    """One picture per output channel: 0 → dark, 1 → bright (viridis, or gray with ``heat=False``)."""
    return [heat_colors(channel) if heat else cv2.cvtColor(_gray(channel), cv2.COLOR_GRAY2RGB)
            for channel in prediction.probabilities]


def error_map(prediction: Prediction, truth: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
    """Where a prediction is right and wrong against a ground-truth label map in its label space."""
    return label_error_map(prediction.labels(threshold), truth)


def label_error_map(prediction: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """Where a predicted label map is right and wrong, against a ground truth.

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


def downscale(image: np.ndarray, side: int) -> np.ndarray:
    """Shrink an ``(H, W[, C])`` picture (area-averaged) so that its longer side is at most ``side``."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def side_by_side(*pictures: np.ndarray, gap: int = 4) -> np.ndarray:
    """Pictures of equal height in one row, separated by white gaps."""
    height = pictures[0].shape[0]
    spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
    parts = []
    for index, picture in enumerate(pictures):
        if index:
            parts.append(spacer)
        parts.append(picture)
    return np.concatenate(parts, axis=1)


def heat_picture(values: np.ndarray) -> np.ndarray:
    """An ``(H, W)`` array of any range drawn from its minimum (dark) to its maximum (bright) in
    viridis, ``(H, W, 3)`` uint8 (a constant array is drawn dark): a feature map's channel."""
    values = np.asarray(values, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    gray = cv2.convertScaleAbs(values, alpha=scale, beta=-low * scale)
    return _take_rgb(_heat_table(), gray)


def confusion_picture(confusion, classes, *, title: str = "confusion (rows: truth, share of each row)") -> np.ndarray:
    """A confusion matrix ``(C, C)`` of pixel counts (row = true class, column = predicted) drawn
    row-normalized with each cell's share written in, ``(H, W, 3)`` uint8: where each class's
    pixels went. Rows with no pixel stay blank."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(confusion, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
    size = len(classes)
    side = min(9.0, 1.6 + 0.5 * size)
    figure = Figure(figsize=(side + 1.2, side), dpi=80)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(size), classes, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(size), classes, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("truth")
    axes.set_title(title, fontsize=9)
    if size <= 12:
        for row in range(size):
            for column in range(size):
                if not np.isnan(shares[row, column]):
                    axes.text(column, row, f"{shares[row, column]:.2f}", ha="center", va="center", fontsize=7,
                              color="white" if shares[row, column] > 0.5 else "black")
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
