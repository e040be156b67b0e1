"""What one request may ask of the models: images read within a model's budget.

A request's budget is work (the model's cost per pixel × the pixels, ``request_gflop``) and memory
(its class maps, ``request_mb``), from :mod:`segdemo.limits`; both are known from the image's
header and the model before anything is decoded or run. Endpoints whose answer is data (``/segment``'s
full-size label map, the Shapes tab's scores) refuse what is over it with a message that names the
limit and what would fit; endpoints that only show a picture (the Upload tab, Compare, the
Annotate tab's pre-fill) read the image downscaled to fit, and say so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..errors import LimitError
from ..image_files import image_size, read_image
from ..limits import current, request_bytes

if TYPE_CHECKING:  # the page is built before torch is imported
    from ..prediction import Prediction
    from ..predictor import Predictor  # a trained Segmenter or a classical method


def request_budget() -> tuple[float | None, int]:
    """``(floating-point operations or None for no limit, bytes)`` one request may use."""
    limits = current()
    return (limits.request_gflop * 1e9 if limits.request_gflop > 0 else None), request_bytes(limits)


def check_images(segmenter: Predictor, count: int, height: int, width: int) -> None:
    """Refuse (:class:`~segdemo.errors.LimitError`) ``count`` images of ``height × width`` that
    ``segmenter`` could not predict within one request's budget."""
    flop, memory = request_budget()
    if count == 1:
        segmenter.check_work(height, width, flop, memory)
        return
    needed = count * segmenter.work(height, width)[0]
    if flop is not None and needed > flop:
        raise LimitError(f"{count} images of {width}×{height} with {segmenter.name} need about {needed / 1e9:,.0f} "
                         f"GFLOP of work; one request may use {flop / 1e9:,.0f} GFLOP here (request_gflop): pick "
                         "fewer or smaller images, or a lighter model")
    segmenter.check_work(height, width, None, memory)


def predict_within_budget(segmenter: Predictor, image: np.ndarray, deadline, threads: int | None = None,
                          images: int = 1) -> tuple[Prediction, str]:
    """``segmenter``'s prediction for ``image`` (with ``threads`` torch threads), made on a downscaled
    copy when the whole image is more than one request may ask (then brought back to the image's
    size), and a note saying so. A request that predicts ``images`` images one after another
    (ranking a dataset) gives each that share of its work; memory is freed between them."""
    height, width = image.shape[:2]
    flop, memory = request_budget()
    fit = segmenter.largest_within(height, width, None if flop is None else flop / max(1, images), memory)
    if fit == (height, width):
        return segmenter.predict(image, deadline=deadline, threads=threads), ""
    small = cv2.resize(image, (fit[1], fit[0]), interpolation=cv2.INTER_AREA)
    prediction = segmenter.predict(small, deadline=deadline, threads=threads).resized(height, width)
    return prediction, shrunk_note(small, (height, width))


def read_within_budget(path: str, segmenters: list[Predictor]) -> tuple[np.ndarray, tuple[int, int]]:
    """The image at ``path``, downscaled so that each of ``segmenters`` predicting it stays within
    one request's budget (all of them together: they share the request), and its size as sent,
    ``(height, width)``."""
    height, width = image_size(path)
    flop, memory = request_budget()
    first, *others = segmenters
    fit = first.largest_within(height, width, flop, memory, tuple(others))
    return read_image(path, shrink_to=fit if fit != (height, width) else None), (height, width)


def refuse_over_budget(path: str, segmenter: Predictor) -> np.ndarray:
    """The image at ``path``, read only if ``segmenter`` may predict it whole in one request."""
    check_images(segmenter, 1, *image_size(path))
    return read_image(path)


def shrunk_note(picture: np.ndarray, sent: tuple[int, int]) -> str:
    """A sentence for an answer about an image read smaller than it was sent ("" if it was not)."""
    if picture.shape[:2] == tuple(sent):
        return ""
    return (f" The {sent[1]}×{sent[0]} image was predicted at {picture.shape[1]}×{picture.shape[0]}, the most "
            "one request may ask here.")
