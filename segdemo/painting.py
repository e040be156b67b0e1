"""Painted editor layers and label maps, each turned into the other.

The Annotate tab's brush paints RGBA layers in class colors; a label map holds one class index per
pixel. :func:`strokes_from_layers` reads painted layers as where they are painted and with which
class, mapping every painted color to the nearest class color (the background's included: painting
the background color clears labels) so that anti-aliased stroke edges never become an in-between
class. :func:`layer_from_labels` turns a label map into such a layer, as an API client paints a
whole label map.
"""

from __future__ import annotations

import numpy as np

from .errors import AnnotationError
from .image_files import nearest_palette_index


def layer_from_labels(labels: np.ndarray, colors) -> np.ndarray:
    """An RGBA layer ``(H, W, 4)``: class colors, opaque where the label is not background."""
    table = np.zeros((256, 4), dtype=np.uint8)
    for index, color in enumerate(colors):
        if index > 0:
            table[index, :3] = color
            table[index, 3] = 255
    return table[np.asarray(labels, dtype=np.uint8)]


def strokes_from_layers(layers, colors, shape) -> tuple[np.ndarray, np.ndarray]:
    """Where painted RGBA layers are painted, and with which class.

    A pixel is painted where a layer's alpha is ≥ 128 (anti-aliased edges decide by majority); it
    takes the class of the class color nearest to its color, the background (class 0) included;
    later layers paint over earlier ones.

    Args:
        layers: ``(H, W, 4)`` (or ``(H, W, 3)``: opaque) uint8 layers; ``None`` entries are skipped.
        colors: the classes' ``(r, g, b)`` colors, the background's first.
        shape: the image's shape, ``(H, W, …)``.

    Returns:
        ``painted`` ``(H, W)`` bool and ``classes`` ``(H, W)`` uint8 (0 where nothing is painted).

    Raises:
        AnnotationError: for a layer of another size than the image.
    """
    painted = np.zeros(shape[:2], dtype=bool)
    classes = np.zeros(shape[:2], dtype=np.uint8)
    palette = np.asarray(colors, dtype=np.int32)
    for layer in layers or []:
        if layer is None or np.ndim(layer) != 3:
            continue
        layer = np.asarray(layer)
        if layer.shape[:2] != tuple(shape[:2]):
            raise AnnotationError(f"a painted layer is {layer.shape[1]}×{layer.shape[0]} but the image is "
                                  f"{shape[1]}×{shape[0]}")
        alpha = layer[:, :, 3] if layer.shape[2] == 4 else np.full(layer.shape[:2], 255, np.uint8)
        stroke = alpha >= 128
        if stroke.any():
            classes[stroke] = nearest_palette_index(layer[:, :, :3][stroke][None], palette)[0]
            painted |= stroke
    return painted, classes

