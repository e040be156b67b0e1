"""Watching a run learn through the API of the real app: the probe timeline, its animation, the
feature maps during a run and of a finished model."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from apphelpers import assert_api_is_named, wait_for

pytestmark = pytest.mark.slow

RUN_SECONDS = 300   # stopped once the tests have what they need


@pytest.fixture(scope="module")
def live_run(client):
    """A live run of the Train tab's defaults, about 30 s in (or done): the frames so far."""
    client.predict("unet", 8, "synthetic shapes", None, 100, 12, 0.003, 80, RUN_SECONDS, api_name="/train_start")

    def risen():
        frames = client.predict(0, api_name="/train_timeline")["frames"]
        dices = [f["dice"] for f in frames if f["dice"] is not None]
        return len(frames) >= 3 and dices and max(dices) > dices[0] + 0.2 and frames

    frames = wait_for(risen, timeout=240, interval=2)
    yield frames
    client.predict(api_name="/train_stop")
    wait_for(lambda: client.predict(api_name="/train_status")["state"] in ("stopped", "finished"), timeout=120)


def test_the_timeline_has_frames_with_rising_dice(client, live_run):
    frames = live_run
    steps = [f["step"] for f in frames]
    assert steps == sorted(steps) and steps[:3] == [1, 2, 3]
    assert all(f["seconds"] >= 0 for f in frames)
    assert frames[-1]["dice"] > frames[0]["dice"]
    prefix = "data:image/png;base64,"
    picture = Image.open(io.BytesIO(base64.b64decode(frames[-1]["image"][len(prefix):])))
    assert frames[-1]["image"].startswith(prefix) and picture.format == "PNG" and picture.size[0] > picture.size[1]
    later = client.predict(steps[-2], api_name="/train_timeline")["frames"]
    assert later and all(f["step"] > steps[-2] for f in later)   # since_step: only the newer ones


def test_train_features_gives_one_picture_per_stage(client, live_run):
    gallery = client.predict(api_name="/train_features")
    captions = [item["caption"] for item in gallery]
    # the live U-Net: stem, 3 encoder stages, 3 decoder stages and the head
    assert len(gallery) == 8 and captions[0] == "encoder 0 (stem) · 8×192×192"
    assert captions[3].startswith("encoder 3 (down) · 64×24×24") and captions[-1].startswith("head")
    assert all(Image.open(item["image"]).size[0] > 50 for item in gallery)


def test_exported_animation_is_an_animated_gif(client, live_run):
    path = client.predict(api_name="/train_export_animation")
    gif = Image.open(path)
    assert gif.format == "GIF" and gif.is_animated and gif.n_frames >= 3


def test_model_features_of_a_finished_model(client):
    u, gallery = client.predict("unet_shapes", "shapes image", 3, None, api_name="/model_features")
    assert Image.open(u).size[0] > 800
    assert [item["caption"].split(" · ")[0] for item in gallery][:2] == ["encoder 0 (stem)", "encoder 1 (down)"]
    assert len(gallery) == 8
    fcn = client.predict("fcn_resnet18_shapes", "shapes image", 3, None, api_name="/model_features")[1]
    assert fcn and "layer4" in " ".join(item["caption"] for item in fcn)


def test_the_new_endpoints_are_named_and_documented(client):
    api = assert_api_is_named(client)
    assert {"/train_timeline", "/train_export_animation", "/train_features", "/model_features"} <= set(
        api["named_endpoints"])


def test_class_curves_have_every_class_the_mean_and_the_shapes_ceiling():
    from types import SimpleNamespace

    from segdemo.data.shapes import CLASSES
    from segdemo.ui.playground_panel import MEAN, class_frames

    epochs = [SimpleNamespace(step=step, val={"dice": [0.5, float("nan"), *[0.6] * 4], "iou": [0.4] * 6,
                                              "mean_dice": 0.55, "miou": 0.4}) for step in (50, 100)]
    dice, iou = class_frames(epochs, list(CLASSES))
    series = set(dice["series"])
    assert {*CLASSES, MEAN} <= series and any("ceiling" in name for name in series)
    ceiling = dice[dice["series"].str.contains("ceiling")]
    assert set(ceiling["value"]) == {0.94} and set(ceiling["step"]) == {50, 100}
    assert dice[dice["series"] == "disk"]["value"].isna().all()   # no point where a Dice was undefined
    assert not any("ceiling" in name for name in set(iou["series"]))
    other, _ = class_frames(epochs[:1], ["background", "road", "car", "sky", "tree", "sign"])
    assert not any("ceiling" in name for name in set(other["series"]))
    assert class_frames([], list(CLASSES)) == (None, None)
