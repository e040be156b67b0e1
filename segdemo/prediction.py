"""What a model says about one image: the one type that every picture, metric and answer is made from.

:meth:`segdemo.inference.Segmenter.predict` returns a :class:`Prediction`; so does a training
snapshot. It holds the class probabilities and what is needed to read them (the task, the class
names and colors) and to report them (the model's name, the time it took, how it was computed).
:mod:`segdemo.viz` draws it, :mod:`segdemo.metrics` scores it, and the app's tabs, ``/segment``,
the predict CLI and the training snapshots all go through those two, so a prediction looks and
scores the same wherever it is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .labels import probabilities_to_labels
from .tasks import MULTICLASS, LabelSpace, check_task


@dataclass(frozen=True)
class Prediction(LabelSpace):
    """A model's probabilities for one image, with the names and colors to read them by
    (``label_names`` and ``label_colors`` name the values of its label map).

    Attributes:
        probabilities: ``(C, H, W)``, one channel per class: a softmax over the classes for
            multiclass tasks, an independent sigmoid per class for multi-label and binary ones.
            float32 from a model; float16 where a page keeps one to redraw it (:meth:`resized`).
        task: ``multilabel``, ``multiclass`` or ``binary`` (:mod:`segdemo.tasks`).
        classes: the name of each channel.
        colors: the ``(r, g, b)`` of each channel.
        model: the display name of the model that made it.
        seconds: wall time of the forward pass(es).
        path: how it was computed (e.g. "fp32, channels_last, batch norms folded").
    """

    probabilities: np.ndarray
    task: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    model: str = ""
    seconds: float = 0.0
    path: str = ""
    _labels: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        check_task(self.task)
        if self.probabilities.ndim != 3 or len(self.probabilities) != len(self.classes):
            raise ValueError(f"probabilities {self.probabilities.shape} do not match {len(self.classes)} classes")
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "colors", tuple(tuple(int(v) for v in c) for c in self.colors))

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.probabilities.shape[1], self.probabilities.shape[2]

    def labels(self, threshold: float = 0.5) -> np.ndarray:
        """The ``(H, W)`` uint8 label map (``threshold`` matters for multi-label and binary
        tasks only). The last one asked for is kept, since a picture, a PNG and the class
        fractions of one answer all need it."""
        key = None if self.task == MULTICLASS else float(threshold)
        if key not in self._labels:
            self._labels.clear()
            self._labels[key] = probabilities_to_labels(self.probabilities, self.task, threshold)
        return self._labels[key]

    def fractions(self, threshold: float = 0.5) -> dict[str, float]:
        """The share of pixels of each label-map value, by name."""
        labels = self.labels(threshold)
        counts = np.bincount(labels.ravel(), minlength=len(self.label_names))
        return {name: round(float(count) / labels.size, 6) for name, count in zip(self.label_names, counts)}

    def resized(self, height: int, width: int, *, dtype=np.float32) -> Prediction:
        """The same prediction at another size (each channel area-averaged when shrinking), to
        show a large image at screen size, its probabilities stored as ``dtype`` (float16 halves
        what a page keeps: 80 MB instead of 161 MB for 21 classes at 1600×1200)."""
        import cv2

        if (height, width) == self.size:
            return replace(self, probabilities=self.probabilities.astype(dtype, copy=False))
        interpolation = cv2.INTER_AREA if height < self.size[0] else cv2.INTER_LINEAR
        channels = np.empty((len(self.classes), height, width), dtype=dtype)
        for index, channel in enumerate(self.probabilities):
            channels[index] = cv2.resize(channel, (width, height), interpolation=interpolation)
        return replace(self, probabilities=channels)
