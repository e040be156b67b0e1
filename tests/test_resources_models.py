"""Bounded resources, models and checkpoints (issue 18): every model described by metadata (a
checkpoint, the Train tab, the API, the CLI) is measured before it is built, and every checkpoint
before a weight is copied.

Each bomb is a tiny file or a single call that asked the server for gigabytes before these checks:
each must be refused at once with a message that names the limit, and the process's memory must
not grow (its peak resident memory, reset before each case where Linux allows, else its resident
memory).
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from segdemo import checkpoints, limits, models
from segdemo.catalog import ModelCache
from segdemo.data import shapes
from segdemo.errors import CheckpointError, SettingsError
from segdemo.inference import load_segmenter
from segdemo.runtime import IDENTITY

MB = 2**20
SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"
FAST_SECONDS = 1.0
MEMORY_GROWTH = 50 * MB


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


class Measured:
    """Wall time and memory growth of the block: the growth of the peak resident memory when the
    kernel lets us reset the peak (``/proc/self/clear_refs``), else of the resident memory."""

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")  # peak resident memory := resident memory now
            self.field = "VmHWM"
        except OSError:
            self.field = "VmRSS"
        self.before = _status("VmRSS")
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.growth = _status(self.field) - self.before
        return False

    def check(self, what: str, seconds: float = FAST_SECONDS):
        assert self.seconds < seconds, f"{what} took {self.seconds:.2f} s"
        assert self.growth < MEMORY_GROWTH, f"{what} grew the process by {self.growth / MB:.0f} MB"


@pytest.fixture(scope="module", autouse=True)
def warm():
    """Every model module and torchvision imported, and the meta device used once, so that a
    measured case pays for nothing but itself."""
    for name in models.names(trainable=True):
        models.skeleton(name, 3, 2)
    checkpoints.build_model(checkpoints.read(SHIPPED / "unet_shapes.pt")["meta"])


# --- the files -------------------------------------------------------------------------------------

def repeated(*shape) -> torch.Tensor:
    """A tensor of ``shape`` whose values are one stored float: ``torch.save`` writes 4 bytes for it."""
    return torch.zeros(1).expand(*shape)


def skeleton_weights(name, classes=6, **options) -> dict:
    """A state dict of exactly the right keys and shapes for the model, every tensor ``repeated``."""
    skeleton = models.skeleton(name, 3, classes, **options)
    return {key: (repeated(*t.shape) if t.is_floating_point() else torch.zeros((), dtype=t.dtype))
            for key, t in skeleton.state_dict().items()}


def meta_for(name, options=None, *, classes=shapes.CLASSES, colors=shapes.COLORS, num_classes=None, in_channels=3,
             **extra) -> dict:
    meta = {"model": {"name": name, "in_channels": in_channels,
                      "num_classes": len(classes) if num_classes is None else num_classes, "options": options or {}},
            "task": "multilabel", "classes": list(classes), "colors": [list(c) for c in colors],
            "normalization": IDENTITY}
    meta.update(extra)
    return meta


def write(path: Path, meta: dict, state_dict: dict) -> Path:
    torch.save({"format": "segdemo-checkpoint", "format_version": 1, "meta": meta, "state_dict": state_dict}, path)
    return path


def shipped_unet():
    return checkpoints.read(SHIPPED / "unet_shapes.pt")


def metadata_bomb(path: Path) -> Path:
    """The issue's 1.8 KB file: a U-Net of 515 billion parameters, no weights."""
    return write(path, meta_for("unet", {"base_channels": 4096, "depth": 5}), {})


def billion_bomb(path: Path) -> Path:
    """Within every option's range, 1.2 billion parameters: only their count refuses it."""
    return write(path, meta_for("unet", {"base_channels": 200, "depth": 5}), {})


def extra_tensor_bomb(path: Path) -> Path:
    """Case 1: a good checkpoint plus a tensor of 1.5 billion repeated values (6 GB as float32)."""
    payload = shipped_unet()
    state = dict(payload["state_dict"], extra=repeated(1_500_000_000))
    return write(path, payload["meta"], state)


def big_unet_bomb(path: Path) -> Path:
    """Case 2: weights of the right shapes for a U-Net of base 160, depth 4 (196 M parameters)."""
    options = {"base_channels": 160, "depth": 4}
    return write(path, meta_for("unet", options), skeleton_weights("unet", **options))


def repeated_weights(path: Path) -> Path:
    """Within the limit, right shapes, every weight one repeated value: 40 KB that becomes 250 MB."""
    options = {"base_channels": 64, "depth": 4}
    return write(path, meta_for("unet", options), skeleton_weights("unet", **options))


def with_meta(**changes):
    def make(path: Path) -> Path:
        payload = shipped_unet()
        meta = dict(payload["meta"])
        model = dict(meta["model"])
        model.update(changes.pop("model", {}))
        meta.update(model=model, **changes)
        return write(path, meta, payload["state_dict"])
    return make


def with_weight(value: float):
    def make(path: Path) -> Path:
        payload = shipped_unet()
        state = {key: tensor.clone() for key, tensor in payload["state_dict"].items()}
        state["head.weight"].view(-1)[3] = value
        return write(path, payload["meta"], state)
    return make


VOC_LIKE = [f"class {i}" for i in range(400)]

BOMBS = {
    "metadata bomb (unet 4096 wide, depth 5)": (metadata_bomb, r"base_channels must be a whole number from 1 to 256"),
    "unet of 1.2 billion parameters": (billion_bomb, r"asks for a unet of 1\.2 billion parameters; segdemo loads "
                                                     r"models of at most 100 million"),
    "case 1: an extra tensor of 1.5e9 values": (extra_tensor_bomb, r"do not fit.*1 unexpected \(extra\)"),
    "case 2: unet base 160 depth 4": (big_unet_bomb, r"asks for a unet of 196 million parameters"),
    "weights of one repeated value": (repeated_weights, r"holds [\d.]+ (thousand|million) values in 4 bytes \(made by expand\?\)"),
    "case 3: unet num_classes 1e8": (with_meta(model={"num_classes": 10**8}), r"has 100000000 outputs but the file names 6"),
    "case 3: unet in_channels 1e7": (with_meta(model={"in_channels": 10**7}), r"takes 10000000 input channels"),
    "case 3: unet depth 12": (with_meta(model={"options": {"depth": 12}}), r"depth must be a whole number from 1 to 5"),
    "case 3: unet depth 50": (with_meta(model={"options": {"depth": 50}}), r"depth must be a whole number from 1 to 5"),
    "case 3: u2net num_classes 1e4": (with_meta(model={"name": "u2net", "num_classes": 10**4, "options": {}}),
                                      r"has 10000 outputs"),
    "case 3: fcn width 512": (with_meta(model={"name": "fcn_resnet18", "options": {"width": 512}}),
                              r"width must be a whole number from 4 to 256"),
    "case 3: fcn width 2048": (with_meta(model={"name": "fcn_resnet18", "options": {"width": 2048}}),
                               r"width must be a whole number from 4 to 256"),
    "case 3: fcn num_classes 400": (with_meta(model={"name": "fcn_resnet18", "num_classes": 400, "options": {}},
                                              task="multiclass", classes=VOC_LIKE, colors=[[0, 0, 0]] * 400),
                                    r"names 400 classes; a multiclass model has 1 to 255"),
    "case 13: normalization of 1000 channels": (with_meta(normalization={"mean": [0.5] * 1000, "std": [0.2] * 1000}),
                                                r"normalization mean has 1,000 values; it needs one per input channel"),
    "case 13: 200k class names": (with_meta(classes=[f"c{i}" for i in range(200_000)],
                                            colors=[[1, 2, 3]] * 200_000), r"names 200,000 classes"),
    "case 13: colour 999": (with_meta(colors=[[999, 0, 0]] + [list(c) for c in shapes.COLORS[1:]]),
                            r"color of 'filled square' is \[999, 0, 0\]; a color is three numbers from 0 to 255"),
    "case 13: zero-std normalization": (with_meta(normalization={"mean": [0, 0, 0], "std": [0.0, 1.0, 1.0]}),
                                        r"normalization std is \[0\.0, 1\.0, 1\.0\]; every value must be at least"),
    "case 13: NaN weight": (with_weight(float("nan")), r"NaN or infinite values \(head\.weight\)"),
    "case 13: infinite weight": (with_weight(float("inf")), r"NaN or infinite values \(head\.weight\)"),
    "a class name of 10,000 characters": (with_meta(classes=["x" * 10_000] + list(shapes.CLASSES[1:])),
                                          r"class names are 1 to 64 characters; one is 10,000"),
    "a binary model of two classes": (with_meta(task="binary"), r"binary model has exactly one"),
}


# --- library level ---------------------------------------------------------------------------------

# Python unpickles the 4.5 MB of 200,000 names and colors (torch's weights_only reader, ~2.5 MB/s)
# before anything can count them; checkpoints.MAX_PICKLE_BYTES bounds how long that can take.
SLOWER = {"case 13: 200k class names": 3.0}


@pytest.mark.parametrize("case", list(BOMBS))
def test_each_checkpoint_bomb_is_refused_at_once_without_memory(tmp_path, case):
    make, message = BOMBS[case]
    path = make(tmp_path / "bomb.pt")
    for load in (lambda: load_segmenter(path),
                 lambda: checkpoints.check_weights(*(lambda p: (p["meta"], p["state_dict"]))(checkpoints.read(path)))):
        with Measured() as measured, pytest.raises(CheckpointError, match=message):
            load()
        measured.check(case, SLOWER.get(case, FAST_SECONDS))


def deflated(path: Path, source: Path) -> Path:
    """``source`` rewritten with every zip entry compressed: torch reads it the same."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as packed:
        for member in original.infolist():
            packed.writestr(member.filename, original.read(member.filename))
    return path


def test_the_zip_directory_is_checked_before_torch_unpacks_anything(tmp_path, monkeypatch):
    zeros = tmp_path / "zeros.pt"
    torch.save({"a": torch.zeros(10_000_000)}, zeros)
    packed = deflated(tmp_path / "packed.pt", zeros)
    assert packed.stat().st_size < 100_000 and torch.load(packed, weights_only=True)["a"].numel() == 10_000_000
    monkeypatch.setattr(checkpoints, "MAX_CHECKPOINT_BYTES", 10 * MB)
    with pytest.raises(CheckpointError, match=r"packed.pt unpacks to 38 MB; the limit is 10 MB"):
        checkpoints.read(packed)
    names = BOMBS["case 13: 200k class names"][0](tmp_path / "names.pt")
    monkeypatch.setattr(checkpoints, "MAX_PICKLE_BYTES", MB)
    with Measured() as measured, pytest.raises(CheckpointError, match=r"holds 4 MB of metadata; the limit is 1 MB"):
        checkpoints.read(names)
    measured.check("a checkpoint of 4 MB of metadata")
    monkeypatch.setattr(checkpoints, "MAX_ENTRIES", 50)
    with pytest.raises(CheckpointError, match=r"holds 99 files; a checkpoint holds at most 50"):
        checkpoints.read(SHIPPED / "unet_shapes.pt")


def test_a_zip_of_too_many_files_is_refused_from_its_end_record(tmp_path):
    many = tmp_path / "many.pt"
    with zipfile.ZipFile(many, "w") as archive:  # past 65,535 entries: a zip64 end record
        for index in range(66_000):
            archive.writestr(f"archive/data/{index}", b"")
    with Measured() as measured, pytest.raises(CheckpointError, match=r"holds 66,000 files; a checkpoint holds at most"):
        checkpoints.read(many)
    measured.check("a zip of 66,000 files")
    legacy = tmp_path / "legacy.pt"
    torch.save({"format": "segdemo-checkpoint"}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="not in the zip format torch.save writes"):
        checkpoints.read(legacy)


def test_the_bombs_are_as_small_as_the_issue_says(tmp_path):
    assert metadata_bomb(tmp_path / "a.pt").stat().st_size < 2_000
    shipped = (SHIPPED / "unet_shapes.pt").stat().st_size
    assert extra_tensor_bomb(tmp_path / "b.pt").stat().st_size < shipped + 1_000  # 1.5e9 values in 4 bytes
    assert big_unet_bomb(tmp_path / "c.pt").stat().st_size < 60_000


def test_a_refused_checkpoint_names_the_limit_it_passed_and_follows_it(tmp_path, monkeypatch):
    path = repeated_weights(tmp_path / "m.pt")  # 31 M parameters
    monkeypatch.setattr(limits, "current", lambda: limits.Limits(model_parameters=10_000_000))
    with pytest.raises(CheckpointError, match=r"31 million parameters; segdemo loads models of at most 10 million "
                                              r"\(the server's limit, SEGDEMO_MODEL_PARAMETERS\)"):
        checkpoints.check_weights(checkpoints.read(path)["meta"], None, "m.pt")


def test_good_checkpoints_still_load_and_keep_their_dtype_conversion(tmp_path):
    model = models.create("unet", 3, 6, base_channels=4, depth=2)
    meta = checkpoints.build_meta(model, task="multilabel", classes=shapes.CLASSES, colors=shapes.COLORS)
    half = checkpoints.save(tmp_path / "half.pt", model, meta, half=True)
    loaded = checkpoints.build_model(meta, checkpoints.read(half)["state_dict"])
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for shipped in sorted(SHIPPED.glob("*.pt")):
        load_segmenter(shipped).predict(np.zeros((32, 32, 3), np.uint8))


def test_saving_refuses_metadata_that_would_break_the_file(tmp_path):
    model = models.create("unet", 3, 2, base_channels=4, depth=1)
    meta = checkpoints.build_meta(model, task="multilabel", classes=["a", "b"], colors=[(1, 2, 3), (4, 5, 300)])
    with pytest.raises(CheckpointError, match=r"color of 'b' is \[4, 5, 300\]"):
        checkpoints.save(tmp_path / "x.pt", model, meta)
    assert not (tmp_path / "x.pt").exists()


MODEL_BOMBS = [
    ("unet", 3, 6, {"base_channels": 4096, "depth": 5}, r"base_channels must be a whole number from 1 to 256"),
    ("unet", 3, 6, {"base_channels": 200, "depth": 5},
     r"a unet for 6 classes, base_channels=200, depth=5 has 1\.2 billion parameters; segdemo builds models of at "
     r"most 100 million"),
    ("unet", 3, 6, {"base_channels": 160, "depth": 4}, r"196 million parameters"),
    ("unet", 3, 10**8, {}, r"num_classes must be a whole number from 1 to 255 \(a label map"),
    ("unet", 10**7, 6, {}, r"in_channels must be a whole number from 1 to 4"),
    ("unet", 3, 6, {"depth": 12}, r"depth must be a whole number from 1 to 5"),
    ("unet", 3, 6, {"depth": 50}, r"depth must be a whole number from 1 to 5"),
    ("unet", 3, 6, {"base_channels": 2.5}, r"base_channels must be a whole number from 1 to 256 .*; got 2\.5"),
    ("u2net", 3, 10**4, {}, r"num_classes must be a whole number from 1 to 255"),
    ("fcn_resnet18", 3, 6, {"width": 512}, r"width must be a whole number from 4 to 256"),
    ("fcn_resnet18", 3, 6, {"width": 2048}, r"width must be a whole number from 4 to 256"),
    ("fcn_resnet18", 3, 400, {}, r"num_classes must be a whole number from 1 to 255"),
    ("fcn_resnet18", 3, 200, {}, r"a fcn_resnet18 for 200 classes has 175 million parameters"),  # classes² · 4096
]


@pytest.mark.parametrize("name, in_channels, num_classes, options, message", MODEL_BOMBS)
def test_each_model_setting_bomb_is_refused_before_it_is_built(name, in_channels, num_classes, options, message):
    """What the Train tab, the API and the CLI build goes through models.create."""
    with Measured() as measured, pytest.raises(SettingsError, match=message):
        models.create(name, in_channels, num_classes, **options)
    measured.check(f"{name} {options}")


# --- estimate ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, options", [("unet", {"base_channels": 8, "depth": 3, "block": "residual"}),
                                           ("unet", {"upsample": "transpose"}), ("u2netp", {}),
                                           ("unet", {"base_channels": 8, "depth": 3, "block": "dense", "skips": False}),
                                           ("fcn_resnet18", {"width": 32})])
def test_estimate_counts_what_create_builds(name, options):
    cost = models.estimate(name, 3, 6, **options)
    model = models.create(name, 3, 6, **{**options, **models.entry(name).restore_options})
    assert cost.parameters == models.count_parameters(model)
    assert cost.parameter_bytes == sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert cost.activation_bytes_per_image is None and cost.input_hw is None


def test_estimated_activations_are_what_the_real_forward_pass_allocates():
    """The meta-device skeleton's forward pass creates tensors of the same sizes as the real
    model's (the same meter watching both), and the figures grow with the pixels."""
    from segdemo.models.cost import _activation_peak

    options = {"base_channels": 8, "depth": 3}
    cost = models.estimate("unet", 3, 6, input_hw=(64, 80), **options)
    real = models.create("unet", 3, 6, **options)
    assert cost.inference_bytes_per_image == _activation_peak(real, 3, (64, 80), training=False)
    assert cost.activation_bytes_per_image == _activation_peak(real, 3, (64, 80), training=True)
    assert cost.activation_bytes_per_image > cost.inference_bytes_per_image > 64 * 80 * 8 * 4
    larger = models.estimate("unet", 3, 6, input_hw=(128, 160), **options)
    assert 3.5 < larger.activation_bytes_per_image / cost.activation_bytes_per_image < 4.5


def test_the_meter_follows_storages_that_autograd_keeps():
    """What autograd saves for the backward pass counts while the graph holds it, after its Python
    tensor is gone (a meter following Python tensors saw 2 of these 3 maps); a view costs nothing."""
    from segdemo.models.cost import measure_peak

    x = torch.empty(1000, device="meta", requires_grad=True)  # 4000 bytes a map
    assert measure_peak(lambda: (x.exp() + 1) * 3).peak == 3 * 4000  # exp keeps its result for its gradient
    with torch.no_grad():
        assert measure_peak(lambda: (x.exp() + 1) * 3).peak == 2 * 4000
    assert measure_peak(lambda: x.exp().view(10, 100).t() * 2).peak == 2 * 4000


def test_estimate_measures_a_model_too_large_to_build_without_memory():
    with Measured() as measured:
        cost = models.estimate("unet", 3, 6, input_hw=(192, 192), base_channels=256, depth=5)
    measured.check("estimating a 2 billion parameter U-Net")
    assert cost.parameters > 1e9 and cost.parameter_bytes == pytest.approx(4 * cost.parameters, rel=0.01)
    assert cost.activation_bytes_per_image > 256 * 192 * 192 * 4 * 10  # the first stage alone: ten maps of 36 MB
    with pytest.raises(SettingsError, match="depth"):
        models.estimate("unet", depth=9)


# --- the model cache -------------------------------------------------------------------------------

class Loaded:
    """Stands in for a Segmenter: the cache only asks for the size of its weights."""

    def __init__(self, megabytes):
        self.size = megabytes * MB

    def weight_bytes(self):
        return self.size


def test_the_model_cache_holds_bytes_not_a_count():
    cache = ModelCache(budget_bytes=100 * MB)
    for key in "abc":
        cache.get(key, lambda: Loaded(40))
    assert cache.keys() == ["b", "c"] and cache.held_bytes() == 80 * MB
    for key in "defgh":
        cache.get(key, lambda: Loaded(1))
    assert cache.keys() == [*"bcdefgh"]  # seven models fit where three larger ones did not
    cache.get("i", lambda: Loaded(40))
    assert cache.keys() == [*"cdefghi"] and cache.held_bytes() == 85 * MB
    cache.get("huge", lambda: Loaded(300))
    assert cache.keys() == ["huge"]  # over the whole budget: kept alone, it was just asked for
    cache.get("a", lambda: Loaded(40))
    assert cache.keys() == ["a"]


def test_the_model_cache_follows_the_limits_by_default(monkeypatch):
    cache = ModelCache()
    monkeypatch.setattr(limits, "current", lambda: limits.Limits(model_cache_mb=50))
    assert cache.budget() == 50 * MB
    assert limits.PUBLIC.model_cache_mb < limits.Limits().model_cache_mb


# --- against the running app ---------------------------------------------------------------------

APP_BOMBS = ["metadata bomb (unet 4096 wide, depth 5)", "unet of 1.2 billion parameters",
             "case 1: an extra tensor of 1.5e9 values", "case 2: unet base 160 depth 4",
             "weights of one repeated value", "case 13: normalization of 1000 channels", "case 13: NaN weight"]


@pytest.mark.slow
def test_the_app_refuses_checkpoint_bombs_at_once(app, client, tmp_path):
    from gradio_client import handle_file

    client.predict(api_name="/models")  # the client and the server's first request are warm
    for case in APP_BOMBS:
        make, message = BOMBS[case]
        path = make(tmp_path / f"{case.split(':')[0].replace(' ', '_')}.pt")
        with Measured() as measured, pytest.raises(Exception, match=message):
            client.predict(handle_file(str(path)), api_name="/upload_checkpoint")
        measured.check(f"{case} uploaded")
        with Measured() as answered:
            names = client.predict(api_name="/models")
        assert answered.seconds < 1.0 and not any(name.startswith("uploaded: ") for name in names)
    assert not list(app.context.data.root.rglob("uploaded/*.pt"))
