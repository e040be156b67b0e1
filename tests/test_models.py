import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from apphelpers import run_fresh
from segdemo import checkpoints, models
from segdemo.losses import build_loss
from segdemo.models.fcn import STRIDE, bilinear_kernel
from segdemo.models.unet import BLOCKS, DenseBlock, ResidualDoubleConv

TRAINABLE = models.names(trainable=True)
PRETRAINED = models.names(trainable=False)


def build(name, num_classes=3):
    options = {"pretrained": False} if name in PRETRAINED else {}
    if name == "fcn_resnet18":
        options["pretrained_backbone"] = False
    if name in PRETRAINED:
        num_classes = 21
    return models.create(name, 3, num_classes, **options).eval()


@pytest.mark.parametrize("name", models.names())
@pytest.mark.parametrize("size", [(192, 192), (33, 34)])
def test_every_model_returns_logits_of_the_input_size(name, size):
    model = build(name)
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape[0] == 1 and out.shape[2:] == size
    assert out.shape[1] == (21 if name in PRETRAINED else 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", models.names())
def test_every_model_takes_a_drive_sized_image(name):
    model = build(name)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 584, 565))
    assert out.shape[2:] == (584, 565)


def test_classic_unet_variants_have_the_papers_parameter_counts():
    tutorial = models.create("unet", 3, 6, base_channels=64, depth=3, upsample="bilinear", norm="none")
    medical = models.create("unet", 1, 1, base_channels=64, depth=4, upsample="transpose", norm="batch")
    assert models.count_parameters(tutorial) == 7_783_238
    assert abs(models.count_parameters(medical) - 31.0e6) < 0.1e6


def test_u2net_parameter_counts_and_deep_supervision():
    assert abs(models.count_parameters(models.create("u2net", 3, 1)) - 44.0e6) < 0.05e6
    portable = models.create("u2netp", 3, 1)
    assert abs(models.count_parameters(portable) - 1.13e6) < 0.01e6
    portable.train()
    outputs = portable(torch.randn(2, 3, 64, 48))
    assert isinstance(outputs, list) and len(outputs) == 7
    assert all(o.shape == (2, 1, 64, 48) for o in outputs)
    portable.eval()
    with torch.no_grad():
        assert portable(torch.randn(1, 3, 64, 48)).shape == (1, 1, 64, 48)


def test_unet_options_and_residual_blocks():
    residual = models.create("unet", 3, 2, base_channels=8, depth=2, residual=True)
    assert residual(torch.randn(1, 3, 20, 24)).shape == (1, 2, 20, 24)
    transpose = models.create("unet", 1, 1, base_channels=8, depth=2, upsample="transpose", norm="none")
    assert transpose(torch.randn(2, 1, 17, 31)).shape == (2, 1, 17, 31)
    nearest = models.create("unet", 3, 6, base_channels=8, depth=3, upsample="nearest", residual=True)
    assert nearest(torch.randn(2, 3, 33, 34)).shape == (2, 6, 33, 34)
    assert models.count_parameters(nearest) == models.count_parameters(residual.__class__(3, 6, 8, 3, residual=True))


def train_a_few_steps(model, steps=6) -> list[float]:
    """Adam on one fixed batch of a two-class multi-label task (class k: channel k of the image is
    positive); returns the losses."""
    torch.manual_seed(0)
    images = torch.randn(4, 3, 32, 32)
    target = (images[:, :2] > 0).to(torch.uint8)
    loss_fn = build_loss("multilabel")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = loss_fn(model(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def test_a_unet_without_skips_trains_and_has_fewer_parameters():
    with_skips = models.create("unet", 3, 2, base_channels=4, depth=2)
    without = models.create("unet", 3, 2, base_channels=4, depth=2, skips=False)
    # each decoder stage's first convolution loses the skip's input channels: 3×3 × (4 + 8) × out
    assert models.count_parameters(without) == models.count_parameters(with_skips) - 9 * (4 * 4 + 8 * 8)
    losses = train_a_few_steps(without)
    assert losses[-1] < losses[0]
    assert [label for label, _ in without.stages()][-2] == "decoder 0 (up)"
    assert [label for label, _ in with_skips.stages()][-2] == "decoder 0 (up + skip)"


@pytest.mark.parametrize("skips", [True, False])
@pytest.mark.parametrize("block", list(BLOCKS))
def test_each_block_trains_and_round_trips_through_a_checkpoint(tmp_path, block, skips):
    model = models.create("unet", 3, 2, base_channels=4, depth=2, block=block, skips=skips)
    assert isinstance(model.stem, BLOCKS[block])
    losses = train_a_few_steps(model)
    assert losses[-1] < losses[0]
    meta = checkpoints.build_meta(model, task="multilabel", classes=["red", "green"], colors=[(255, 0, 0), (0, 255, 0)])
    payload = checkpoints.read(checkpoints.save(tmp_path / f"{block}.pt", model, meta))
    assert payload["meta"]["model"]["options"] == {"base_channels": 4, "depth": 2, "block": block, "skips": skips}
    loaded = checkpoints.build_model(payload["meta"], payload["state_dict"])
    images = torch.randn(2, 3, 33, 34)
    with torch.no_grad():
        assert torch.equal(model.eval()(images), loaded.eval()(images))


def test_residual_true_is_the_older_spelling_of_the_residual_block(tmp_path):
    """Checkpoints saved before the block option (the shipped unet_shapes among them) say
    ``residual: True``; they load as residual blocks, with the same weights."""
    new = models.create("unet", 3, 2, base_channels=4, depth=2, block="residual").eval()
    meta = checkpoints.build_meta(new, task="multilabel", classes=["red", "green"], colors=[(255, 0, 0), (0, 255, 0)])
    meta["model"]["options"] = {"base_channels": 4, "depth": 2, "residual": True}
    payload = checkpoints.read(checkpoints.save(tmp_path / "old.pt", new, meta))
    old = checkpoints.build_model(payload["meta"], payload["state_dict"]).eval()
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(old(images), new(images))
    shipped = checkpoints.read(Path(__file__).resolve().parent.parent / "checkpoints" / "unet_shapes.pt")
    assert shipped["meta"]["model"]["options"].get("residual") is True
    assert isinstance(checkpoints.build_model(shipped["meta"], shipped["state_dict"]).stem, ResidualDoubleConv)
    with pytest.raises(ValueError, match="older spelling of block='residual'"):
        models.create("unet", 3, 2, base_channels=4, depth=2, block="dense", residual=True)


def test_the_dense_block_feeds_each_convolution_every_earlier_feature():
    block = DenseBlock(6, 8, norm="none")
    assert [layer[0].in_channels for layer in block.layers] == [6, 6 + 4]  # growth: half the width
    assert block.transition[0].in_channels == 6 + 2 * 4 and block.transition[0].kernel_size == (1, 1)
    assert block(torch.randn(1, 6, 5, 7)).shape == (1, 8, 5, 7)


@pytest.mark.parametrize("options, message", [
    ({"block": "inception"}, "block must be one of 'plain', 'residual', 'dense'"),
    ({"skips": "no"}, "skips must be True or False"),
    ({"depth": 0}, "depth"),
    ({"upsample": "bicubic"}, "upsample"),
    ({"norm": "group"}, "norm"),
    ({"widht": 3}, "no option widht"),
])
def test_bad_options_name_the_argument(options, message):
    with pytest.raises(ValueError, match=message):
        models.create("unet", **options)


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unet"):
        models.create("segformer")


def test_fcn_upsampler_starts_as_bilinear_interpolation():
    channels = 2
    upsample = torch.nn.ConvTranspose2d(channels, channels, 2 * STRIDE, stride=STRIDE, padding=STRIDE // 2, bias=False)
    with torch.no_grad():
        upsample.weight.copy_(bilinear_kernel(channels, 2 * STRIDE))
        x = torch.randn(1, channels, 6, 5)
        learned = upsample(x)
        reference = F.interpolate(x, scale_factor=STRIDE, mode="bilinear", align_corners=False)
    assert learned.shape == reference.shape
    interior = (slice(None), slice(None), slice(STRIDE, -STRIDE), slice(STRIDE, -STRIDE))
    assert torch.allclose(learned[interior], reference[interior], atol=1e-5)


def test_fcn_without_imagenet_weights_warns_and_starts_random(caplog):
    with caplog.at_level(logging.WARNING):
        model = models.create("fcn_resnet18", 3, 4)
    assert "random" in caplog.text
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64)


def test_pretrained_voc_model_loads_a_local_state_dict(tmp_path):
    name = "lraspp_mobilenet_v3_large_voc"
    with pytest.raises(models.WeightsUnavailable, match="cache"):
        models.create(name)
    made = models.create(name, pretrained=False)
    path = tmp_path / "weights.pth"
    torch.save(made.model.state_dict(), path)
    loaded = models.create(name, weights_path=str(path)).eval()
    made.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), made(x))
    with pytest.raises(ValueError, match="num_classes=21"):
        models.create(name, num_classes=6, pretrained=False)


def test_fcn_trunk_is_resnet18_at_any_width_and_takes_imagenet_weights_at_64(monkeypatch):
    import torchvision

    from segdemo.models import fcn

    torchvision_trunk = torch.nn.Sequential(*list(torchvision.models.resnet18(weights=None).children())[:-2])
    ours = fcn.resnet18_trunk(3, 64)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
           {k: v.shape for k, v in torchvision_trunk.state_dict().items()}
    half = models.create("fcn_resnet18", 3, 6, pretrained_backbone=False, width=32)
    assert 2.5e6 < sum(p.numel() for p in half.parameters()) < 3.5e6
    assert half(torch.zeros(1, 3, 33, 34)).shape == (1, 6, 33, 34)
    with pytest.raises(ValueError, match="width 64 only"):
        models.create("fcn_resnet18", 3, 6, pretrained_backbone=True, width=32)
    imagenet = torchvision.models.resnet18(weights=None).state_dict()
    monkeypatch.setattr(fcn, "load_weights", lambda url, what: imagenet)
    gray = models.create("fcn_resnet18", 1, 2, pretrained_backbone=True)
    assert torch.allclose(gray.backbone[0].weight, imagenet["conv1.weight"].mean(1, keepdim=True))
    assert torch.equal(gray.backbone[7][1].conv2.weight, imagenet["layer4.1.conv2.weight"])


def test_weight_urls_are_torchvisions_own():
    """The URLs are written out so that listing the models needs no torchvision import."""
    import torchvision
    from torchvision.models import segmentation

    from segdemo.models import fcn
    from segdemo.models.pretrained import PRETRAINED

    assert fcn.RESNET18_IMAGENET_URL == torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    enums = {"lraspp_mobilenet_v3_large": segmentation.LRASPP_MobileNet_V3_Large_Weights,
             "deeplabv3_mobilenet_v3_large": segmentation.DeepLabV3_MobileNet_V3_Large_Weights,
             "fcn_resnet50": segmentation.FCN_ResNet50_Weights}
    assert set(PRETRAINED) == set(enums)
    for name, spec in PRETRAINED.items():
        assert spec.weights_url == enums[name].COCO_WITH_VOC_LABELS_V1.url


@pytest.mark.parametrize("env", [{}, {"XDG_CACHE_HOME": "/tmp/xdg-cache"}, {"TORCH_HOME": "~/torch-home"},
                                 {"TORCH_HOME": "/tmp/torch-home", "XDG_CACHE_HOME": "/tmp/ignored"}])
def test_hub_dir_without_torch_is_torchs_own(env):
    """The app finds cached pretrained weights before it imports torch; the folder must be torch's."""
    run_fresh("""
import os, sys
for name in ("TORCH_HOME", "XDG_CACHE_HOME"):
    if name not in %r:
        os.environ.pop(name, None)
from segdemo.models.weights import hub_dir
assert "torch" not in sys.modules
without = hub_dir()
import torch
assert str(without) == torch.hub.get_dir(), (without, torch.hub.get_dir())
assert hub_dir() == without
""" % (sorted(env),), env)


def test_models_are_listed_in_one_order_whichever_module_came_first():
    run_fresh("""
import segdemo.models.u2net
from segdemo import models
assert models.names(trainable=True) == ["unet", "fcn_resnet18", "u2net", "u2netp"], models.names()
assert models.names()[4:] == [f"{name}_voc" for name in models.pretrained.PRETRAINED], models.names()
""")
