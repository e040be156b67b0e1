"""What the classical methods share: :class:`ClassicalSegmenter`, a
:class:`~segdemo.predictor.Predictor` without weights.

The request budget counts work in floating-point operations as a stand-in for time
(:mod:`segdemo.limits`: the networks' convolutions run at tens of GFLOP/s here). A filter or a graph
cut does other operations, at other speeds, so a classical method states its cost as the operations
that take as long: its CPU time per pixel, measured once on this project's 2-core machine, times
:data:`FLOP_PER_SECOND`. Its card says "GFLOP-equivalent" for that reason.
"""

from __future__ import annotations

import time

import numpy as np

from ..domain import DOMAIN_TEXT
from ..errors import ImageError
from ..limits import Deadline
from ..prediction import Prediction
from ..predictor import Predictor
from ..tasks import check_task

FLOP_PER_SECOND = 44e9   # the shipped U-Net's speed on 2 cores here (segdemo.limits): time → operations


class ClassicalSegmenter(Predictor):
    """A method that learns nothing, answering as a trained model does (one binary class here).

    Args:
        meta: ``title``, ``task``, ``classes``, ``colors``, ``domain``, ``method`` (what it is, a
            line), ``description`` (how it works) and ``threshold`` (what 0.5 means).
    """

    learned = False
    parameter_count = 0

    def __init__(self, meta: dict):
        self.meta = meta
        self.task = check_task(meta["task"])
        self.classes = tuple(meta["classes"])
        self.colors = tuple(tuple(int(v) for v in c) for c in meta["colors"])
        self.name = meta["title"]
        self.device = "cpu"
        self.source = None

    def weight_bytes(self) -> int:
        """Nothing: a classical method has no weights to keep."""
        return 0

    def card(self) -> dict:
        """What the app shows about this method."""
        return {
            "name": self.name,
            "method": self.meta["method"],
            "how it works": self.meta["description"],
            "threshold": self.meta["threshold"],
            "parameters": 0,
            "task": self.task,
            "classes": list(self.classes),
            "domain": DOMAIN_TEXT[self.meta["domain"]],
            "work per megapixel": f"about {self.flop_per_pixel / 1e3:,.0f} GFLOP-equivalent",
            "device": self.device,
        }

    def predict(self, image: np.ndarray, *, deadline: Deadline | None = None, threads: int | None = None,
                **options) -> Prediction:
        """The method's prediction for an ``(H, W, 3)`` uint8 image, with its wall time. The
        ``deadline`` is checked before and after each costly step; ``threads`` is ignored (these
        methods run on one core). ``options`` are the method's own (a field of view, a box)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageError(f"{self.name} needs an (H, W, 3) uint8 image")
        start = time.perf_counter()
        check = deadline.check if deadline is not None else (lambda: None)
        check()
        probability, how = self._probability(image, check, **options)
        check()
        return Prediction(probability[None].astype(np.float32, copy=False), self.task, self.classes, self.colors,
                          model=self.name, seconds=time.perf_counter() - start, path=how)

    def _probability(self, image: np.ndarray, check, **options) -> tuple[np.ndarray, str]:
        """The ``(H, W)`` probability of the class, and a line saying how it was computed;
        ``check()`` between costly steps."""
        raise NotImplementedError
