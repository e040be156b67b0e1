"""Conversions between probabilities, targets and label maps (one class index per pixel).

Label maps follow :func:`segdemo.tasks.label_space`: multiclass maps use class indices directly;
multi-label and binary maps use 0 for "no class" and ``k + 1`` for class ``k``.
"""

from __future__ import annotations

import cv2
import numpy as np

from .errors import ImageError
from .tasks import BINARY, IGNORE_INDEX, MULTICLASS, check_task


def argmax_channels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index and value of the largest of ``(C, H, W)`` float channels, per pixel.

    Same result as ``argmax(axis=0)`` (ties go to the lower index) but one SIMD pass per
    channel: numpy's reduction over the outer axis is 5× slower on large maps. Channels are made
    float32 one at a time, so float16 probabilities never exist as a whole float32 copy.
    Returns ``(indices (H, W) uint8, maxima (H, W) float32)``.
    """
    values = np.asarray(values)
    if values.shape[0] > 256:
        raise ValueError("at most 256 channels fit a uint8 label map")
    best = np.array(values[0], dtype=np.float32)
    indices = np.zeros(values.shape[1:], dtype=np.uint8)
    fill = np.empty_like(indices)
    for index in range(1, values.shape[0]):
        channel = np.ascontiguousarray(values[index], dtype=np.float32)
        better = cv2.compare(channel, best, cv2.CMP_GT)
        cv2.max(best, channel, dst=best)
        fill.fill(index)
        cv2.copyTo(fill, better, indices)
    return indices, best


def probabilities_to_labels(probabilities: np.ndarray, task: str, threshold: float = 0.5) -> np.ndarray:
    """Turn ``(C, H, W)`` probabilities into an ``(H, W)`` uint8 label map.

    Multiclass: the most probable class. Binary: 1 where the probability passes ``threshold``.
    Multi-label: ``k + 1`` for the most probable class among those that pass, 0 where none does.
    """
    check_task(task)
    indices, best = argmax_channels(probabilities)
    if task == MULTICLASS:
        return indices
    return np.where(best > threshold, indices + np.uint8(1), np.uint8(0)).astype(np.uint8)


def target_to_labels(target: np.ndarray, task: str) -> np.ndarray:
    """Turn a target into an ``(H, W)`` uint8 label map; ignored pixels stay 255.

    Where multi-label classes overlap the last class wins, which only matters for display."""
    check_task(task)
    target = np.asarray(target)
    if task == MULTICLASS:
        return target.astype(np.uint8)
    labels = np.zeros(target.shape[1:], dtype=np.uint8)
    for index in range(target.shape[0]):  # one vectorized pass per class
        labels[target[index] == 1] = index + 1
    labels[(target == IGNORE_INDEX).any(axis=0)] = IGNORE_INDEX
    return labels


def labels_to_target(labels: np.ndarray, task: str, num_classes: int) -> np.ndarray:
    """Inverse of :func:`target_to_labels` for label maps with one class per pixel (annotations)."""
    check_task(task)
    labels = np.asarray(labels, dtype=np.uint8)
    if task == MULTICLASS:
        return labels.copy()
    classes = np.arange(1, num_classes + 1, dtype=np.uint8)[:, None, None]
    target = (labels[None] == classes).astype(np.uint8)
    target[:, labels == IGNORE_INDEX] = IGNORE_INDEX
    return target


def fit_ground_truth(labels: np.ndarray, task: str, label_names, *, model: str = "the model") -> np.ndarray:
    """A ground-truth label map read from a file, checked against a model's label space.

    A binary model's mask may be 0/1 or 0/255 (DRIVE's manual annotations: bright means vessel,
    not "ignore"); any other model's values must name its labels (255 stays "ignored"). Raises
    :class:`~segdemo.errors.ImageError` naming the values that do not fit.
    """
    values = set(np.unique(labels).tolist())
    if task == BINARY:
        if 1 not in values:
            return np.where(labels > 127, 1, 0).astype(np.uint8)
        if values - {0, 1, IGNORE_INDEX}:
            raise ImageError(f"a binary mask holds 0 and 1 (or 0 and 255); this one holds {sorted(values)[:6]}")
        return labels
    known = len(label_names)
    unknown = sorted(v for v in values - {IGNORE_INDEX} if v >= known)
    if unknown:
        raise ImageError(f"the mask holds class values {unknown[:6]} but {model} knows values 0–{known - 1} "
                         f"({', '.join(label_names[:6])}{'…' if known > 6 else ''}) and 255 for ignore")
    return labels


def relabel_table(from_names, to_names, *, unmatched: int = 0) -> tuple[np.ndarray, list[str]]:
    """A lookup table from one label space's values to another's, matching class names without
    regard to case: ``table[value]`` is the value of the same-named class in ``to_names``, else
    ``unmatched``; 255 (ignored) stays 255. Also returns the names of ``from_names`` left unmatched.

    This is how a model's prediction pre-fills a dataset with other classes, and how a dataset
    fine-tunes a model trained on other labels."""
    to_index = {name.lower(): index for index, name in enumerate(to_names)}
    table = np.full(256, unmatched, dtype=np.uint8)
    table[IGNORE_INDEX] = IGNORE_INDEX
    missing = []
    for value, name in enumerate(from_names):
        if name.lower() in to_index:
            table[value] = to_index[name.lower()]
        else:
            missing.append(name)
    return table, missing


def clean_labels(labels: np.ndarray, *, min_area: int = 20) -> np.ndarray:
    """Remove specks and fill holes: connected pieces of a class smaller than ``min_area`` pixels
    are removed (become background), and background holes smaller than ``min_area`` inside a
    class are filled with that class."""
    labels = np.asarray(labels, dtype=np.uint8).copy()
    for value in np.unique(labels):
        if value in (0, IGNORE_INDEX):
            continue
        mask = (labels == value).astype(np.uint8)
        count, components, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < min_area) + 1
        if len(small):
            labels[np.isin(components, small)] = 0
    background = (labels == 0).astype(np.uint8)
    count, components, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=4)
    height, width = labels.shape
    for index in range(1, count):
        x, y, w, h, area = stats[index]
        touches_edge = x == 0 or y == 0 or x + w == width or y + h == height
        if area < min_area and not touches_edge:
            hole = components == index
            ring = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~hole
            neighbours = labels[ring]
            neighbours = neighbours[neighbours != 0]
            if len(neighbours):
                labels[hole] = np.bincount(neighbours).argmax()
    return labels
