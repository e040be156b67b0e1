"""Conversions between probabilities, targets and label maps (one class index per pixel).

Label maps follow :func:`segdemo.tasks.label_space`: multiclass maps use class indices directly;
multi-label and binary maps use 0 for "no class" and ``k + 1`` for class ``k``.
"""

from __future__ import annotations

import cv2
import numpy as np

from .tasks import IGNORE_INDEX, MULTICLASS, check_task


def argmax_channels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index and value of the largest of ``(C, H, W)`` float32 channels, per pixel.

    Same result as ``argmax(axis=0)`` (ties go to the lower index) but one SIMD pass per
    channel: numpy's reduction over the outer axis is 5× slower on large maps.
    Returns ``(indices (H, W) uint8, maxima (H, W) float32)``.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.shape[0] > 256:
        raise ValueError("at most 256 channels fit a uint8 label map")
    best = np.ascontiguousarray(values[0]).copy()
    indices = np.zeros(values.shape[1:], dtype=np.uint8)
    fill = np.empty_like(indices)
    for index in range(1, values.shape[0]):
        channel = np.ascontiguousarray(values[index])
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
