"""FCN-32s (Long, Shelhamer and Darrell, 2015) on a ResNet-18 trunk: classify every position
of the trunk's stride-32 feature map with a 1×1 convolution, then upsample the class scores 32×
in one learned transposed convolution that starts as bilinear interpolation.

Good at: showing what skip connections buy. With no decoder and no skips its masks are blobs at
1/32 resolution: put it beside a U-Net of similar size and the difference is the lesson.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torchvision
from torch import nn

from .common import crop_to, pad_to_multiple
from .registry import register_model
from .weights import WeightsUnavailable, load_weights

log = logging.getLogger(__name__)
STRIDE = 32


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Weights ``(channels, channels, k, k)`` that make a transposed convolution with stride
    ``k // 2`` perform bilinear upsampling, channel by channel."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    grid = np.ogrid[:kernel_size, :kernel_size]
    tent = (1 - np.abs(grid[0] - center) / factor) * (1 - np.abs(grid[1] - center) / factor)
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = torch.as_tensor(tent, dtype=torch.float32)
    return weight


def _imagenet_trunk(pretrained: bool | str) -> nn.Module:
    trunk = torchvision.models.resnet18(weights=None)
    if pretrained:
        url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
        try:
            trunk.load_state_dict(load_weights(url, what="ImageNet ResNet-18 weights"))
        except WeightsUnavailable as error:
            if pretrained == "auto":
                log.warning("%s; the FCN's trunk starts from random weights", error)
            else:
                raise
    return trunk


@register_model("fcn_resnet18", description="FCN-32s on ResNet-18: no decoder, no skips (1/32 resolution)",
                restore_options={"pretrained_backbone": False})
class FCNResNet18(nn.Module):
    """FCN-32s with a ResNet-18 trunk.

    Args:
        in_channels: input channels (the first convolution is rebuilt when not 3).
        num_classes: output channels (logits).
        pretrained_backbone: ``"auto"`` uses ImageNet weights when cached or downloadable and
            otherwise starts random with a logged warning; ``True`` requires them; ``False``
            never looks.

    Shapes: ``(N, in_channels, H, W) → (N, num_classes, H, W)`` for any H, W.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1, pretrained_backbone: bool | str = "auto"):
        super().__init__()
        trunk = _imagenet_trunk(pretrained_backbone)
        if in_channels != 3:
            old = trunk.conv1
            trunk.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            with torch.no_grad():  # keep what the RGB filters learned, averaged over colors
                trunk.conv1.weight.copy_(old.weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1))
        # Everything up to layer4: the trunk without its global pooling and classifier.
        self.backbone = nn.Sequential(*list(trunk.children())[:-2])
        self.classifier = nn.Conv2d(512, num_classes, 1)
        self.upsample = nn.ConvTranspose2d(num_classes, num_classes, 2 * STRIDE, stride=STRIDE,
                                           padding=STRIDE // 2, bias=False)
        with torch.no_grad():
            self.upsample.weight.copy_(bilinear_kernel(num_classes, 2 * STRIDE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, STRIDE)
        return crop_to(self.upsample(self.classifier(self.backbone(x))), size)

    def stages(self) -> list[tuple[str, nn.Module]]:
        names = ["stem (conv 7×7, stride 2)", "bn", "relu", "max pool (stride 4)", "layer1 (stride 4)",
                 "layer2 (stride 8)", "layer3 (stride 16)", "layer4 (stride 32)"]
        named = [(n, m) for n, m in zip(names, self.backbone) if n not in ("bn", "relu")]
        return named + [("classifier (1×1 conv)", self.classifier), ("upsample ×32 (transposed conv)", self.upsample)]
