"""U²-Net (Qin et al., 2020): a U-Net whose every stage is itself a small U-Net, the residual
U-block (RSU), so each stage sees several scales at once; six side outputs, one per decoder
stage and the bottom, are fused into the final mask, and all seven are supervised in training.

Good at: salient-object and fine-structure masks from scratch (no ImageNet trunk). ``u2net`` is
the paper's full model (44.0 M parameters), ``u2netp`` its 1.1 M-parameter portable version.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model


class ConvBNReLU(nn.Sequential):
    """3×3 convolution with a dilation (padding keeps the size), batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def upsample_like(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


def encode(stages: nn.ModuleList, pool: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Run ``x`` down an encoder (pooling before every stage but the first); every stage's output."""
    outputs = []
    for level, stage in enumerate(stages):
        x = stage(pool(x) if level > 0 else x)
        outputs.append(x)
    return outputs


class RSU(nn.Module):
    """Residual U-block of a given height: RSU-7, 6, 5, 4, and with ``dilated`` RSU-4F.

    An input convolution, then a small U: ``height - 1`` encoder convolutions (with 2×2 pooling
    between them, or growing dilations 1, 2, 4… instead of pooling in the "F" variant that works
    at low resolution), a dilated bottom convolution, and ``height - 1`` decoder convolutions fed
    with the matching encoder features. The U's output is added to the input convolution's.
    """

    def __init__(self, height: int, in_channels: int, mid_channels: int, out_channels: int,
                 dilated: bool = False):
        super().__init__()
        if height < 2:
            raise ValueError(f"an RSU block needs a height of at least 2, got {height}")
        self.dilated = dilated
        levels = height - 1
        dilations = [2 ** level for level in range(levels)] if dilated else [1] * levels
        bottom_dilation = 2 * dilations[-1] if dilated else 2
        self.conv_in = ConvBNReLU(in_channels, out_channels)
        self.encoder = nn.ModuleList(
            ConvBNReLU(out_channels if level == 0 else mid_channels, mid_channels, dilations[level])
            for level in range(levels)
        )
        self.bottom = ConvBNReLU(mid_channels, mid_channels, bottom_dilation)
        self.decoder = nn.ModuleList(
            ConvBNReLU(2 * mid_channels, out_channels if level == 0 else mid_channels, dilations[level])
            for level in reversed(range(levels))
        )
        self.pool = nn.Identity() if dilated else nn.MaxPool2d(2, stride=2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv_in(x)
        skips = encode(self.encoder, self.pool, residual)
        hidden = self.bottom(skips[-1])
        for conv in self.decoder:
            skip = skips.pop()
            if hidden.shape[-2:] != skip.shape[-2:]:
                hidden = upsample_like(hidden, skip)
            hidden = conv(torch.cat([hidden, skip], dim=1))
        return hidden + residual


# (height, dilated, mid channels, out channels) per stage; input channels follow from the flow.
_FULL = {
    "encoder": [(7, False, 32, 64), (6, False, 32, 128), (5, False, 64, 256), (4, False, 128, 512),
                (4, True, 256, 512), (4, True, 256, 512)],
    "decoder": [(4, True, 256, 512), (4, False, 128, 256), (5, False, 64, 128), (6, False, 32, 64),
                (7, False, 16, 64)],
}
_PORTABLE = {
    "encoder": [(7, False, 16, 64), (6, False, 16, 64), (5, False, 16, 64), (4, False, 16, 64),
                (4, True, 16, 64), (4, True, 16, 64)],
    "decoder": [(4, True, 16, 64), (4, False, 16, 64), (5, False, 16, 64), (6, False, 16, 64),
                (7, False, 16, 64)],
}


class U2Net(nn.Module):
    """U²-Net built from a stage table.

    Forward: in training mode a list of seven logits ``[fused, side 1 … side 6]`` (side 1 is
    the finest) for deep supervision, each ``(N, num_classes, H, W)``; in eval mode the fused
    logits alone. Any H, W works: every upsampling goes to the size of its skip.
    """

    def __init__(self, in_channels: int, num_classes: int, table: dict):
        super().__init__()
        encoder, channels = [], in_channels
        for height, dilated, mid, out in table["encoder"]:
            encoder.append(RSU(height, channels, mid, out, dilated))
            channels = out
        decoder, skip_channels = [], [out for *_, out in table["encoder"]][-2::-1]
        for (height, dilated, mid, out), skip in zip(table["decoder"], skip_channels):
            decoder.append(RSU(height, channels + skip, mid, out, dilated))
            channels = out
        self.encoder = nn.ModuleList(encoder)
        self.decoder = nn.ModuleList(decoder)
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        # Side outputs from the finest decoder stage up to the bottom encoder stage.
        side_channels = [out for *_, out in table["decoder"]][::-1] + [table["encoder"][-1][-1]]
        self.sides = nn.ModuleList(nn.Conv2d(c, num_classes, 3, padding=1) for c in side_channels)
        self.fuse = nn.Conv2d(len(side_channels) * num_classes, num_classes, 1)

    def forward(self, x: torch.Tensor):
        skips = encode(self.encoder, self.pool, x)
        features = [skips.pop()]  # the bottom stage's output
        hidden = features[0]
        for stage in self.decoder:
            skip = skips.pop()
            hidden = stage(torch.cat([upsample_like(hidden, skip), skip], dim=1))
            features.append(hidden)
        # features run bottom → finest; side k comes from the k-th finest.
        side_logits = [upsample_like(side(feature), x)
                       for side, feature in zip(self.sides, reversed(features))]
        fused = self.fuse(torch.cat(side_logits, dim=1))
        if self.training:
            return [fused, *side_logits]
        return fused

    def stages(self) -> list[tuple[str, nn.Module]]:
        named = [(f"encoder {i + 1} ({_rsu_name(s)})", s) for i, s in enumerate(self.encoder)]
        named += [(f"decoder {len(self.decoder) - i} ({_rsu_name(s)})", s) for i, s in enumerate(self.decoder)]
        return named + [("fuse (1×1 conv over 6 sides)", self.fuse)]


def _rsu_name(block: RSU) -> str:
    return f"RSU-{len(block.encoder) + 1}{'F' if block.dilated else ''}"


@register_model("u2net", description="U²-Net: nested residual U-blocks, deep supervision (44 M parameters)")
def u2net(in_channels: int = 3, num_classes: int = 1) -> U2Net:
    """The paper's full U²-Net."""
    return U2Net(in_channels, num_classes, _FULL)


@register_model("u2netp", description="U²-NetP: the portable U²-Net (1.1 M parameters)")
def u2netp(in_channels: int = 3, num_classes: int = 1) -> U2Net:
    """The paper's small U²-Net†."""
    return U2Net(in_channels, num_classes, _PORTABLE)
