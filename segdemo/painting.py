"""Painted editor layers and label maps, each turned into the other.

The Annotate tab's brush paints RGBA layers in class colors; a label map holds one class index per
pixel. :func:`layer_from_labels` pre-fills the editor from a label map (a model's prediction, a
saved mask); :func:`labels_from_layers` reads the painting back, mapping every painted color to
the nearest class color so that anti-aliased stroke edges never become an in-between class.
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


def labels_from_layers(layers, colors, shape) -> np.ndarray:
    """Class indices from painted RGBA layers: later layers paint over earlier ones; a pixel is
    painted where alpha ≥ 128 (anti-aliased edges decide by majority), and takes the class of the
    nearest class color, so no in-between color leaks into the label map; unpainted (or erased)
    pixels are background (0)."""
    labels = np.zeros(shape[:2], dtype=np.uint8)
    palette = np.asarray(colors, dtype=np.int32)[1:]  # painting never selects the background color
    for layer in layers or []:
        layer = np.asarray(layer)
        if layer is None or layer.ndim != 3:
            continue
        if layer.shape[:2] != tuple(shape[:2]):
            raise AnnotationError(f"a painted layer is {layer.shape[1]}×{layer.shape[0]} but the image is "
                                  f"{shape[1]}×{shape[0]}")
        alpha = layer[:, :, 3] if layer.shape[2] == 4 else np.full(layer.shape[:2], 255, np.uint8)
        painted = alpha >= 128
        if painted.any():
            indices = nearest_palette_index(layer[:, :, :3][painted][None], palette)[0] + 1
            labels[painted] = indices
    return labels
