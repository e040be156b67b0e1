"""U-Net (Ronneberger, Fischer and Brox, 2015): an encoder that halves the resolution ``depth``
times, a decoder that doubles it back, and skip connections that hand each decoder stage the
encoder's features of the same resolution, so fine detail survives the bottleneck.

Good at: precise boundaries from few training images; the standard first model for medical and
synthetic data. Both classic variants are one call each:

- the shapes tutorial: ``unet(base_channels=64, depth=3, upsample="bilinear", norm="none")``
  (64…512 channels, 7.78 M parameters for 6 classes);
- the medical-imaging original: ``unet(base_channels=64, depth=4, upsample="transpose",
  norm="batch")`` (64…1024 channels, ≈31 M parameters for 1 input channel and 1 class).

Two options take the U apart for comparison: ``block`` picks what each stage's convolutions are
(``"plain"``, ResUNet's ``"residual"`` or DenseUNet's ``"dense"``, see :data:`BLOCKS`), and
``skips=False`` removes the skip connections (the decoder then rebuilds the detail from the
bottleneck alone, as an encoder-decoder without a U does).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import SettingsError
from .common import check_choice, check_flag, check_range, crop_to, pad_to_multiple
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


def conv_norm_relu(in_channels: int, out_channels: int, norm: str, kernel_size: int = 3) -> list[nn.Module]:
    """A convolution, batch norm where ``norm`` asks for it (the convolution then needs no bias),
    and a ReLU: the unit every block is made of."""
    use_norm = norm == "batch"
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                                         bias=not use_norm)]
    if use_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return layers


class DoubleConv(nn.Module):
    """The plain U-Net block: (3×3 convolution → [batch norm] → ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        super().__init__()
        self.body = nn.Sequential(*conv_norm_relu(in_channels, out_channels, norm),
                                  *conv_norm_relu(out_channels, out_channels, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResidualDoubleConv(nn.Module):
    """The ResUNet block: a double convolution plus a shortcut that adds the block's input (projected
    by a 1×1 convolution when the width changes); the last ReLU comes after the addition. The
    shortcut gives the gradient a direct path, so a slim network trains in fewer steps."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        super().__init__()
        layers = [*conv_norm_relu(in_channels, out_channels, norm), *conv_norm_relu(out_channels, out_channels, norm)]
        self.body = nn.Sequential(*layers[:-1])  # the same layer names as DoubleConv's, less the last ReLU
        self.shortcut = nn.Identity() if in_channels == out_channels else \
            nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(x) + self.shortcut(x))


class DenseBlock(nn.Module):
    """The DenseUNet block (DenseNet's dense block, Huang et al., 2017): each 3×3 convolution sees
    the block's input and the outputs of every convolution before it, concatenated, and adds
    ``growth`` channels of its own; a 1×1 transition maps all of them to the block's width. Every
    layer reuses every earlier feature, so each can be narrow (``growth`` is half the block's
    width: about as many parameters as the plain block)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch", layers: int = 2):
        super().__init__()
        growth = max(1, out_channels // 2)
        self.layers = nn.ModuleList(
            nn.Sequential(*conv_norm_relu(in_channels + index * growth, growth, norm)) for index in range(layers)
        )
        self.transition = nn.Sequential(*conv_norm_relu(in_channels + layers * growth, out_channels, norm,
                                                        kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return self.transition(torch.cat(features, dim=1))


# The ``block`` option: what each stage's convolutions are.
BLOCKS: dict[str, type[nn.Module]] = {"plain": DoubleConv, "residual": ResidualDoubleConv, "dense": DenseBlock}


class Down(nn.Sequential):
    """Encoder stage: 2×2 max pooling, then a block."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, block: str):
        super().__init__(nn.MaxPool2d(2), BLOCKS[block](in_channels, out_channels, norm))


class Up(nn.Module):
    """Decoder stage: upsample ×2, concatenate the encoder's skip features (when there are any:
    ``skip_channels`` 0 for a U-Net without skips), then a block.

    ``bilinear`` keeps the channel count (the tutorial's way); ``nearest`` too, copying each value
    into a 2×2 block (the cheapest: its backward pass is a sum, where bilinear's was an eighth of
    the live preset's step on a 2-core CPU); ``transpose`` learns the upsampling and halves the
    channels first (the original paper's "up-convolution").
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, upsample: str,
                 norm: str, block: str):
        super().__init__()
        if upsample == "transpose":
            self.upsample = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)
            in_channels //= 2
        elif upsample == "nearest":
            self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        else:
            self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv = BLOCKS[block](in_channels + skip_channels, out_channels, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.upsample(x)
        return self.conv(x if skip is None else torch.cat([x, skip], dim=1))


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
        block: each stage's convolutions, one of :data:`BLOCKS`: ``"plain"`` (:class:`DoubleConv`),
            ``"residual"`` (ResUNet, :class:`ResidualDoubleConv`) or ``"dense"`` (DenseUNet,
            :class:`DenseBlock`).
        skips: the skip connections; without them the decoder sees only what came through the
            bottleneck (fewer parameters, blurrier edges).
        residual: the older spelling of ``block="residual"``, kept because checkpoints saved
            before ``block`` existed record ``residual: True`` among their options.

    Shapes: ``(N, in_channels, H, W) → (N, num_classes, H, W)`` for any H, W.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base_channels: int = 64, depth: int = 4,
                 upsample: str = "bilinear", norm: str = "batch", block: str = "plain", skips: bool = True,
                 residual: bool = False):
        super().__init__()
        check_range("base_channels", base_channels, 1, MAX_BASE_CHANNELS, "four times the classic U-Net's 64")
        check_range("depth", depth, 1, MAX_DEPTH, f"a stride of {2 ** MAX_DEPTH}, the FCN's")
        check_choice("upsample", upsample, UPSAMPLE_MODES)
        check_choice("norm", norm, NORMS)
        check_choice("block", block, tuple(BLOCKS))
        check_flag("skips", skips)
        check_flag("residual", residual)
        if residual:
            if block not in ("plain", "residual"):
                raise SettingsError(f"residual=True is the older spelling of block='residual'; it cannot be "
                                    f"combined with block={block!r}")
            block = "residual"
        widths = [base_channels * 2 ** level for level in range(depth + 1)]
        self.multiple = 2 ** depth
        self.skips = skips
        self.stem = BLOCKS[block](in_channels, widths[0], norm)
        self.encoder = nn.ModuleList(
            Down(widths[level], widths[level + 1], norm, block) for level in range(depth)
        )
        self.decoder = nn.ModuleList(
            Up(widths[level + 1], widths[level] if skips else 0, widths[level], upsample, norm, block)
            for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.multiple)
        features = [self.stem(x)]
        for down in self.encoder:
            features.append(down(features[-1]))
        x = features.pop()  # the bottleneck
        for up in self.decoder:
            skip = features.pop()
            x = up(x, skip if self.skips else None)
        return crop_to(self.head(x), size)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """The stages in the order data flows through the "U", for the app's shape table."""
        joined = " + skip" if self.skips else ""
        named = [("encoder 0 (stem)", self.stem)]
        named += [(f"encoder {i + 1} (down)", m) for i, m in enumerate(self.encoder)]
        named += [(f"decoder {len(self.decoder) - i - 1} (up{joined})", m) for i, m in enumerate(self.decoder)]
        named.append(("head (1×1 conv)", self.head))
        return named
