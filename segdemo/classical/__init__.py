"""Classical segmentation: methods that learn nothing, in the same pickers as the trained networks.

They answer every tab as a network does (:class:`~segdemo.predictor.Predictor`), so an image can be
segmented by a hand-made filter and by a U-Net side by side:

- ``vessels`` (:mod:`.vessels`): retinal vessels by Frangi's multi-scale vesselness filter, inside the
  retina's field of view (a DRIVE ``*_mask.gif`` when given, else found in the image).
- ``grabcut`` (:mod:`.grabcut`): the object in a box by OpenCV's GrabCut
  (:func:`segdemo.assist.box_mask`); without a drawn box, the image less an eighth on each side.

Numpy, OpenCV and scikit-image only: no torch, no weights, nothing downloaded. Listing them imports
none of that (:data:`METHODS`); :func:`create` imports a method's module when it is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..domain import ANY, RETINA

if TYPE_CHECKING:
    from .base import ClassicalSegmenter

VESSELS, GRABCUT = "vessels", "grabcut"

# Each method's title, as pickers show it after the catalog's "classical: ".
METHODS = {VESSELS: "retinal vessels (Frangi)", GRABCUT: "object in a box (GrabCut)"}
# What images each knows (segdemo.domain's keys): the catalog reads it without loading the method.
METHOD_DOMAINS = {VESSELS: RETINA, GRABCUT: ANY}


def create(method: str) -> ClassicalSegmenter:
    """A ready :class:`~segdemo.classical.base.ClassicalSegmenter` for ``method`` (a key of :data:`METHODS`)."""
    if method == VESSELS:
        from .vessels import VesselSegmenter

        return VesselSegmenter()
    if method == GRABCUT:
        from .grabcut import GrabCutSegmenter

        return GrabCutSegmenter()
    raise ValueError(f"unknown classical method {method!r}; expected one of {', '.join(METHODS)}")
