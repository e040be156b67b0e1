"""torchvision's segmentation models trained on COCO with Pascal VOC's 21 labels, so that an
uploaded photo of a person, a bicycle or a cat gets a meaningful mask.

Their weights come from a user-given file, the local torch cache, or a download where the
network allows (as on a hosted Space); offline they are reported unavailable with a message.

torch and torchvision are imported only when one of them is built (importing torchvision costs
about 2 s: it pulls in ``torch._dynamo``): the app lists these models before it loads torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .registry import register_model
from .weights import TORCHVISION_WEIGHTS, WeightsUnavailable, cached_path, downloads_allowed, load_weights

if TYPE_CHECKING:
    from torch import nn

    from .common import TorchvisionSegmentation

VOC_CLASSES = 21


@dataclass(frozen=True)
class PretrainedVOC:
    """One torchvision VOC-label model: its builder's name in ``torchvision.models.segmentation``,
    the URL of its COCO-with-VOC-labels weights (torchvision's; a test checks they agree), and
    whether the weights hold an auxiliary head (it must exist for the state dict to load)."""

    name: str
    weights_url: str
    aux_loss: bool
    description: str

    def build(self, weights_path: str | None = None, load: bool = True) -> TorchvisionSegmentation:
        from torchvision.models import segmentation

        from .common import TorchvisionSegmentation

        model = getattr(segmentation, self.name)(weights=None, weights_backbone=None, num_classes=VOC_CLASSES,
                                                 aux_loss=self.aux_loss)
        if load:
            model.load_state_dict(load_weights(self.weights_url, path=weights_path,
                                               what=f"{self.name} weights"))
        return TorchvisionSegmentation(model)

    def availability(self, weights_path: str | None = None) -> tuple[bool, str]:
        """``(True, "")`` when the weights can be had without building the model."""
        if weights_path or cached_path(self.weights_url).is_file():
            return True, ""
        if downloads_allowed():
            return True, "weights will be downloaded on first use"
        return False, (f"{self.name} needs pretrained weights that are not in the torch cache "
                       f"({cached_path(self.weights_url)}) and downloads are off")


PRETRAINED = {
    spec.name: spec for spec in (
        PretrainedVOC("lraspp_mobilenet_v3_large", f"{TORCHVISION_WEIGHTS}/lraspp_mobilenet_v3_large-d234d4ea.pth",
                      False, "LR-ASPP MobileNetV3-Large, COCO with VOC labels (fast, 3.2 M parameters)"),
        PretrainedVOC("deeplabv3_mobilenet_v3_large",
                      f"{TORCHVISION_WEIGHTS}/deeplabv3_mobilenet_v3_large-fc3c493d.pth", True,
                      "DeepLabV3 MobileNetV3-Large, COCO with VOC labels (11 M parameters)"),
        PretrainedVOC("fcn_resnet50", f"{TORCHVISION_WEIGHTS}/fcn_resnet50_coco-1167a1af.pth", True,
                      "FCN ResNet-50, COCO with VOC labels (35 M parameters)"),
    )
}


def _register(spec: PretrainedVOC) -> None:
    def builder(in_channels: int = 3, num_classes: int = VOC_CLASSES, weights_path: str | None = None,
                pretrained: bool = True) -> nn.Module:
        return spec.build(weights_path, load=pretrained)

    builder.__doc__ = spec.description
    register_model(f"{spec.name}_voc", description=spec.description,
                   restore_options={"pretrained": False},
                   fixed={"in_channels": 3, "num_classes": VOC_CLASSES}, trainable=False)(builder)


for _spec in PRETRAINED.values():
    _register(_spec)

__all__ = ["PRETRAINED", "WeightsUnavailable"]
