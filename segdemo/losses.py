"""Losses. All take logits ``(N, C, H, W)`` and targets laid out as :mod:`segdemo.tasks` says;
pixels marked :data:`~segdemo.tasks.IGNORE_INDEX` count for nothing.

- :class:`BCEDiceLoss`: binary cross-entropy + soft Dice, for multi-label and binary tasks (the
  tutorials use 0.5/0.5). BCE gives smooth per-pixel gradients from the start; Dice looks at each
  class's overlap as a whole, so small classes count as much as large ones.
- :class:`CrossEntropyDiceLoss`: cross-entropy (optionally + soft Dice) for multiclass tasks.
- :class:`BoundaryLoss`: adds Kervadec et al.'s boundary term (probabilities weighted by the
  signed distance to the true boundary) to a region loss.
- :class:`DeepSupervision`: sums a loss over a model's list of outputs (U²-Net's seven).

:func:`build_loss` picks one by name and task.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .tasks import BINARY, IGNORE_INDEX, MULTICLASS, MULTILABEL, check_task


def _valid_and_float_target(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    valid = target != IGNORE_INDEX
    return valid.float(), torch.where(valid, target, torch.zeros_like(target)).float()


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


class BCEDiceLoss(nn.Module):
    """``bce_weight · BCE + (1 - bce_weight) · soft Dice`` for multi-label and binary targets
    ``(N, C, H, W)`` of 0/1 (255 ignored)."""

    def __init__(self, bce_weight: float = 0.5, smooth: float = 1.0):
        super().__init__()
        if not 0.0 <= bce_weight <= 1.0:
            raise ValueError(f"bce_weight must be in [0, 1], got {bce_weight}")
        self.bce_weight = bce_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        valid, target = _valid_and_float_target(target)
        bce = F.binary_cross_entropy_with_logits(logits, target, weight=valid, reduction="sum")
        bce = bce / valid.sum().clamp_min(1.0)
        dice = soft_dice_loss(torch.sigmoid(logits), target, valid, self.smooth)
        return self.bce_weight * bce + (1.0 - self.bce_weight) * dice


class CrossEntropyDiceLoss(nn.Module):
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
            valid = (target != IGNORE_INDEX).unsqueeze(1).float()
            one_hot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1])
            one_hot = one_hot.permute(0, 3, 1, 2).float() * valid
            loss = loss + self.dice_weight * soft_dice_loss(logits.softmax(dim=1), one_hot, valid, self.smooth)
        return loss


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Signed Euclidean distance to the boundary of a binary ``(H, W)`` mask: negative inside,
    positive outside, 0 for an empty or full mask."""
    mask = mask.astype(np.uint8)
    if mask.all() or not mask.any():
        return np.zeros(mask.shape, dtype=np.float32)
    outside = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 3)
    inside = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    return (outside - inside).astype(np.float32)


class BoundaryLoss(nn.Module):
    """``region_loss + weight · mean(probability · signed distance)`` (Kervadec et al., 2019).

    The boundary term is smallest when probability mass sits inside the true regions and
    punishes mass far outside them more than mass near the edge.
    """

    def __init__(self, region_loss: nn.Module, task: str, weight: float = 0.1):
        super().__init__()
        self.region_loss = region_loss
        self.task = check_task(task)
        self.weight = weight

    def distance_maps(self, target: torch.Tensor, channels: int) -> torch.Tensor:
        target = target.detach().cpu().numpy()
        if self.task == MULTICLASS:
            masks = np.stack([target == c for c in range(channels)], axis=1)
        else:
            masks = target == 1
        maps = np.stack([[signed_distance(m) for m in sample] for sample in masks])
        maps /= max(1.0, float(max(target.shape[-2:])))  # scale-free across image sizes
        return torch.from_numpy(maps)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        region = self.region_loss(logits, target)
        probabilities = logits.float().softmax(1) if self.task == MULTICLASS else torch.sigmoid(logits.float())
        distances = self.distance_maps(target, logits.shape[1]).to(logits.device)
        return region + self.weight * (probabilities * distances).mean()


class DeepSupervision(nn.Module):
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


LOSS_NAMES = ("auto", "bce_dice", "ce", "ce_dice", "bce_dice+boundary", "ce+boundary")


def build_loss(task: str, name: str = "auto", *, bce_weight: float = 0.5, dice_weight: float = 0.5,
               boundary_weight: float = 0.1) -> nn.Module:
    """The loss ``name`` for ``task``, wrapped in :class:`DeepSupervision` (a no-op for models
    with one output).

    ``auto`` is ``bce_dice`` for multi-label and binary tasks and ``ce`` for multiclass ones.
    """
    check_task(task)
    if name not in LOSS_NAMES:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSS_NAMES)}")
    if name == "auto":
        name = "ce" if task == MULTICLASS else "bce_dice"
    region_name, _, extra = name.partition("+")
    if region_name == "bce_dice":
        if task not in (MULTILABEL, BINARY):
            raise ValueError("bce_dice suits multi-label and binary tasks; use ce or ce_dice for multiclass")
        loss: nn.Module = BCEDiceLoss(bce_weight)
    else:
        if task != MULTICLASS:
            raise ValueError(f"{region_name} suits multiclass tasks; use bce_dice for {task}")
        loss = CrossEntropyDiceLoss(dice_weight if region_name == "ce_dice" else 0.0)
    if extra == "boundary":
        loss = BoundaryLoss(loss, task, boundary_weight)
    return DeepSupervision(loss)
