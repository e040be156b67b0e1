"""Annotation help that needs no trained model: a box (and clicks) turned into a mask, a flood
fill by colour, and painting a class into a label map with a lock on the other classes.

:func:`box_mask` runs OpenCV's GrabCut (Rother et al. 2004: colour models of object and background,
refined by a graph cut) inside a box the user drew. It can start from a mask the user already has
(a model's pre-fill, an earlier box) and take clicks that say "this is object" or "this is
background", which is how CVAT, Label Studio and MONAI Label turn a box or a click into a mask.
:func:`flood_fill` is the paint bucket (cvat #2380); :func:`paint` puts a mask into a label map
as one class, and with its lock never overwrites another class; :func:`paint_strokes` paints the
editor's brush strokes (each in its class) the same way.

Everything here is numpy and OpenCV: no torch, nothing downloaded.
"""

from __future__ import annotations

import json
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
    _check_image(image, "box_mask")
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
            cv2.circle(seeds, at_work_scale(*_check_point(point, height, width)), radius, int(value), thickness=-1)
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


def flood_fill(image: np.ndarray, point: Sequence[float], tolerance: float) -> np.ndarray:
    """The connected region around ``point`` whose colours are within ``tolerance`` of the clicked
    pixel's colour, as a ``(H, W)`` bool mask (the paint bucket).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        point: ``(x, y)`` in pixels (x to the right, y down).
        tolerance: how far (0–255) each of a pixel's R, G and B may be from the clicked pixel's to
            be filled; every filled pixel is compared with the clicked one, not with its neighbour
            (OpenCV's ``FLOODFILL_FIXED_RANGE``), so a slow gradient does not leak the fill across
            the whole image. Neighbours are the 4 beside a pixel, so a one-pixel diagonal line holds
            the fill.

    Raises:
        ImageError: for an image that is not ``(H, W, 3)`` uint8, a point outside it or a tolerance
            outside 0–255.
    """
    _check_image(image, "flood_fill")
    height, width = image.shape[:2]
    x, y = _check_point(point, height, width)
    try:
        tolerance = float(tolerance)
    except (TypeError, ValueError) as error:
        raise ImageError(f"the tolerance is a number from 0 to 255; got {tolerance!r}") from error
    if not 0 <= tolerance <= 255:
        raise ImageError(f"the tolerance is a number from 0 to 255; got {tolerance:g}")
    filled = np.zeros((height + 2, width + 2), np.uint8)   # OpenCV's mask has a one-pixel rim
    flags = 4 | cv2.FLOODFILL_FIXED_RANGE | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
    cv2.floodFill(np.ascontiguousarray(image), filled, (x, y), 0, (tolerance,) * 3, (tolerance,) * 3, flags)
    return filled[1:-1, 1:-1] > 0


def paint(labels: np.ndarray, mask: np.ndarray, class_index: int, *, lock: bool = False) -> np.ndarray:
    """A new label map: ``labels`` with the pixels of ``mask`` set to ``class_index``.

    Args:
        labels: ``(H, W)`` uint8 class indices (0 is the background).
        mask: ``(H, W)`` bool, where to paint.
        class_index: the class painted (1 or more: painting the background is erasing).
        lock: the class lock: pixels that hold another class than the background and
            ``class_index`` keep it, so painting one class never erases another.

    Raises:
        ImageError: for a mask of another size than the label map.
    """
    labels = np.asarray(labels)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != labels.shape[:2]:
        raise ImageError(f"the mask is {mask.shape[1]}×{mask.shape[0]} but the label map is "
                         f"{labels.shape[1]}×{labels.shape[0]}")
    painted = labels.copy()
    painted[mask] = class_index
    return keep_locked(labels, painted, class_index) if lock else painted


def keep_locked(before: np.ndarray, after: np.ndarray, class_index: int) -> np.ndarray:
    """``after`` (a label map painted from ``before``) with every pixel that held a class other than
    the background and ``class_index`` in ``before`` given back to it: the class lock applied to
    whatever changed the labels (a brush stroke, a tool)."""
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape:
        raise ImageError(f"the label maps are {before.shape[1]}×{before.shape[0]} and {after.shape[1]}×{after.shape[0]}")
    locked = (before != 0) & (before != class_index)
    return np.where(locked, before, after).astype(after.dtype, copy=False)


def paint_strokes(labels: np.ndarray, painted: np.ndarray, classes: np.ndarray, *, lock: bool = False) -> np.ndarray:
    """A new label map: ``labels`` with brush strokes painted over them.

    Args:
        labels: ``(H, W)`` uint8 class indices, as they were before the strokes.
        painted: ``(H, W)`` bool, where a stroke is.
        classes: ``(H, W)`` uint8, each stroke's class (0, the background, erases).
        lock: the class lock: a stroke of class ``c`` changes only pixels that hold the background
            or ``c``; background strokes erase all the same (that is how a person takes a label back).

    Raises:
        ImageError: for strokes of another size than the label map.
    """
    painted, classes = np.asarray(painted, dtype=bool), np.asarray(classes)
    if classes.shape != painted.shape:
        raise ImageError(f"the strokes' classes are {classes.shape[1]}×{classes.shape[0]} but where they are "
                         f"painted is {painted.shape[1]}×{painted.shape[0]}")
    result = np.asarray(labels).copy()
    for index in np.unique(classes[painted]):   # each pixel has one stroke class: the masks are disjoint
        result = paint(result, painted & (classes == index), int(index), lock=lock and index != 0)
    return result


def parse_box(text) -> tuple[float, float, float, float]:
    """A box from ``"x0,y0,x1,y1"`` (spaces or commas between the numbers), a JSON list
    ``[x0, y0, x1, y1]`` or four numbers: what a person or an API client types."""
    numbers = _numbers(text, "a box")
    if len(numbers) != 4:
        raise ImageError(f"a box is four numbers x0, y0, x1, y1 in pixels; got {text!r}")
    return tuple(numbers)


def parse_points(text) -> list[tuple[float, float]]:
    """Clicks from ``"x,y; x,y"`` (or any list of numbers taken in pairs), a JSON list of
    ``[x, y]`` pairs, or nothing (no clicks)."""
    numbers = _numbers(text, "clicks") if text not in (None, "") else []
    if len(numbers) % 2:
        raise ImageError(f"clicks are pairs of numbers x, y in pixels; got {text!r}")
    return [(numbers[i], numbers[i + 1]) for i in range(0, len(numbers), 2)]


def _numbers(value, what: str) -> list[float]:
    """The numbers in ``value``: text (JSON or numbers between commas, semicolons and spaces) or a
    (nested) list of numbers."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else text.replace(";", " ").replace(",", " ").split()
        except json.JSONDecodeError as error:
            raise ImageError(f"{what}: {value!r} is not a JSON list of numbers") from error
    try:
        numbers = [float(v) for v in _flat(value)]
    except (TypeError, ValueError) as error:
        raise ImageError(f"{what}: {value!r} are not numbers") from error
    if not all(np.isfinite(numbers)):
        raise ImageError(f"{what}: {value!r} are not finite numbers")
    return numbers


def _flat(value) -> list:
    if isinstance(value, (list, tuple, np.ndarray)):
        return [item for part in value for item in _flat(part)]
    return [] if value is None else [value]


def _check_image(image, what: str) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"{what} needs an (H, W, 3) uint8 image")


def _check_point(point: Sequence[float], height: int, width: int) -> tuple[int, int]:
    """``(x, y)`` as whole pixels, refused with a clear message when it is not inside the image."""
    try:
        x, y = (float(value) for value in point[:2])
    except (TypeError, ValueError) as error:
        raise ImageError(f"a click is two numbers (x, y) in pixels; got {point!r}") from error
    if not (0 <= x < width and 0 <= y < height):
        raise ImageError(f"the click ({x:.0f}, {y:.0f}) is not inside the {width}×{height} image")
    return int(x), int(y)
