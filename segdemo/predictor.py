"""What every model the app can pick offers, learned or classical: :class:`Predictor`.

A :class:`~segdemo.inference.Segmenter` (a trained network) and a classical method of
:mod:`segdemo.classical` (a vesselness filter, GrabCut) answer the same questions, so that every tab,
``/segment`` and the request budget treat them alike: their name, task, classes and colors, what
they are (:meth:`Predictor.card`), what an image will cost before anything runs
(:meth:`Predictor.work`, from which :meth:`~Predictor.largest_within` and :meth:`~Predictor.check_work`
follow), and their :class:`~segdemo.prediction.Prediction` of an image.

No torch here: a classical method runs without it.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import LimitError
from .limits import Deadline, size_text
from .prediction import Prediction
from .tasks import LabelSpace

# What a request's memory grows by, per pixel: 4 bytes per class of probabilities and 1 of masks
# drawn from them, 20 for the decoded input, label map and pictures. Measured: the U-Net on a
# photo read at 3570² (12.7 megapixels, 6 classes) peaked 780 MB above idle; this says 635 MB,
# the rest being one tile's activations, which the tile size bounds.
BYTES_PER_CLASS_PIXEL = 5
BYTES_PER_PIXEL = 20


class Predictor(LabelSpace):
    """A model ready to segment images (``label_names`` and ``label_colors`` name the values of its
    label maps).

    Attributes every predictor sets: ``name`` (what pickers show), ``task``, ``classes``, ``colors``,
    ``device``, ``meta`` (``task``, ``classes``, ``description``, ``domain`` … as a checkpoint's
    metadata holds them) and ``parameter_count``. ``learned`` says whether it is a trained network
    (it has layers to look inside) or a classical method; ``uses_field_of_view`` whether its
    :meth:`predict` takes a ``field_of_view`` mask (the retina's disc in a fundus photo).
    """

    name: str
    task: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    meta: dict
    parameter_count: int = 0
    learned = True
    uses_field_of_view = False

    # --- what subclasses give -----------------------------------------------------------------------
    def predict(self, image: np.ndarray, *, deadline: Deadline | None = None, threads: int | None = None) -> Prediction:
        """The prediction for an ``(H, W, 3)`` uint8 image; stops with
        :class:`~segdemo.errors.LimitError` once ``deadline`` has passed."""
        raise NotImplementedError

    def card(self) -> dict:
        """What the app shows about this model."""
        raise NotImplementedError

    def weight_bytes(self) -> int:
        """Bytes that keeping this model loaded costs (its weights)."""
        raise NotImplementedError

    @property
    def flop_per_pixel(self) -> float:
        """Floating-point operations per input pixel (of an image that is not shrunk first)."""
        raise NotImplementedError

    def work(self, height: int, width: int) -> tuple[float, int]:
        """``(floating-point operations, bytes)`` that predicting a ``height × width`` image takes."""
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------------------
    def answer_bytes(self, height: int, width: int) -> int:
        """The memory of a ``height × width`` answer: its probabilities, masks, the decoded input,
        the label map and the pictures made from them."""
        return height * width * (BYTES_PER_CLASS_PIXEL * len(self.classes) + BYTES_PER_PIXEL)

    def largest_within(self, height: int, width: int, flop: float | None, memory: int | None,
                       others: tuple[Predictor, ...] = ()) -> tuple[int, int]:
        """The largest ``(height, width)``, in the proportions of ``height × width`` and no larger,
        whose prediction by this model (and each of ``others``, for one image predicted by
        several) stays within ``flop`` operations and ``memory`` bytes (None: no limit)."""
        models = (self, *others)

        def fits(h: int, w: int) -> bool:
            costs = [model.work(h, w) for model in models]
            return (flop is None or sum(c[0] for c in costs) <= flop) and \
                (memory is None or max(c[1] for c in costs) <= memory)

        scale = 1.0
        while scale > 0:
            h, w = max(1, int(height * scale)), max(1, int(width * scale))
            if fits(h, w) or (h == 1 and w == 1):
                return h, w
            costs = [model.work(h, w) for model in models]
            ratios = [0.95]
            if flop is not None:
                ratios.append(math.sqrt(flop / max(sum(c[0] for c in costs), 1.0)))
            if memory is not None:
                ratios.append(math.sqrt(memory / max(max(c[1] for c in costs), 1)))
            scale *= min(min(ratios), 0.99)
        return 1, 1

    def check_work(self, height: int, width: int, flop: float | None, memory: int | None) -> None:
        """Raise :class:`~segdemo.errors.LimitError`, naming the limit and what would fit, when a
        ``height × width`` image is more than one request may ask of this model."""
        needed_flop, needed_memory = self.work(height, width)
        over_flop = flop is not None and needed_flop > flop
        over_memory = memory is not None and needed_memory > memory
        if not (over_flop or over_memory):
            return
        fit_h, fit_w = self.largest_within(height, width, flop, memory)
        if over_flop:
            need = (f"about {needed_flop / 1e9:,.0f} GFLOP of work ({self.flop_per_pixel / 1e3:,.0f} GFLOP per "
                    f"megapixel); one request may use {flop / 1e9:,.0f} GFLOP here (request_gflop)")
        else:
            need = (f"about {size_text(needed_memory)} for its {len(self.classes)} class maps; one request may use "
                    f"{size_text(memory)} here (request_mb)")
        raise LimitError(f"a {width}×{height} image with {self.name} needs {need}. At most about "
                         f"{fit_w}×{fit_h} fits with this model: send a smaller image or pick a lighter model")
