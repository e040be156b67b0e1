"""Where a model is unsure, and which images to label next (as ilastik shows).

A model's probabilities say how sure it is of each pixel: the entropy of a pixel's distribution is
0 where one answer has all the probability and greatest where every answer is equally likely.
:func:`entropy_map` scales it to [0, 1], :func:`uncertainty_picture` draws it over the image, and
:func:`image_uncertainty` turns it into one score per image, so that :func:`rank_by_uncertainty`
can order a dataset's images most uncertain first: labelling those teaches a model the most.

numpy only (no torch): it reads :class:`~segdemo.prediction.Prediction` objects from any model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import cv2
import numpy as np

from . import viz
from .prediction import Prediction
from .tasks import MULTICLASS

TOP_SHARE = 0.1   # an image's score: the mean uncertainty of its most uncertain tenth of pixels
_TINY = 1e-12     # log(0) is never taken: p log p → 0 as p → 0


def _p_log_p(probability: np.ndarray) -> np.ndarray:
    """``p log p`` (natural log) of ``(H, W)`` probabilities in [0, 1], 0 where ``p`` is 0."""
    return probability * np.log(np.maximum(probability, _TINY))


def entropy_map(prediction: Prediction) -> np.ndarray:
    """How unsure ``prediction`` is of each pixel: ``(H, W)`` float32 in [0, 1] (0: certain).

    Multiclass (a softmax over ``C`` classes): the entropy ``-Σ p log p`` of each pixel's
    distribution over the classes, divided by its largest value ``log C`` (every class equally
    likely), so models of 2 and of 21 classes read on one scale.

    Multi-label and binary (an independent sigmoid per class): each channel is its own yes/no
    question, so each has a binary entropy (1 at ``p = 0.5``, 0 at 0 and 1), and a pixel is as
    unsure as its most unsure question: the largest over the channels. A sum would grow with the
    number of classes and leave [0, 1], and a mean would hide one unsure class among many sure
    "no"s, which is exactly the pixel that needs a label.
    """
    height, width = prediction.size
    channels = len(prediction.classes)
    if prediction.task == MULTICLASS:
        total = np.zeros((height, width), dtype=np.float32)
        if channels < 2:  # one class: nothing to be unsure about
            return total
        for channel in prediction.probabilities:  # one channel at a time: (H, W) of memory, not (C, H, W)
            total -= _p_log_p(np.clip(channel, 0.0, 1.0, dtype=np.float32))
        entropy = total / np.float32(math.log(channels))
    else:
        entropy = np.zeros((height, width), dtype=np.float32)
        for channel in prediction.probabilities:
            probability = np.clip(channel, 0.0, 1.0, dtype=np.float32)
            binary = -(_p_log_p(probability) + _p_log_p(1.0 - probability)) / np.float32(math.log(2.0))
            np.maximum(entropy, binary, out=entropy)
    return np.clip(entropy, 0.0, 1.0, out=entropy).astype(np.float32, copy=False)


def uncertainty_picture(image: np.ndarray, entropy: np.ndarray, *, opacity: float = 0.85) -> np.ndarray:
    """``entropy`` (``(H, W)`` in [0, 1], from :func:`entropy_map`) drawn over its ``(H, W, 3)``
    uint8 ``image`` in viridis (:func:`segdemo.viz.heat_colors`): ``(H, W, 3)`` uint8.

    The image is dimmed to gray so the colors read on any photo, and each pixel's color covers it
    in proportion to its uncertainty (up to ``opacity``): where the model is sure the image shows
    through; where it is unsure, bright yellow-green.
    """
    image = np.asarray(image, dtype=np.uint8)
    entropy = np.asarray(entropy, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != entropy.shape:
        raise ValueError(f"an (H, W, 3) image and an (H, W) entropy map are needed, not {image.shape} and "
                         f"{entropy.shape}")
    dimmed = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)[:, :, None] * np.float32(0.6)
    weight = (np.float32(np.clip(opacity, 0.0, 1.0)) * np.clip(entropy, 0.0, 1.0))[:, :, None]
    picture = dimmed * (1.0 - weight) + viz.heat_colors(entropy) * weight
    return np.clip(picture + 0.5, 0, 255).astype(np.uint8)


def image_uncertainty(entropy: np.ndarray, *, top: float = TOP_SHARE) -> float:
    """One score for an image from its ``(H, W)`` entropy map: the mean of its most uncertain
    ``top`` share of pixels (a tenth by default). The mean over all pixels would rank an image
    whose only unsure part is one small object as sure, because the background it stands on is
    certain; the single largest pixel would rank by one noisy pixel."""
    values = np.asarray(entropy, dtype=np.float32).ravel()
    if values.size == 0:
        raise ValueError("an entropy map with no pixels has no uncertainty")
    if not 0.0 < top <= 1.0:
        raise ValueError(f"top must be a share in (0, 1], not {top}")
    count = max(1, math.ceil(top * values.size))
    return float(np.partition(values, values.size - count)[values.size - count:].mean())


def rank_by_uncertainty(predictions: Iterable[tuple[str, Prediction]], *, top: float = TOP_SHARE
                        ) -> list[tuple[str, float]]:
    """``(name, score)`` of each ``(name, prediction)``, most uncertain first (equal scores by
    name), each scored by :func:`image_uncertainty` of its :func:`entropy_map`.

    ``predictions`` is read one at a time and nothing of a prediction is kept but its score, so a
    generator that predicts each image as it is asked holds one prediction in memory at a time.
    """
    scores = [(name, image_uncertainty(entropy_map(prediction), top=top)) for name, prediction in predictions]
    return sorted(scores, key=lambda pair: (-pair[1], pair[0]))
