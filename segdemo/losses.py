"""Losses. All take logits ``(N, C, H, W)`` and targets laid out as :mod:`segdemo.tasks` says;
pixels marked :data:`~segdemo.tasks.IGNORE_INDEX` count for nothing.

- :class:`BCEDiceLoss`: binary cross-entropy + soft Dice, for multi-label and binary tasks (the
  tutorials use 0.5/0.5); with ``bce_weight=1`` plain BCE. BCE gives smooth per-pixel gradients
  from the start; Dice looks at each class's overlap as a whole, so small classes count as much as
  large ones.
- :class:`CrossEntropyDiceLoss`: cross-entropy (optionally + soft Dice) for multiclass tasks.
- :class:`SoftDiceLoss`: soft Dice alone, for any task (sigmoid or softmax as the task says).
- :class:`FocalLoss`: Lin et al.'s focal loss, for any task: cross-entropy scaled down where the
  model is already sure, so the hard pixels (edges, small classes) carry the gradient.
- :class:`BoundaryLoss`: adds Kervadec et al.'s boundary term (probabilities weighted by the
  signed distance to the true boundary) to a region loss, with a weight that rises over the run.
- :class:`DeepSupervision`: sums a loss over a model's list of outputs (U²-Net's seven).

:func:`build_loss` picks one by name (:mod:`segdemo.loss_names`, the table of names and labels)
and task.

The progress hook: every loss here is a :class:`SegmentationLoss`, whose ``progress`` (0 at the
start of a run, 1 at its end) the training loop sets before each step with :func:`set_progress`,
so that a loss can change over the run (the boundary term's weight does). Losses that wrap
others pass it on (it reaches every loss inside, as ``train()`` reaches every layer).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .loss_names import BOUNDARY, LOSS_LABELS, LOSS_NAMES, auto_loss, check_loss  # noqa: F401 (re-exported)
from .tasks import IGNORE_INDEX, MULTICLASS, check_task, probabilities_from_logits


def set_progress(loss: nn.Module, fraction: float) -> None:
    """Tell every :class:`SegmentationLoss` in ``loss`` (itself included; any module that wraps
    losses will do) how far the run is: ``fraction`` from 0 (the first step) to 1 (the last)."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    for module in loss.modules():
        if isinstance(module, SegmentationLoss):
            module.progress = fraction


class SegmentationLoss(nn.Module):
    """Base of segdemo's losses: ``forward(logits, target)`` returns a scalar, and ``progress``
    says how far the run is (see :func:`set_progress`; 0 until a training loop sets it)."""

    progress: float = 0.0

    def set_progress(self, fraction: float) -> "SegmentationLoss":
        """:func:`set_progress` for this loss and every loss inside it; returns ``self``."""
        set_progress(self, fraction)
        return self


def _valid_and_float_target(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    valid = target != IGNORE_INDEX
    return valid.float(), torch.where(valid, target, torch.zeros_like(target)).float()


def _one_hot(target: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, H, W)`` class indices as 0/1 ``(N, C, H, W)`` and the valid pixels ``(N, 1, H, W)``."""
    valid = (target != IGNORE_INDEX).unsqueeze(1).float()
    one_hot = F.one_hot(target.long().clamp(0, channels - 1), channels).permute(0, 3, 1, 2).float()
    return one_hot * valid, valid


def soft_dice_loss(probabilities: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                   smooth: float = 1.0) -> torch.Tensor:
    """``1 - mean Dice`` over the classes of soft predictions ``(N, C, H, W)``.

    Each class's Dice is taken over the whole batch ("batch Dice", as in nnU-Net), not per
    image: with random crops many images lack a class, and a per-image Dice with smoothing then
    rewards predicting nothing at all for it. ``target`` (0/1 floats) and ``valid`` (1 where the
    pixel counts) have the same shape as ``probabilities``.
    """
    probabilities = probabilities * valid
    intersection = (probabilities * target).sum(dim=(0, 2, 3))
    total = probabilities.sum(dim=(0, 2, 3)) + target.sum(dim=(0, 2, 3))
    return 1.0 - ((2.0 * intersection + smooth) / (total + smooth)).mean()


class BCEDiceLoss(SegmentationLoss):
    """``bce_weight · BCE + (1 - bce_weight) · soft Dice`` for multi-label and binary targets
    ``(N, C, H, W)`` of 0/1 (255 ignored). A term of weight 0 is not computed."""

    def __init__(self, bce_weight: float = 0.5, smooth: float = 1.0):
        super().__init__()
        if not 0.0 <= bce_weight <= 1.0:
            raise ValueError(f"bce_weight must be in [0, 1], got {bce_weight}")
        self.bce_weight = bce_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        valid, target = _valid_and_float_target(target)
        terms = []
        if self.bce_weight:
            bce = F.binary_cross_entropy_with_logits(logits, target, weight=valid, reduction="sum")
            terms.append(self.bce_weight * bce / valid.sum().clamp_min(1.0))
        if self.bce_weight < 1:
            terms.append((1.0 - self.bce_weight) * soft_dice_loss(torch.sigmoid(logits), target, valid, self.smooth))
        return sum(terms)


class CrossEntropyDiceLoss(SegmentationLoss):
    """Cross-entropy over classes for ``(N, H, W)`` index targets (255 ignored), plus
    ``dice_weight`` × soft Dice of the softmax against the one-hot target."""

    def __init__(self, dice_weight: float = 0.0, smooth: float = 1.0, class_weights=None):
        super().__init__()
        if dice_weight < 0:
            raise ValueError(f"dice_weight must be >= 0, got {dice_weight}")
        self.dice_weight = dice_weight
        self.smooth = smooth
        self.register_buffer("class_weights", None if class_weights is None
                             else torch.as_tensor(class_weights, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        target = target.long()
        if not (target != IGNORE_INDEX).any():
            return logits.sum() * 0.0  # an all-ignored batch carries no information
        loss = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=IGNORE_INDEX)
        if self.dice_weight:
            one_hot, valid = _one_hot(target, logits.shape[1])
            loss = loss + self.dice_weight * soft_dice_loss(logits.softmax(dim=1), one_hot, valid, self.smooth)
        return loss


class SoftDiceLoss(SegmentationLoss):
    """Soft Dice alone (:func:`soft_dice_loss`) for any ``task``: a sigmoid per class against 0/1
    targets ``(N, C, H, W)`` (multi-label, binary), or a softmax against the one-hot of index
    targets ``(N, H, W)`` (multiclass)."""

    def __init__(self, task: str, smooth: float = 1.0):
        super().__init__()
        self.task = check_task(task)
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.task == MULTICLASS:
            target, valid = _one_hot(target, logits.shape[1])
        else:
            valid, target = _valid_and_float_target(target)
        return soft_dice_loss(probabilities_from_logits(logits, self.task), target, valid, self.smooth)


class FocalLoss(SegmentationLoss):
    """Focal loss (Lin et al., 2017): ``-α_t (1 - p_t)^γ log p_t`` averaged over the counted pixels
    (and classes, for sigmoid outputs), where ``p_t`` is the probability given to the true answer.

    ``(1 - p_t)^γ`` turns the loss down where the model is already right and sure (γ = 2, the
    paper's choice, makes a pixel at p_t = 0.9 count 100× less than cross-entropy would), so the
    many easy background pixels stop drowning the few hard ones. For multi-label and binary tasks
    ``p`` is a sigmoid per class and ``alpha`` (optional; the paper uses 0.25) weighs the positives,
    ``1 - alpha`` the negatives; for multiclass tasks ``p`` is the softmax and ``alpha`` is not used.
    """

    def __init__(self, task: str, gamma: float = 2.0, alpha: float | None = None):
        super().__init__()
        self.task = check_task(task)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if alpha is not None and (task == MULTICLASS or not 0.0 <= alpha <= 1.0):
            raise ValueError("alpha weighs the positives of sigmoid outputs: a number in [0, 1], "
                             "for multi-label and binary tasks only")
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.task == MULTICLASS:
            target = target.long()
            valid = (target != IGNORE_INDEX).float()
            log_p_true = logits.log_softmax(dim=1).gather(1, target.clamp(0, logits.shape[1] - 1)[:, None])[:, 0]
            weight = valid
        else:
            valid, target = _valid_and_float_target(target)
            # log p_t = -BCE, computed stably from the logits
            log_p_true = -F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            weight = valid if self.alpha is None else valid * (self.alpha * target + (1 - self.alpha) * (1 - target))
        focal = -((1 - log_p_true.exp()) ** self.gamma) * log_p_true
        return (focal * weight).sum() / valid.sum().clamp_min(1.0)


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Signed Euclidean distance (exact) to the boundary of a binary ``(H, W)`` mask: from each
    pixel outside to the nearest pixel inside (positive), from each pixel inside to the nearest
    pixel outside (negative); 0 everywhere for an empty or full mask."""
    mask = mask.astype(np.uint8)
    if mask.all() or not mask.any():
        return np.zeros(mask.shape, dtype=np.float32)
    outside = cv2.distanceTransform(1 - mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    inside = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return (outside - inside).astype(np.float32)


class BoundaryLoss(SegmentationLoss):
    """``region_loss + w · mean(probability · signed distance)`` (Kervadec et al., 2019).

    The boundary term is smallest when probability mass sits inside the true regions and
    punishes mass far outside them more than mass near the edge. Distances are in image sides
    (divided by the larger side), so the weight means the same at any image size; ignored pixels
    count for nothing.

    The term alone has a poor start (an untrained model's probabilities are spread everywhere, and
    an empty prediction scores well), so, as Kervadec et al. do, the region loss leads and the
    boundary weight ``w`` rises linearly over the run, from ``start_weight`` at the first step to
    ``weight`` at the last (:attr:`current_weight`, following :attr:`progress`).
    """

    def __init__(self, region_loss: nn.Module, task: str, weight: float = 0.1, start_weight: float = 0.01):
        super().__init__()
        if not 0 <= start_weight <= weight:
            raise ValueError(f"the boundary weight rises from start_weight to weight: 0 <= {start_weight} <= {weight}?")
        self.region_loss = region_loss
        self.task = check_task(task)
        self.weight = weight
        self.start_weight = start_weight

    @property
    def current_weight(self) -> float:
        """The boundary term's weight at the run's :attr:`progress`."""
        return self.start_weight + (self.weight - self.start_weight) * self.progress

    def distance_maps(self, target: torch.Tensor, channels: int) -> torch.Tensor:
        """Signed distance maps ``(N, C, H, W)`` of each class in ``target`` (0 at ignored pixels)."""
        target = target.detach().cpu().numpy()
        if self.task == MULTICLASS:
            masks = np.stack([target == c for c in range(channels)], axis=1)
            valid = (target != IGNORE_INDEX)[:, None]
        else:
            masks = target == 1
            valid = target != IGNORE_INDEX
        maps = np.stack([[signed_distance(m) for m in sample] for sample in masks]) * valid
        maps /= max(1.0, float(max(target.shape[-2:])))  # scale-free across image sizes
        return torch.from_numpy(maps.astype(np.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        region = self.region_loss(logits, target)
        probabilities = probabilities_from_logits(logits.float(), self.task)
        distances = self.distance_maps(target, logits.shape[1]).to(logits.device)
        return region + self.current_weight * (probabilities * distances).mean()


class DeepSupervision(SegmentationLoss):
    """Apply ``loss`` to each output of a list (fused first, then the sides) and sum with
    ``weights`` (all 1 by default, as in U²-Net). A single tensor passes straight through."""

    def __init__(self, loss: nn.Module, weights=None):
        super().__init__()
        self.loss = loss
        self.weights = weights

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        weights = self.weights or [1.0] * len(outputs)
        return sum(w * self.loss(o, target) for w, o in zip(weights, outputs))


def build_loss(task: str, name: str = "auto", *, bce_weight: float = 0.5, dice_weight: float = 0.5,
               boundary_weight: float = 0.1, focal_gamma: float = 2.0) -> nn.Module:
    """The loss ``name`` (one of :data:`~segdemo.loss_names.LOSS_NAMES`) for ``task``, wrapped in
    :class:`DeepSupervision` (a no-op for models with one output).

    ``auto`` is ``bce_dice`` for multi-label and binary tasks and ``ce`` for multiclass ones;
    ``bce_weight`` and ``dice_weight`` weigh BCE in ``bce_dice`` and Dice in ``ce_dice``;
    ``boundary_weight`` is the boundary term's weight at the end of the run. A loss that does not
    suit the task (``ce`` for binary data) raises a :class:`~segdemo.errors.SettingsError` (a
    ``ValueError``) that names the ones that do.
    """
    check_loss(name, task)
    if name == "auto":
        name = auto_loss(task)
    region_name = name.removesuffix(BOUNDARY)
    regions = {
        "bce_dice": lambda: BCEDiceLoss(bce_weight),
        "bce": lambda: BCEDiceLoss(bce_weight=1.0),
        "dice": lambda: SoftDiceLoss(task),
        "focal": lambda: FocalLoss(task, focal_gamma),
        "ce": lambda: CrossEntropyDiceLoss(),
        "ce_dice": lambda: CrossEntropyDiceLoss(dice_weight),
    }
    loss: nn.Module = regions[region_name]()
    if name.endswith(BOUNDARY):
        loss = BoundaryLoss(loss, task, boundary_weight)
    return DeepSupervision(loss)
