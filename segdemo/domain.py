"""What a model knows and what an image is, so that the app can say when the two disagree.

A model's **domain** is the kind of image it was made for: synthetic shapes, photos (Pascal VOC's
21 classes), retinal vessels, any object from a box, or the user's own data. A checkpoint may say
it in ``meta["domain"]``; otherwise :func:`model_domain` reads it from the data it was trained on.

An image's **kind** (``"shapes"``, ``"retina"`` or ``"photo"``) is measured from its pixels, never
from its name, by :func:`describe_image` on a copy of at most 256 pixels a side (a few
milliseconds for any upload):

- **shapes**: segdemo's synthetic images are white shapes on black, grey and two-level: no colour,
  hardly any pixel between black and white, most of them black;
- **retina**: a fundus photograph is a bright disc, red above green above blue (the choroid's
  blood seen through the retina), inside a near-black margin: dark corners, a bright centre;
- **photo**: anything else (colour, texture, mid-tones).

:func:`domain_warning` turns a disagreement into a sentence for the person, pointing to the models
that fit. Domains ``"any"`` and ``"custom"`` are never warned about: a box model takes any object,
and what a model trained on someone's own data knows, only they know.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES, PHOTO, RETINA, ANY, CUSTOM = "shapes", "photo", "retina", "any", "custom"
DOMAINS = (SHAPES, PHOTO, RETINA, ANY, CUSTOM)
IMAGE_KINDS = (SHAPES, RETINA, PHOTO)

# What a model card says a domain is.
DOMAIN_TEXT = {
    SHAPES: "synthetic shapes (six classes, white on black)",
    PHOTO: "photos: Pascal VOC's 21 classes",
    RETINA: "retinal vessels in fundus photographs",
    ANY: "any object, from a box",
    CUSTOM: "your own data",
}
# What an image of each kind is called in a warning, alone and several.
KIND_TEXT = {SHAPES: "a synthetic shapes image (white on black)", RETINA: "a fundus photograph (retina)",
             PHOTO: "a natural photo"}
KIND_PLURAL = {SHAPES: "shapes images", RETINA: "fundus photographs", PHOTO: "photos"}
# What a model of a domain makes of an image outside it.
EXPECT = {SHAPES: "expect coloured blobs, not objects",
          PHOTO: "expect VOC classes guessed where there are none",
          RETINA: "expect edges and textures traced as vessels"}
# What would fit an image kind when no model of the catalog does.
WOULD_FIT = {
    SHAPES: "the shipped shapes models (unet_shapes) would",
    PHOTO: "the pretrained VOC models would, once their weights are on disk (the Models tab says which), "
           "or train one on your own annotations (Annotate, then Train)",
    RETINA: "train one on DRIVE (Train tab, data drive:PATH) or on your own annotations (Annotate, then Train)",
}
# Where a checkpoint's ``meta["data"]`` spec or name (lower case, before any ``:PATH``) says the domain.
DATA_DOMAINS = {"shapes": SHAPES, "drive": RETINA, "voc": PHOTO, "coco with voc labels": PHOTO}

MEASURE_SIDE = 256   # images are measured on a strided copy at most this large
DARK = 40            # a channel maximum below this is black (shapes' background, a fundus margin)
LIGHT = 215          # a grey above this is white
# Shapes images: measured 97–99 % black, 0 % mid-grey, no colour at all (seeds 0–4, 64 to 1024 px);
# scikit-image's Hubble deep field (black sky, faint coloured galaxies) has 6.5 % mid-grey and a
# colour spread of 8.4, the closest photo among its bundled images.
SHAPES_MAX_CHROMA = 6.0      # mean (max − min) over the channels
SHAPES_MAX_MID = 0.03        # fraction of grey levels between DARK and LIGHT
SHAPES_MIN_BLACK = 0.5
# Fundus photographs: scikit-image's retina has its corners 100 % dark and its disc red 207, green
# 83, blue 60 on average, 99 % of its pixels red > green ≥ blue; its coffee photo is as red (172,
# 94, 56, 99 %) but its corners are 25 % dark.
RETINA_MIN_CORNERS_DARK = 0.75
RETINA_MIN_CENTRE_LIT = 0.9
RETINA_MIN_RED_OVER_GREEN = 1.3
RETINA_MIN_ORDERED = 0.7     # fraction of lit pixels with red > green ≥ blue


@dataclass(frozen=True)
class ImageKind:
    """What an image looks like: ``kind`` (one of :data:`IMAGE_KINDS`) and the measures that said so."""

    kind: str
    reason: str


def _measure_copy(image: np.ndarray) -> np.ndarray:
    """Every n-th pixel of each row and column of ``image`` (so at most :data:`MEASURE_SIDE` a side),
    as int16: striding keeps the grey levels as they are (averaging would invent mid-greys at the
    edges of a two-level image)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image_kind needs an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    step = max(1, -(-max(image.shape[:2]) // MEASURE_SIDE))
    return image[::step, ::step].astype(np.int16)


def describe_image(image: np.ndarray) -> ImageKind:
    """The kind of an ``(H, W, 3)`` uint8 image, measured (see the module's description), with why."""
    small = _measure_copy(image)
    brightest, darkest = small.max(axis=2), small.min(axis=2)
    chroma = float((brightest - darkest).mean())
    grey = small.mean(axis=2)
    black = float((brightest < DARK).mean())
    mid = float(((grey >= DARK) & (grey <= LIGHT)).mean())
    if chroma < SHAPES_MAX_CHROMA and mid < SHAPES_MAX_MID and black >= SHAPES_MIN_BLACK:
        return ImageKind(SHAPES, f"grey and two-level: {100 * black:.0f} % black, {100 * mid:.1f} % between "
                                 "black and white")
    height, width = brightest.shape
    corner = max(1, min(height, width) // 10)
    corners = np.concatenate([brightest[rows, cols].ravel() for rows in (slice(0, corner), slice(-corner, None))
                              for cols in (slice(0, corner), slice(-corner, None))])
    corners_dark = float((corners < DARK).mean())
    top, left = int(0.35 * height), int(0.35 * width)
    centre = brightest[top:max(int(0.65 * height), top + 1), left:max(int(0.65 * width), left + 1)]
    centre_lit = float((centre >= DARK).mean())
    lit = brightest >= DARK
    if corners_dark >= RETINA_MIN_CORNERS_DARK and centre_lit >= RETINA_MIN_CENTRE_LIT:
        red, green, blue = (small[..., channel][lit] for channel in range(3))
        means = [float(values.mean()) for values in (red, green, blue)]
        ordered = float(((red > green) & (green >= blue)).mean())
        if means[0] >= RETINA_MIN_RED_OVER_GREEN * max(means[1], 1.0) and ordered >= RETINA_MIN_ORDERED:
            return ImageKind(RETINA, f"a reddish disc (red {means[0]:.0f}, green {means[1]:.0f}, blue {means[2]:.0f} "
                                     f"on average) in a dark margin ({100 * corners_dark:.0f} % of the corners black)")
    return ImageKind(PHOTO, f"neither white-on-black shapes nor a fundus disc: colour spread {chroma:.0f}, "
                            f"{100 * mid:.0f} % mid-tones, {100 * corners_dark:.0f} % of the corners black")


def image_kind(image: np.ndarray) -> str:
    """``"shapes"``, ``"retina"`` or ``"photo"``: what an ``(H, W, 3)`` uint8 image looks like
    (:func:`describe_image` says why)."""
    return describe_image(image).kind


def model_domain(meta: dict) -> str:
    """The domain (one of :data:`DOMAINS`) of the model a checkpoint's ``meta`` describes: its own
    ``meta["domain"]`` where it has one, else its training data's (``meta["data"]``: shapes,
    DRIVE, VOC, COCO with VOC labels); any other data (a folder, the Annotate tab's datasets, none
    recorded) is the user's own: ``"custom"``."""
    declared = meta.get("domain")
    if declared in DOMAINS:
        return declared
    data = meta.get("data")
    # The spec a source was opened by (``folder:PATH``) says more than its name (a folder's
    # classes.json may call its data anything): the name decides only where there is no spec.
    said = (data.get("spec") or data.get("name")) if isinstance(data, dict) else data
    if not isinstance(said, str):
        return CUSTOM
    return DATA_DOMAINS.get(said.partition(":")[0].strip().lower(), CUSTOM)


def warns(domain: str, kind: str) -> bool:
    """Whether an image of ``kind`` is plainly outside a model of ``domain``."""
    return domain in IMAGE_KINDS and kind in IMAGE_KINDS and domain != kind


def domain_warning(model_name: str, model_domain_key: str, image_kind: str, fitting_models: list[str]) -> str | None:
    """What to tell the person who runs ``model_name`` (of domain ``model_domain_key``) on an image of
    ``image_kind``; None when there is nothing to warn about (the kinds agree, or the domain is
    ``"any"`` or ``"custom"``). ``fitting_models`` are the names of the models at hand that fit the
    image; where there are none, the warning says what would."""
    if not warns(model_domain_key, image_kind):
        return None
    if fitting_models:
        pointer = f"Models for {KIND_PLURAL[image_kind]} here: {', '.join(fitting_models)}."
    else:
        pointer = f"No model here knows {KIND_PLURAL[image_kind]}: {WOULD_FIT[image_kind]}."
    return (f"This looks like {KIND_TEXT[image_kind]}, but {model_name} knows only "
            f"{DOMAIN_TEXT[model_domain_key]}; {EXPECT[model_domain_key]}. {pointer}")
