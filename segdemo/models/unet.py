"""U-Net (Ronneberger, Fischer and Brox, 2015): an encoder that halves the resolution ``depth``
times, a decoder that doubles it back, and skip connections that hand each decoder stage the
encoder's features of the same resolution, so fine detail survives the bottleneck.

Good at: precise boundaries from few training images; the standard first model for medical and
synthetic data. Both classic variants are one call each:

- the shapes tutorial: ``unet(base_channels=64, depth=3, upsample="bilinear", norm="none")``
  (64…512 channels, 7.78 M parameters for 6 classes);
- the medical-imaging original: ``unet(base_channels=64, depth=4, upsample="transpose",
  norm="batch")`` (64…1024 channels, ≈31 M parameters for 1 input channel and 1 class).

``residual=True`` gives each double convolution a shortcut (ResUNet blocks).
"""

from __future__ import annotations

import torch
from torch import nn

from .common import check_choice, check_range, crop_to, pad_to_multiple
from .registry import register_model

UPSAMPLE_MODES = ("bilinear", "nearest", "transpose")
NORMS = ("batch", "none")
# The widest first stage: four times the classic U-Net's 64 (its deepest stage then has
# 256 · 2^depth channels; the parameter limit, segdemo.limits, decides what is built of the rest).
MAX_BASE_CHANNELS = 256
# The most poolings: a stride of 32, as the FCN's and as inference's tiles assume. Each level more
# doubles the deepest stage's width and the padding every input gets (depth 12 pads a photo to
# 4096×4096), and no image segdemo sees needs a wider view.
MAX_DEPTH = 5


class DoubleConv(nn.Module):
    """(3×3 convolution → [batch norm] → ReLU) twice; with ``residual`` a shortcut adds the input
    (projected by a 1×1 convolution when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch", residual: bool = False):
        super().__init__()
        use_norm = norm == "batch"
        layers: list[nn.Module] = []
        for channels_in in (in_channels, out_channels):
            layers.append(nn.Conv2d(channels_in, out_channels, 3, padding=1, bias=not use_norm))
            if use_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        if residual:
            layers.pop()  # the last ReLU comes after the addition
        self.body = nn.Sequential(*layers)
        self.shortcut = None
        if residual:
            self.shortcut = nn.Identity() if in_channels == out_channels else \
                nn.Conv2d(in_channels, out_channels, 1, bias=False)
            self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            return self.body(x)
        return self.activation(self.body(x) + self.shortcut(x))


class Down(nn.Sequential):
    """Encoder stage: 2×2 max pooling, then a double convolution."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, residual: bool):
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, norm, residual))


class Up(nn.Module):
    """Decoder stage: upsample ×2, concatenate the encoder's skip features, double convolution.

    ``bilinear`` keeps the channel count (the tutorial's way); ``nearest`` too, copying each value
    into a 2×2 block (the cheapest: its backward pass is a sum, where bilinear's was an eighth of
    the live preset's step on a 2-core CPU); ``transpose`` learns the upsampling and halves the
    channels first (the original paper's "up-convolution").
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, upsample: str,
                 norm: str, residual: bool):
        super().__init__()
        if upsample == "transpose":
            self.upsample = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)
            in_channels //= 2
        elif upsample == "nearest":
            self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        else:
            self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv = DoubleConv(in_channels + skip_channels, out_channels, norm, residual)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.upsample(x), skip], dim=1))


@register_model("unet", description="U-Net: encoder, decoder and skip connections (any width and depth)")
class UNet(nn.Module):
    """U-Net.

    Args:
        in_channels: input channels.
        num_classes: output channels (logits).
        base_channels: width of the first stage; stage ``i`` has ``base_channels · 2^i``
            (1 to :data:`MAX_BASE_CHANNELS`).
        depth: number of poolings (the input is padded to a multiple of ``2^depth``; 1 to
            :data:`MAX_DEPTH`).
        upsample: ``"bilinear"``, ``"nearest"`` or ``"transpose"`` (see :class:`Up`).
        norm: ``"batch"`` or ``"none"``.
        residual: ResUNet blocks (a shortcut around each double convolution).

    Shapes: ``(N, in_channels, H, W) → (N, num_classes, H, W)`` for any H, W.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base_channels: int = 64, depth: int = 4,
                 upsample: str = "bilinear", norm: str = "batch", residual: bool = False):
        super().__init__()
        check_range("base_channels", base_channels, 1, MAX_BASE_CHANNELS, "four times the classic U-Net's 64")
        check_range("depth", depth, 1, MAX_DEPTH, f"a stride of {2 ** MAX_DEPTH}, the FCN's")
        check_choice("upsample", upsample, UPSAMPLE_MODES)
        check_choice("norm", norm, NORMS)
        widths = [base_channels * 2 ** level for level in range(depth + 1)]
        self.multiple = 2 ** depth
        self.stem = DoubleConv(in_channels, widths[0], norm, residual)
        self.encoder = nn.ModuleList(
            Down(widths[level], widths[level + 1], norm, residual) for level in range(depth)
        )
        self.decoder = nn.ModuleList(
            Up(widths[level + 1], widths[level], widths[level], upsample, norm, residual)
            for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.multiple)
        skips = [self.stem(x)]
        for down in self.encoder:
            skips.append(down(skips[-1]))
        x = skips.pop()  # the bottleneck
        for up in self.decoder:
            x = up(x, skips.pop())
        return crop_to(self.head(x), size)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """The stages in the order data flows through the "U", for the app's shape table."""
        named = [("encoder 0 (stem)", self.stem)]
        named += [(f"encoder {i + 1} (down)", m) for i, m in enumerate(self.encoder)]
        named += [(f"decoder {len(self.decoder) - i - 1} (up + skip)", m) for i, m in enumerate(self.decoder)]
        named.append(("head (1×1 conv)", self.head))
        return named
