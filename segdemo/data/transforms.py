"""Joint image + mask augmentation with ``torchvision.transforms.v2``.

Targets are wrapped as ``tv_tensors.Mask`` so every geometric transform resizes them with nearest
neighbour (never bilinear: a class index must stay a class index), and padding fills targets
with :data:`~segdemo.tasks.IGNORE_INDEX` so padded pixels count for nothing.

torch and torchvision are imported when a transform is made or used, not with this module
(torchvision alone takes about 2 s): the app imports the data sources before it loads torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..tasks import IGNORE_INDEX

if TYPE_CHECKING:
    import torch
    from torchvision import tv_tensors
    from torchvision.transforms import v2


def to_pair(image: np.ndarray, target: np.ndarray) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """Wrap an ``(H, W, 3)`` uint8 image and a uint8 target (``(H, W)`` or ``(C, H, W)``)."""
    import torch
    from torchvision import tv_tensors

    image_tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return tv_tensors.Image(image_tensor), tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(target)))


def train_transform(crop_size: int | tuple[int, int] | None, *, flip: bool = True,
                    vertical_flip: bool = False, scale: tuple[float, float] | None = None,
                    base_size: int | None = None) -> v2.Transform:
    """Random rescale (optional), random crop with padding, and flips.

    Args:
        crop_size: output size; smaller images are padded (image with 0, target ignored).
        scale: ``(low, high)`` factors of ``base_size`` for the shorter side, e.g. VOC's (0.5, 2.0).
    """
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    steps: list[v2.Transform] = []
    if scale is not None:
        if base_size is None:
            raise ValueError("a random scale needs base_size")
        steps.append(v2.RandomResize(int(base_size * scale[0]), int(base_size * scale[1]) + 1))
    if crop_size is not None:
        steps.append(v2.RandomCrop(crop_size, pad_if_needed=True,
                                   fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}))
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if vertical_flip:
        steps.append(v2.RandomVerticalFlip())
    return v2.Compose(steps) if steps else v2.Identity()


def plain(pair: tuple[tv_tensors.Image, tv_tensors.Mask]) -> tuple[torch.Tensor, torch.Tensor]:
    """Unwrap tv_tensors into plain tensors (collating and pickling stay cheap)."""
    import torch

    image, target = pair
    return image.as_subclass(torch.Tensor), target.as_subclass(torch.Tensor)
