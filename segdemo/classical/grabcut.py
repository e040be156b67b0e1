"""The object in a box without training: OpenCV's GrabCut as a model of the pickers.

GrabCut (Rother et al. 2004) is told only "the object is inside this box". It fits two colour
models, one to the pixels outside the box (surely background) and one to those inside (probably
object), then cuts the box along the cheapest boundary between the two with a graph cut, and
repeats. It knows no classes and learned nothing: it works on any image whose object differs in
colour from its surroundings, and fails where they look alike. The work is
:func:`segdemo.assist.box_mask`'s, which the Annotate tab's box tool uses too.

As a model of the pickers it has no drawn box: it uses :func:`default_box`, the image less an eighth
on each side (``predict(image, box=...)`` takes another). Its answer is a hard mask: probability
1 on the object, 0 elsewhere, so the threshold slider changes nothing.
"""

from __future__ import annotations

import numpy as np

from ..assist import WORK_SIDE, box_mask
from ..errors import ImageError
from ..tasks import BINARY
from . import GRABCUT, METHOD_DOMAINS
from .base import FLOP_PER_SECOND, ClassicalSegmenter

MARGIN = 1 / 8            # of each side, left out of the default box
COLOR = (255, 170, 0)
# Cost, measured once here (CPU time, see segdemo.classical.base): 10-12 µs per pixel of the image
# GrabCut works on (box_mask shrinks the box's surroundings to at most WORK_SIDE = 640 a side), and
# the full-size steps per pixel of the image. Memory: OpenCV's graph holds a node and eight edge
# ends per pixel it works on (about 300 bytes, beyond tracemalloc's sight); masks at full size.
SECONDS_PER_WORK_PIXEL = 12e-6
SECONDS_PER_PIXEL = 0.02e-6
BYTES_PER_WORK_PIXEL = 320
BYTES_PER_PIXEL = 8


def default_box(height: int, width: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: a ``height × width`` image less :data:`MARGIN` of each side."""
    left, top = round(width * MARGIN), round(height * MARGIN)
    return left, top, max(width - left, left + 2), max(height - top, top + 2)


class GrabCutSegmenter(ClassicalSegmenter):
    """GrabCut in :func:`default_box` (or a given box): binary, class "object"."""

    def __init__(self):
        super().__init__({
            "title": "classical: object in a box (GrabCut)", "task": BINARY, "classes": ["object"],
            "colors": [list(COLOR)], "domain": METHOD_DOMAINS[GRABCUT],
            "method": "OpenCV's GrabCut (Rother et al. 2004): colour models and a graph cut, 5 rounds",
            "description": (
                "Any image, any object: told only that the object is inside a box, it learns the colours of "
                "the background from outside the box and of the object from inside, then cuts the box along "
                "the cheapest boundary between them (a graph cut), five times over. Nothing is trained. Here "
                "the box is the image less an eighth of each side, so it finds the object in the middle of "
                "the picture; the Annotate tab's box tool lets you draw the box yourself."),
            "threshold": "none: the answer is a hard mask (probability 1 on the object, 0 elsewhere)",
        })

    @property
    def flop_per_pixel(self) -> float:
        """Per pixel of an image up to 640 pixels a side (a larger one is worked on shrunk)."""
        return (SECONDS_PER_WORK_PIXEL + SECONDS_PER_PIXEL) * FLOP_PER_SECOND

    def work(self, height: int, width: int) -> tuple[float, int]:
        shrink = min(1.0, WORK_SIDE / max(height, width))   # the default box's surroundings are the image
        worked, pixels = height * width * shrink**2, height * width
        seconds = worked * SECONDS_PER_WORK_PIXEL + pixels * SECONDS_PER_PIXEL
        return seconds * FLOP_PER_SECOND, int(self.answer_bytes(height, width) + worked * BYTES_PER_WORK_PIXEL
                                              + pixels * BYTES_PER_PIXEL)

    def _probability(self, image: np.ndarray, check, box=None) -> tuple[np.ndarray, str]:
        height, width = image.shape[:2]
        if min(height, width) < 2:
            raise ImageError(f"{self.name} needs an image at least 2 pixels a side; this one is {width}×{height}")
        drawn = box is not None
        box = tuple(box) if drawn else default_box(height, width)
        mask = box_mask(image, box)
        x0, y0, x1, y1 = box
        where = "the drawn box" if drawn else "the default box (the image less an eighth of each side)"
        return mask.astype(np.float32), f"GrabCut in {where} ({x0}, {y0})–({x1}, {y1})"
