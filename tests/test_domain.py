"""What an image is (measured from its pixels) and what each model knows: the kinds of scikit-image's
photos, synthetic shapes and fundus images, the domains of the shipped checkpoints, and the warning
the app gives for an image outside its model's domain (on the page and over ``/segment``)."""

import cv2
import numpy as np
import pytest
import skimage.data
from gradio_client import handle_file

from apphelpers import SHIPPED, save_image
from segdemo import checkpoints, models
from segdemo.catalog import ModelCatalog
from segdemo.data import shapes
from segdemo.domain import (DOMAIN_TEXT, DOMAINS, KIND_TEXT, describe_image, domain_warning, image_kind,
                            model_domain)
from segdemo.inference import load_segmenter, pretrained_meta


def fundus(size: int, seed: int) -> np.ndarray:
    """A drawn fundus photograph, ``(size, size, 3)`` uint8: a reddish-orange disc shaded darker
    towards its rim, a pale optic disc, darker branching vessels, a little noise, a black surround."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    centre = size / 2
    radius = np.hypot(rows - centre, cols - centre) / (0.45 * size)
    shade = np.clip(1.0 - 0.45 * radius ** 2, 0, 1)[..., None]
    image = shade * np.array(rng.uniform([180, 80, 30], [220, 110, 55]), dtype=np.float32)
    optic = (int(centre + 0.25 * size), int(centre))
    image[np.hypot(rows - optic[1], cols - optic[0]) < 0.08 * size] = (245, 200, 120)
    vessels = np.zeros((size, size), np.uint8)
    for _ in range(8):
        angle, points = rng.uniform(0, 2 * np.pi), [optic]
        for _ in range(6):
            angle += rng.normal(0, 0.3)
            points.append((int(points[-1][0] + np.cos(angle) * 0.08 * size),
                           int(points[-1][1] + np.sin(angle) * 0.08 * size)))
        cv2.polylines(vessels, [np.array(points)], False, 1, thickness=max(1, size // 100))
    image[vessels > 0] *= 0.55
    image += rng.normal(0, 4, image.shape)
    image[radius > 1] = 0
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed, size", [(0, 192), (1, 33), (2, 512), (3, (300, 500)), (4, 1200)])
def test_shapes_images_are_shapes(seed, size):
    image = shapes.generate(1, size, seed=seed)[0][0]
    assert image_kind(image) == "shapes"
    # a JPEG of one (its ringing makes a few mid-greys) still is
    encoded = cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_COLOR)
    assert image_kind(encoded) == "shapes"


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field"])
def test_photos_are_photos(name):
    """The Hubble deep field (black sky, faint galaxies) is the bundled photo closest to shapes;
    the coffee cup (red, orange) the closest to a fundus."""
    kind = describe_image(getattr(skimage.data, name)())
    assert kind.kind == "photo" and "colour spread" in kind.reason


@pytest.mark.parametrize("size, seed", [(64, 0), (300, 1), (584, 2)])
def test_fundus_images_are_retinas(size, seed):
    kind = describe_image(fundus(size, seed))
    assert kind.kind == "retina" and "reddish disc" in kind.reason


def test_a_real_fundus_photograph_is_a_retina():
    assert image_kind(skimage.data.retina()) == "retina"   # bundled with scikit-image


def test_grey_photos_and_odd_input():
    camera = skimage.data.camera()
    assert image_kind(np.stack([camera] * 3, axis=-1)) == "photo"
    with pytest.raises(ValueError, match="uint8"):
        image_kind(camera)


def test_shipped_models_know_shapes_and_the_pretrained_photos():
    for path in sorted(SHIPPED.glob("*.pt")):
        assert model_domain(checkpoints.read(path)["meta"]) == "shapes", path.name
    assert model_domain(pretrained_meta("lraspp_mobilenet_v3_large")) == "photo"
    assert load_segmenter(SHIPPED / "unet_shapes.pt").card()["domain"] == DOMAIN_TEXT["shapes"]


@pytest.mark.parametrize("meta, domain", [
    ({"data": {"name": "drive", "spec": "drive:/data/DRIVE.zip"}}, "retina"),
    ({"data": {"name": "voc", "spec": "voc:/data/VOC2012"}}, "photo"),
    ({"data": {"name": "my cells", "spec": "folder:/data/annotations/cells"}}, "custom"),
    ({"data": {"name": "shapes", "spec": "folder:/data/annotations/shapes"}}, "custom"),   # the spec decides
    ({}, "custom"),
    ({"domain": "any", "data": {"name": "shapes"}}, "any"),   # a declared domain wins
    ({"domain": "nonsense", "data": {"name": "shapes", "spec": "shapes"}}, "shapes"),
])
def test_model_domain_from_metadata(meta, domain):
    assert model_domain(meta) == domain


def test_warnings_only_where_kinds_disagree():
    for domain in DOMAINS:
        for kind in KIND_TEXT:
            warning = domain_warning("m", domain, kind, ["fits"])
            assert (warning is not None) == (domain not in ("any", "custom") and domain != kind), (domain, kind)
    warning = domain_warning("unet_shapes", "shapes", "photo", [])
    assert "natural photo" in warning and DOMAIN_TEXT["shapes"] in warning and "Annotate" in warning


def test_catalog_knows_domains_without_loading(tmp_path):
    """Shipped checkpoints are shapes models, pretrained entries photo ones, a checkpoint with a
    declared domain is listed where it fits; nothing is loaded to know it."""
    model = models.create("unet", 3, 1, base_channels=4, depth=2)
    meta = checkpoints.build_meta(model, task="binary", classes=["vessel"], colors=[[230, 40, 40]],
                                  domain="retina", data={"name": "drive", "spec": "drive:DRIVE.zip"})
    catalog = ModelCatalog(SHIPPED, tmp_path / "models")
    name = catalog.add_trained(checkpoints.save(tmp_path / "vessels.pt", model, meta), "vessels")
    assert catalog.domain("unet_shapes") == "shapes" and catalog.domain(name) == "retina"
    assert catalog.domain("pretrained: lraspp_mobilenet_v3_large (VOC)") == "photo"
    vessels, grabcut = "classical: retinal vessels (Frangi)", "classical: object in a box (GrabCut)"
    assert catalog.domain(vessels) == "retina" and catalog.domain(grabcut) == "any"
    assert catalog.fitting("retina") == [vessels, name, grabcut]   # a box model fits anything, after the rest
    assert set(catalog.fitting("shapes")) == {"unet_shapes", "fcn_resnet18_shapes", "u2netp_shapes", grabcut}
    assert catalog.domain_warning("unet_shapes", "shapes") is None
    warning = catalog.domain_warning("unet_shapes", "retina")
    assert KIND_TEXT["retina"] in warning and name in warning
    assert catalog.loaded() == []


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    return {"photo": save_image(folder / "astronaut.png", skimage.data.astronaut()),
            "shapes": save_image(folder / "shapes.png", shapes.generate(1, 192, seed=7)[0][0])}


@pytest.mark.slow
def test_segment_warns_of_a_photo_on_the_shapes_model(client, pictures):
    _, _, info = client.predict(handle_file(str(pictures["photo"])), "", api_name="/segment")
    assert info["model"] == "unet_shapes" and "natural photo" in info["warning"]
    assert DOMAIN_TEXT["shapes"] in info["warning"]
    _, _, info = client.predict(handle_file(str(pictures["shapes"])), "", api_name="/segment")
    assert "warning" not in info and info["fractions"]["background"] > 0.7


@pytest.mark.slow
def test_upload_summary_and_card_say_the_domain(client, pictures):
    *_, summary = client.predict(handle_file(str(pictures["photo"])), None, "unet_shapes", 0.5, 0.5,
                                 api_name="/segment_upload")
    assert "Outside this model's domain" in summary and "natural photo" in summary
    *_, summary = client.predict(handle_file(str(pictures["shapes"])), None, "unet_shapes", 0.5, 0.5,
                                 api_name="/segment_upload")
    assert "domain" not in summary
    card, _, _ = client.predict("unet_shapes", api_name="/model_card")
    assert f"**Domain:** {DOMAIN_TEXT['shapes']}" in card
