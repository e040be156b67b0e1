"""Metrics accumulated over a whole dataset, not averaged per batch.

:class:`SegmentationMetrics` keeps counts (true/false positives and negatives per class, or a
confusion matrix for multiclass tasks, and for binary tasks a histogram of probabilities for the
ROC curve) and turns them into numbers at the end. Counts add up, so a dataset can be fed in any
number of batches, or across processes (sum the :meth:`state` tensors), with the same result.

Conventions: pixels marked 255 in the target are skipped (VOC borders, DRIVE outside the field
of view). A class with no pixel in either prediction or target has an undefined Dice/IoU (NaN),
left out of the means.
"""

from __future__ import annotations

import numpy as np
import torch

from .labels import labels_to_target
from .prediction import Prediction
from .tasks import BINARY, IGNORE_INDEX, MULTICLASS, check_task, probabilities_from_logits

ROC_BINS = 1000


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1e-12),
                       torch.full_like(numerator, float("nan")))


def _nanmean(values: torch.Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if len(finite) else float("nan")


class SegmentationMetrics:
    """Accumulates per-class counts; :meth:`compute` gives Dice, IoU, accuracy and more.

    Args:
        task: ``multilabel``, ``multiclass`` or ``binary``.
        num_classes: output channels.
        threshold: probability at which a multi-label/binary pixel counts as positive.
        roc: for binary tasks, also keep a probability histogram for ROC AUC.
    """

    def __init__(self, task: str, num_classes: int, threshold: float = 0.5, roc: bool = True):
        self.task = check_task(task)
        self.num_classes = num_classes
        self.threshold = threshold
        self.roc = roc and task == BINARY
        self.reset()

    def reset(self) -> None:
        if self.task == MULTICLASS:
            self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.float64)
        else:
            self.counts = torch.zeros(4, self.num_classes, dtype=torch.float64)  # tp, fp, fn, tn
        if self.roc:
            self.histogram = torch.zeros(2, ROC_BINS, dtype=torch.float64)  # negatives, positives

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor, *, from_probabilities: bool = False) -> None:
        """Add a batch: ``logits`` (or probabilities) ``(N, C, H, W)``, ``target`` as in
        :mod:`segdemo.tasks`."""
        logits = logits.detach()
        target = target.detach()
        if self.task == MULTICLASS:
            prediction = logits.float().argmax(dim=1)
            valid = target != IGNORE_INDEX
            index = target[valid].long() * self.num_classes + prediction[valid]
            counts = torch.bincount(index, minlength=self.num_classes ** 2)
            self.confusion += counts.reshape(self.num_classes, self.num_classes).cpu().double()
            return
        if from_probabilities or self.roc or not 0 < self.threshold < 1:
            logits = logits.float()
            probabilities = logits if from_probabilities else probabilities_from_logits(logits, self.task)
            predicted = probabilities > self.threshold
        else:  # sigmoid(x) > t exactly where x > logit(t): no sigmoid over the batch (the loop's batch Dice)
            predicted = logits > float(np.log(self.threshold / (1 - self.threshold)))
        valid = target != IGNORE_INDEX
        predicted = predicted.contiguous() & valid  # summed in the target's layout (a channels_last
        actual = (target == 1) & valid              # prediction summed over N, H, W is several times slower)
        dims = (0, 2, 3)
        tp = (predicted & actual).sum(dim=dims)
        fp = predicted.sum(dim=dims) - tp
        fn = actual.sum(dim=dims) - tp
        tn = valid.sum(dim=dims) - tp - fp - fn
        self.counts += torch.stack([tp, fp, fn, tn]).cpu().double()
        if self.roc:
            bins = (probabilities[valid] * ROC_BINS).long().clamp_(0, ROC_BINS - 1)
            labels = actual[valid].long()
            counts = torch.bincount(labels * ROC_BINS + bins, minlength=2 * ROC_BINS)
            self.histogram += counts.reshape(2, ROC_BINS).cpu().double()

    def update_numpy(self, probabilities: np.ndarray, target: np.ndarray) -> None:
        """Add one image: probabilities ``(C, H, W)`` and its target (numpy, as the app has them)."""
        self.update(torch.from_numpy(np.ascontiguousarray(probabilities))[None],
                    torch.from_numpy(np.ascontiguousarray(target))[None], from_probabilities=True)

    # --- merging across batches and processes ---------------------------------------------------
    def state(self) -> torch.Tensor:
        """All counts as one flat float64 tensor (sum these across processes)."""
        parts = [self.confusion.flatten() if self.task == MULTICLASS else self.counts.flatten()]
        if self.roc:
            parts.append(self.histogram.flatten())
        return torch.cat(parts)

    def load_state(self, flat: torch.Tensor) -> None:
        flat = flat.detach().cpu().double()
        size = self.num_classes ** 2 if self.task == MULTICLASS else 4 * self.num_classes
        if self.task == MULTICLASS:
            self.confusion = flat[:size].reshape(self.num_classes, self.num_classes).clone()
        else:
            self.counts = flat[:size].reshape(4, self.num_classes).clone()
        if self.roc:
            self.histogram = flat[size:].reshape(2, ROC_BINS).clone()

    # --- results ----------------------------------------------------------------------------------
    def _class_counts(self) -> tuple[torch.Tensor, ...]:
        if self.task == MULTICLASS:
            tp = self.confusion.diagonal()
            fp = self.confusion.sum(dim=0) - tp
            fn = self.confusion.sum(dim=1) - tp
            tn = self.confusion.sum() - tp - fp - fn
            return tp, fp, fn, tn
        return tuple(self.counts)

    def compute(self) -> dict:
        """Per-class ``dice`` and ``iou`` (lists), ``mean_dice``, ``miou``, ``pixel_accuracy``;
        for multiclass tasks also ``confusion`` (pixel counts, row = true class, column = predicted,
        as lists of ints); for binary tasks also ``sensitivity``, ``specificity``, ``f1`` and ``auc``.
        Undefined values are NaN."""
        tp, fp, fn, tn = self._class_counts()
        dice = _ratio(2 * tp, 2 * tp + fp + fn)
        iou = _ratio(tp, tp + fp + fn)
        if self.task == MULTICLASS:
            accuracy = float(_ratio(self.confusion.diagonal().sum(), self.confusion.sum()))
        else:
            accuracy = float(_ratio((tp + tn).sum(), (tp + fp + fn + tn).sum()))
        result = {
            "dice": [float(v) for v in dice],
            "iou": [float(v) for v in iou],
            "mean_dice": _nanmean(dice),
            "miou": _nanmean(iou),
            "pixel_accuracy": accuracy,
        }
        if self.task == MULTICLASS:
            result["confusion"] = [[int(count) for count in row] for row in self.confusion.tolist()]
        if self.task == BINARY:
            result["sensitivity"] = float(_ratio(tp, tp + fn)[0])
            result["specificity"] = float(_ratio(tn, tn + fp)[0])
            result["f1"] = result["dice"][0]  # F1 of the positive class is its Dice
            if self.roc:
                result["auc"] = self.auc()
        return result

    def auc(self) -> float:
        """ROC AUC from the probability histogram: the chance that a random positive pixel
        scores above a random negative one (ties in one bin count half)."""
        negatives, positives = self.histogram
        total_negative, total_positive = negatives.sum(), positives.sum()
        if total_negative == 0 or total_positive == 0:
            return float("nan")
        below = torch.cumsum(negatives, 0) - negatives  # negatives in lower bins
        wins = (positives * (below + 0.5 * negatives)).sum()
        return float(wins / (total_negative * total_positive))


def score(prediction: Prediction, truth: np.ndarray, threshold: float = 0.5) -> dict:
    """Metrics of one prediction against its ground truth (see :meth:`SegmentationMetrics.compute`).

    ``truth`` is an ``(H, W)`` label map in the prediction's label space (what a mask file holds,
    255 = ignored), or a ``(C, H, W)`` multi-label target, whose classes may overlap (the shapes).
    """
    truth = np.asarray(truth)
    if truth.ndim == 2:
        truth = labels_to_target(truth, prediction.task, len(prediction.classes))
    metrics = SegmentationMetrics(prediction.task, len(prediction.classes), threshold)
    metrics.update_numpy(prediction.probabilities, truth)
    return metrics.compute()
