"""Small pieces the models share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SettingsError
from ..tasks import MULTICLASS


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad the bottom and right of ``(N, C, H, W)`` up to a multiple of ``multiple``.

    Returns the padded tensor and the original ``(H, W)`` to crop the output back to, so that a
    network with stride ``multiple`` accepts any size (DRIVE is 565×584) and returns logits of
    exactly the input's size.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x, (height, width)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop ``(N, C, H', W')`` back to the top-left ``size``."""
    return x[..., : size[0], : size[1]]


def check_choice(name: str, value, choices) -> None:
    """Raise a :class:`~segdemo.errors.SettingsError` (a ``ValueError``) naming the argument when
    ``value`` is not one of ``choices``."""
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def check_flag(name: str, value) -> None:
    """Raise a :class:`~segdemo.errors.SettingsError` naming the argument when ``value`` is not a
    bool (a checkpoint's metadata or an API call could say ``"no"``, which Python reads as true)."""
    if not isinstance(value, bool):
        raise SettingsError(f"{name} must be True or False; got {value!r}")


def check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SettingsError(f"{name} must be a positive integer; got {value!r}")


def check_range(name: str, value: int, low: int, high: int, why: str) -> None:
    """Raise a :class:`~segdemo.errors.SettingsError` naming the argument, its range and the reason
    for the range when ``value`` is not an integer from ``low`` to ``high``. Every size option has
    one, checked before any layer is built: a checkpoint's metadata or an API call can ask for any
    number, and the model would be allocated before anything else looked at it."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        shown = f"{value:g}" if isinstance(value, float) else repr(value)
        raise SettingsError(f"{name} must be a whole number from {low} to {high} ({why}); got {shown}")


class TorchvisionSegmentation(nn.Module):
    """Wraps a torchvision segmentation model so that it returns the main logits tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def start_from_class_shares(model: nn.Module, shares: torch.Tensor, task: str) -> bool:
    """Set the bias of ``model.head`` (a final convolution, one output per class) so that the
    untrained model predicts each class's share of the pixels, ``shares`` ``(C,)`` in 0..1.

    RetinaNet's prior initialisation (Lin et al., 2017): a fresh head predicts 0.5 for every class
    of every pixel, and the first steps of a run go into learning that most pixels are background
    (measured on the shapes: validation Dice 0.10 after 25 steps of the live preset). Sigmoid
    outputs (multi-label, binary) start at the shares' log-odds, a softmax (multiclass) at their
    logarithms. Returns False, changing nothing, for a model without such a head."""
    head = getattr(model, "head", None)
    bias = getattr(head, "bias", None)
    if not isinstance(bias, torch.Tensor) or bias.shape != shares.shape:
        return False
    shares = shares.double().clamp(1e-4, 1 - 1e-4)
    value = shares.log() if task == MULTICLASS else torch.log(shares / (1 - shares))
    with torch.no_grad():
        bias.copy_(value.to(bias.dtype))
    return True
