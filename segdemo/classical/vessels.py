"""Retinal vessels without training: Frangi's vesselness filter inside the retina's field of view.

A vessel in a fundus photograph is a dark, thin, elongated ridge, darkest in the green channel.
Frangi et al. (1998) find such ridges from the Hessian (the second derivatives) of the image blurred
at several scales σ: across a vessel the intensity curves up strongly, along it hardly at all, so
one eigenvalue is large and positive and the other near zero. Their "vesselness" is large exactly
there, and the largest over the scales answers vessels of every width. That is the whole model: a
hand-made rule, no training, no weights; what a U-Net learns from DRIVE's annotations instead.

The steps (:func:`vesselness`): the green channel, a 3×3 median against the sensor's speckle (which
the smallest scale would otherwise answer), the dark surround replaced by a smooth continuation of
the retina (else the disc's rim is the strongest "ridge" of all), the filter
(``skimage.filters.frangi``), and nothing kept within a few pixels of the rim. The field of view is
a DRIVE ``*_mask.gif`` when given, else found in the image (:func:`find_field_of_view`).

Vesselness has no natural threshold; Otsu's, on its square root inside the field of view (its
histogram is very skewed), separates vessels from background on our synthetic retinas within a
few hundredths of the best threshold's F1. The probability is a monotone map of the vesselness
``v``, ``v² / (v² + t²)``, so Otsu's threshold ``t`` is 0.5: the app's threshold slider keeps more
(below 0.5) or fewer (above) vessels, and the ROC AUC is the vesselness's own.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from skimage.filters import frangi, threshold_otsu

from ..data.drive import INFO as DRIVE
from ..errors import ImageError
from ..tasks import BINARY
from . import METHOD_DOMAINS, VESSELS
from .base import FLOP_PER_SECOND, ClassicalSegmenter

SIGMAS = (1.2, 1.6, 2.0, 2.5, 3.0)   # scales in pixels for DRIVE's size: vessels 1 to about 8 pixels wide
DRIVE_DIAMETER = 540      # pixels across DRIVE's field of view, the size SIGMAS are chosen for
WORK_SIDE = 1024          # a larger photo is filtered shrunk to this longer side (and σ grows with the disc)
MEDIAN = 3                # the median filter against speckle, pixels
FILL_SIGMA = 8.0          # how far the retina's continuation is blurred into the surround, pixels
RIM = 3                   # pixels kept clear inside the field of view's edge (at DRIVE's size)
# Finding the field of view: a bright disc on a dark surround.
FOV_THRESHOLD = (15, 60)  # Otsu's brightness threshold, held within these (uint8)
FOV_DARK = 25             # the surround's median brightness is below this
FOV_SMALLEST = 0.2        # the disc covers at least this share of the image
# Cost, measured once here (CPU time, see segdemo.classical.base): 0.55-0.65 µs per pixel filtered
# at DRIVE's scale, all steps included (σ above 1: skimage truncates the kernels of σ ≤ 1 at 100σ,
# which took twice the time for the same answer), growing with σ; the full-size steps of a shrunk
# photo per pixel of it. Memory: tracemalloc's peak was 46 bytes per pixel filtered at 512×512, the
# answer's probability included; the full-size masks and probability of a shrunk photo per pixel.
SECONDS_PER_WORK_PIXEL = 0.6e-6
SECONDS_PER_PIXEL = 0.02e-6
BYTES_PER_WORK_PIXEL = 64
BYTES_PER_PIXEL = 12


def find_field_of_view(image: np.ndarray) -> np.ndarray:
    """The retina's disc in a fundus photograph, ``(H, W)`` bool: the largest bright region (Otsu's
    threshold on the brightest channel, held within :data:`FOV_THRESHOLD`) with its holes filled,
    where it is surrounded by dark; else (not a fundus photograph) the whole image."""
    brightness = image.max(axis=2)
    threshold, _ = cv2.threshold(brightness, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    low, high = FOV_THRESHOLD
    bright = (brightness > min(max(threshold, low), high)).astype(np.uint8)
    count, components, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    whole = np.ones(brightness.shape, bool)
    if count < 2:
        return whole
    disc = components == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    # Holes: what of the rest cannot be reached from the image's border (a dark lesion, a vessel).
    outside = (~disc).astype(np.uint8)
    count, pieces = cv2.connectedComponents(outside, connectivity=4)
    border = np.unique(np.concatenate([pieces[0], pieces[-1], pieces[:, 0], pieces[:, -1]]))
    disc |= ~np.isin(pieces, border[border > 0]) & (outside > 0)
    if disc.mean() < FOV_SMALLEST or disc.all() or np.median(brightness[~disc]) >= FOV_DARK:
        return whole
    return disc


def _continued(green: np.ndarray, fov: np.ndarray, sigma: float) -> np.ndarray:
    """``green`` with the outside of ``fov`` replaced by the blurred retina around it (a normalized
    convolution), and by the retina's median where the blur does not reach."""
    weight = cv2.GaussianBlur(fov.astype(np.float32), (0, 0), sigma)
    blurred = cv2.GaussianBlur(green * fov, (0, 0), sigma)
    reached = weight > 1e-3
    fill = np.where(reached, blurred / np.where(reached, weight, 1.0), np.median(green[fov]))
    return np.where(fov, green, fill).astype(np.float32)


def vesselness(image: np.ndarray, fov: np.ndarray, scale: float = 1.0, check=lambda: None) -> np.ndarray:
    """Frangi's vesselness of an ``(H, W, 3)`` uint8 fundus ``image``, ``(H, W)`` float32 ≥ 0, zero
    outside ``fov`` (bool) less a rim of :data:`RIM` pixels; its scales are :data:`SIGMAS` × ``scale``.
    ``check()`` is called before each scale (a request's deadline)."""
    green = cv2.medianBlur(np.ascontiguousarray(image[..., 1]), MEDIAN).astype(np.float32)
    green = _continued(green, fov, FILL_SIGMA * scale)
    strongest = np.zeros(green.shape, np.float32)
    for sigma in SIGMAS:
        check()
        np.maximum(strongest, frangi(green, sigmas=[sigma * scale], black_ridges=True), out=strongest)
    rim = max(1, round(RIM * scale))
    inner = cv2.erode(fov.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim + 1,) * 2))
    strongest[inner == 0] = 0
    return strongest


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of vesselness ``values``, found on their square roots (inf when they are
    all the same: no vessel anywhere)."""
    roots = np.sqrt(values.astype(np.float32, copy=False))
    if roots.size == 0 or roots.min() == roots.max():
        return math.inf
    return float(threshold_otsu(roots)) ** 2


def probability(values: np.ndarray, threshold: float) -> np.ndarray:
    """Vesselness as a probability: ``v² / (v² + t²)``, 0.5 at the threshold ``t``, monotone."""
    if not math.isfinite(threshold):
        return np.zeros(values.shape, np.float32)
    squared = np.square(values, dtype=np.float32)
    return squared / (squared + np.float32(threshold) ** 2)


class VesselSegmenter(ClassicalSegmenter):
    """Retinal vessels by Frangi's vesselness (see the module): binary, class "vessel"."""

    uses_field_of_view = True

    def __init__(self):
        sigmas = f"σ {SIGMAS[0]:g}–{SIGMAS[-1]:g} px"
        super().__init__({
            "title": "classical: retinal vessels (Frangi)", "task": BINARY, "classes": list(DRIVE.classes),
            "colors": [list(c) for c in DRIVE.colors], "domain": METHOD_DOMAINS[VESSELS],
            "method": f"Frangi's multi-scale vesselness filter (Frangi et al. 1998), {sigmas} at DRIVE's size",
            "description": (
                "Made for retinal fundus photographs (DRIVE). A hand-made rule, nothing learned: in the green "
                "channel a vessel is a dark ridge, so across it the image curves up strongly and along it "
                "hardly at all. The Hessian (second derivatives) of the image blurred at several scales "
                f"({sigmas}) measures that; the strongest answer over the scales is the vesselness. It is "
                "computed inside the retina's field of view: the DRIVE *_mask.gif when you upload one in the "
                "Upload tab, else the bright disc found in the image."),
            "threshold": "0.5 is Otsu's threshold of the vesselness inside the field of view (the probability is "
                         "v² / (v² + t²)): lower keeps more vessels, higher fewer",
        })

    # --- cost -----------------------------------------------------------------------------------------
    @staticmethod
    def _work_size(height: int, width: int) -> tuple[int, int, float]:
        """The size the filter runs at, and the factor its scales grow by there."""
        shrink = min(1.0, WORK_SIDE / max(height, width))
        work_h, work_w = max(1, round(height * shrink)), max(1, round(width * shrink))
        return work_h, work_w, max(1.0, 0.93 * min(work_h, work_w) / DRIVE_DIAMETER)  # DRIVE: 540 of 584

    @property
    def flop_per_pixel(self) -> float:
        """At DRIVE's size (a larger image is filtered shrunk, at larger scales)."""
        return (SECONDS_PER_WORK_PIXEL + SECONDS_PER_PIXEL) * FLOP_PER_SECOND

    def work(self, height: int, width: int) -> tuple[float, int]:
        work_h, work_w, scale = self._work_size(height, width)
        filtered, pixels = work_h * work_w, height * width
        seconds = filtered * SECONDS_PER_WORK_PIXEL * scale + pixels * SECONDS_PER_PIXEL  # kernels grow with σ
        return seconds * FLOP_PER_SECOND, (self.answer_bytes(height, width) + filtered * BYTES_PER_WORK_PIXEL
                                           + pixels * BYTES_PER_PIXEL)

    # --- prediction -----------------------------------------------------------------------------------
    def _probability(self, image: np.ndarray, check, field_of_view: np.ndarray | None = None
                     ) -> tuple[np.ndarray, str]:
        height, width = image.shape[:2]
        if field_of_view is not None:
            field_of_view = np.asarray(field_of_view)
            if field_of_view.shape != (height, width):
                raise ImageError(f"the field-of-view mask is {field_of_view.shape[1]}×{field_of_view.shape[0]} "
                                 f"but the image is {width}×{height}; they must be the same size")
            field_of_view = field_of_view > 0
            if not field_of_view.any():
                raise ImageError("the field-of-view mask marks no pixel: it should be white on the retina")
        work_h, work_w, _ = self._work_size(height, width)
        shrunk = (work_h, work_w) != (height, width)
        work = cv2.resize(image, (work_w, work_h), interpolation=cv2.INTER_AREA) if shrunk else image
        if field_of_view is not None:
            fov, found = field_of_view, "from the mask"
            if shrunk:
                fov = cv2.resize(fov.astype(np.uint8), (work_w, work_h), interpolation=cv2.INTER_NEAREST) > 0
        else:
            fov = find_field_of_view(work)
            found = "found in the image" if not fov.all() else "the whole image (no dark surround)"
        scale = max(1.0, 2 * math.sqrt(fov.sum() / math.pi) / DRIVE_DIAMETER)
        values = vesselness(work, fov, scale, check)
        check()
        threshold = otsu_threshold(values[fov])
        chance = probability(values, threshold)
        if shrunk:
            chance = cv2.resize(chance, (width, height), interpolation=cv2.INTER_LINEAR)
            inside = field_of_view if field_of_view is not None else \
                cv2.resize(fov.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
            chance[~inside] = 0
        how = (f"Frangi vesselness, σ {SIGMAS[0] * scale:.1f}–{SIGMAS[-1] * scale:.1f} px"
               + (f" on the image shrunk to {work_w}×{work_h}" if shrunk else "")
               + f", field of view {found}, 0.5 = Otsu's threshold ({threshold:.3g})")
        return chance, how
