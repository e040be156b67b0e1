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
from torch import nn

from ..errors import SettingsError
from .common import check_range, crop_to, pad_to_multiple
from .registry import register_model
from .weights import TORCHVISION_WEIGHTS, WeightsUnavailable, load_weights

log = logging.getLogger(__name__)
STRIDE = 32
# torchvision's ImageNet ResNet-18 weights (a test checks the URL against torchvision's own).
RESNET18_IMAGENET_URL = f"{TORCHVISION_WEIGHTS}/resnet18-f37072fd.pth"


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


RESNET18_BLOCKS = (2, 2, 2, 2)  # basic blocks per stage; each stage doubles the width and halves the size
# Trunk widths: from 4 (a toy) to four times ResNet-18's 64 (the parameters grow as width², 11 M at 64;
# the parameter limit, segdemo.limits, decides what is built in between).
MIN_WIDTH, MAX_WIDTH = 4, 256


def resnet18_trunk(in_channels: int = 3, width: int = 64) -> nn.Sequential:
    """ResNet-18 without its pooling and classifier: ``(N, in_channels, H, W) → (N, 8·width, H/32, W/32)``.

    ``width`` is the first stage's channels (64 in the paper; the stages have width, 2·, 4·, 8·).
    The layers and their state-dict keys are torchvision's, so ImageNet weights load when width is 64.
    """
    from torchvision.models.resnet import BasicBlock  # imported here: torchvision takes 2 s to import

    stem = [nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1)]
    stages, channels = [], width
    for index, blocks in enumerate(RESNET18_BLOCKS):
        planes, stride = width * 2 ** index, 1 if index == 0 else 2
        downsample = None
        if stride != 1 or channels != planes:
            downsample = nn.Sequential(nn.Conv2d(channels, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(channels, planes, stride, downsample)]
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        stages.append(nn.Sequential(*layers))
        channels = planes
    trunk = nn.Sequential(*stem, *stages)
    for module in trunk.modules():  # torchvision's initialisation
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return trunk


def load_imagenet_weights(trunk: nn.Sequential, in_channels: int, pretrained: bool | str) -> None:
    """Put ImageNet ResNet-18 weights into ``trunk`` (offline: as :func:`load_weights` allows).
    For other than 3 input channels the first filters are the RGB ones averaged over colors."""
    try:
        state = load_weights(RESNET18_IMAGENET_URL, what="ImageNet ResNet-18 weights")
    except WeightsUnavailable as error:
        if pretrained != "auto":
            raise
        log.warning("%s; the FCN's trunk starts from random weights", error)
        return
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    renamed = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in names:
            renamed[f"{names.index(head)}.{rest}"] = value
    first = renamed["0.weight"]
    if in_channels != 3:
        renamed["0.weight"] = first.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1)
    trunk.load_state_dict(renamed)


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
        width: channels of the trunk's first stage (64: the paper's ResNet-18, which ImageNet
            weights fit; 32 is a quarter of the parameters, for a small checkpoint trained here;
            :data:`MIN_WIDTH` to :data:`MAX_WIDTH`). The upsampling weights grow as
            ``num_classes² · 4096``, so the parameter limit bounds the classes too.

    Shapes: ``(N, in_channels, H, W) → (N, num_classes, H, W)`` for any H, W.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1, pretrained_backbone: bool | str = "auto",
                 width: int = 64):
        super().__init__()
        check_range("width", width, MIN_WIDTH, MAX_WIDTH, "four times ResNet-18's 64")
        if pretrained_backbone is True and width != 64:
            raise SettingsError(f"ImageNet weights exist for width 64 only (got width {width})")
        self.backbone = resnet18_trunk(in_channels, width)
        if pretrained_backbone and width == 64:
            load_imagenet_weights(self.backbone, in_channels, pretrained_backbone)
        self.classifier = nn.Conv2d(8 * width, num_classes, 1)
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
