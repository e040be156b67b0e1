"""Annotation help that needs no trained model: a box (and clicks) turned into a mask.

:func:`box_mask` runs OpenCV's GrabCut (Rother et al. 2004: colour models of object and background,
refined by a graph cut) inside a box the user drew. It can start from a mask the user already has
(a model's pre-fill, an earlier box) and take clicks that say "this is object" or "this is
background", which is how CVAT, Label Studio and MONAI Label turn a box or a click into a mask.

Everything here is numpy and OpenCV: no torch, nothing downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from .errors import ImageError

GRABCUT_ITERATIONS = 5
WORK_SIDE = 640          # GrabCut runs on the box's surroundings shrunk to at most this side
CLICK_RADIUS = 5         # pixels around a click that it marks, at the image's size
MARGIN = 0.25            # context kept around the box on each side, as a share of its size


def check_box(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """``box`` = ``(x0, y0, x1, y1)`` in pixels as whole numbers, corners in any order; refuses an
    empty box and one that is not inside a ``height × width`` image with a clear
    :class:`~segdemo.errors.ImageError`."""
    try:
        x0, y0, x1, y1 = (round(float(value)) for value in box)
    except (TypeError, ValueError) as error:
        raise ImageError(f"a box is four numbers (x0, y0, x1, y1) in pixels; got {box!r}") from error
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ImageError(f"the box ({x0}, {y0}, {x1}, {y1}) is empty: drag out a box at least 2 pixels wide and high")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ImageError(f"the box ({x0}, {y0}, {x1}, {y1}) is not inside the {width}×{height} image")
    return x0, y0, x1, y1


def box_mask(image: np.ndarray, box: Sequence[float], *, mask: np.ndarray | None = None,
             positive: Iterable[Sequence[float]] = (), negative: Iterable[Sequence[float]] = (),
             iterations: int = GRABCUT_ITERATIONS) -> np.ndarray:
    """The object inside ``box``, as a ``(H, W)`` bool mask (nothing outside the box).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        box: ``(x0, y0, x1, y1)`` in pixels (x to the right, y down; x1, y1 exclusive).
        mask: ``(H, W)`` bool, what is already marked as this object (a pre-fill): GrabCut starts
            from it (probably object inside it, probably background elsewhere in the box) instead
            of from "everything in the box is probably object".
        positive: ``(x, y)`` clicks on the object; they and their surroundings are object for sure.
        negative: ``(x, y)`` clicks on background.
        iterations: GrabCut's rounds of colour-model fitting.

    Raises:
        ImageError: for an image that is not ``(H, W, 3)`` uint8, an empty box or one outside it.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError("box_mask needs an (H, W, 3) uint8 image")
    height, width = image.shape[:2]
    x0, y0, x1, y1 = check_box(box, height, width)
    if mask is not None and mask.shape != (height, width):
        raise ImageError(f"the mask is {mask.shape[1]}×{mask.shape[0]} but the image is {width}×{height}")
    # The box with some context around it (GrabCut learns the background's colours from there),
    # shrunk so that a box on a large photo costs what one on a small photo does.
    pad_x, pad_y = max(4, int(MARGIN * (x1 - x0))), max(4, int(MARGIN * (y1 - y0)))
    left, top = max(0, x0 - pad_x), max(0, y0 - pad_y)
    right, bottom = min(width, x1 + pad_x), min(height, y1 + pad_y)
    scale = min(1.0, WORK_SIDE / max(right - left, bottom - top))

    def shrink(array: np.ndarray, interpolation) -> np.ndarray:
        crop = array[top:bottom, left:right]
        if scale == 1.0:
            return np.ascontiguousarray(crop)
        size = (max(1, round((right - left) * scale)), max(1, round((bottom - top) * scale)))
        return cv2.resize(crop, size, interpolation=interpolation)

    def at_work_scale(x: float, y: float) -> tuple[int, int]:
        return int((x - left) * scale), int((y - top) * scale)

    work = shrink(image, cv2.INTER_AREA)
    work_h, work_w = work.shape[:2]
    (bx0, by0), (bx1, by1) = at_work_scale(x0, y0), at_work_scale(x1, y1)
    bx1, by1 = max(bx1, bx0 + 2), max(by1, by0 + 2)
    seeds = np.full((work_h, work_w), cv2.GC_BGD, np.uint8)
    inside = seeds[by0:by1, bx0:bx1]
    if mask is not None and mask[y0:y1, x0:x1].any():
        start = shrink(mask.astype(np.uint8), cv2.INTER_NEAREST)[by0:by1, bx0:bx1]
        inside[:] = np.where(start > 0, cv2.GC_PR_FGD, cv2.GC_PR_BGD)
    else:
        inside[:] = cv2.GC_PR_FGD
    if not (seeds == cv2.GC_BGD).any() and not (seeds == cv2.GC_PR_BGD).any():
        # A box over the whole image leaves no background to learn from: its rim is probably background.
        seeds[[0, -1], :] = seeds[:, [0, -1]] = cv2.GC_PR_BGD
    radius = max(1, round(CLICK_RADIUS * scale))
    for points, value in ((negative, cv2.GC_BGD), (positive, cv2.GC_FGD)):
        for point in points:
            x, y = (float(v) for v in point[:2])
            if not (0 <= x < width and 0 <= y < height):
                raise ImageError(f"the click ({x:.0f}, {y:.0f}) is not inside the {width}×{height} image")
            cv2.circle(seeds, at_work_scale(x, y), radius, int(value), thickness=-1)
    if (seeds == cv2.GC_FGD).any() or (seeds == cv2.GC_PR_FGD).any():
        background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        bgr = cv2.cvtColor(work, cv2.COLOR_RGB2BGR)
        cv2.grabCut(bgr, seeds, None, background, foreground, int(iterations), cv2.GC_INIT_WITH_MASK)
    found = ((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)).astype(np.uint8)
    if scale != 1.0:
        found = cv2.resize(found, (right - left, bottom - top), interpolation=cv2.INTER_NEAREST)
    result = np.zeros((height, width), bool)
    result[top:bottom, left:right] = found > 0
    outside = np.ones((height, width), bool)
    outside[y0:y1, x0:x1] = False
    result[outside] = False
    return result
