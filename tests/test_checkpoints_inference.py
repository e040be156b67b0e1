import dataclasses
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from segdemo import checkpoints, models
from segdemo.errors import CheckpointError
from segdemo.data import shapes
from segdemo.inference import Segmenter, load_segmenter, pretrained_segmenter
import segdemo.inference as inference


def small_unet(classes=6):
    torch.manual_seed(0)
    return models.create("unet", 3, classes, base_channels=4, depth=2)


def shapes_meta(model, **extra):
    return checkpoints.build_meta(model, task="multilabel", classes=shapes.CLASSES, colors=shapes.COLORS, **extra)


@pytest.mark.parametrize("name, options", [
    ("unet", {"base_channels": 4, "depth": 2}),
    ("u2netp", {}),
    ("fcn_resnet18", {"pretrained_backbone": False}),
])
def test_round_trip_gives_identical_outputs(tmp_path, name, options):
    model = models.create(name, 3, 6, **options).eval()
    path = checkpoints.save(tmp_path / "model.pt", model, shapes_meta(model, metrics={"mean_dice": 0.5}))
    # On the CPU, where ``expected`` is computed: bit-identity holds on one device (a GPU's fp32
    # convolutions may run in TF32), and the GPU's agreement is tests/test_cuda.py's to check.
    segmenter = load_segmenter(path, device="cpu", precision="fp32")
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255))[0].numpy()
    assert np.array_equal(segmenter.predict(image).probabilities, expected)
    assert segmenter.meta["metrics"] == {"mean_dice": 0.5}
    assert segmenter.classes == shapes.CLASSES and segmenter.task == "multilabel"
    assert list(tmp_path.iterdir()) == [tmp_path / "model.pt"]  # no temporary file left


def test_half_precision_checkpoints_are_smaller_and_load(tmp_path):
    model = small_unet()
    full = checkpoints.save(tmp_path / "full.pt", model, shapes_meta(model))
    half = checkpoints.save(tmp_path / "half.pt", model, shapes_meta(model), half=True)
    assert half.stat().st_size < full.stat().st_size
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    assert np.allclose(load_segmenter(half).predict(image).probabilities, load_segmenter(full).predict(image).probabilities,
                       atol=1e-2)


class RunsCode:
    """Unpickling this calls os.system: a checkpoint must never be able to do that."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def bad_files(tmp_path):
    model = small_unet()
    good = checkpoints.save(tmp_path / "good.pt", model, shapes_meta(model))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    torch.save(models.create("fcn_resnet18", 3, 6, pretrained_backbone=False).state_dict(), tmp_path / "resnet.pt")
    other = shapes_meta(model)
    other["model"] = {"name": "u2netp", "in_channels": 3, "num_classes": 6, "options": {}}
    torch.save({"format": "segdemo-checkpoint", "format_version": 1, "meta": other,
                "state_dict": model.state_dict()}, tmp_path / "mismatch.pt")
    torch.save({"format": "segdemo-checkpoint", "format_version": 1,
                "meta": {**shapes_meta(model), "model": {"name": "vit", "options": {}}},
                "state_dict": {}}, tmp_path / "unknown.pt")
    with open(tmp_path / "evil.pt", "wb") as file:
        pickle.dump({"format": "segdemo-checkpoint", "payload": RunsCode(tmp_path / "pwned")}, file)
    torch.save({"format": "segdemo-checkpoint", "meta": RunsCode(tmp_path / "pwned")}, tmp_path / "evil_zip.pt")
    return {
        "missing.pt": "no such file", "empty.pt": "empty", "random.pt": "not a readable",
        "truncated.pt": "not a readable", "bare.pt": "bare state dict", "resnet.pt": "bare state dict",
        "mismatch.pt": "do not fit", "unknown.pt": "cannot build", "evil.pt": "refused|not a readable",
        "evil_zip.pt": "refused",
    }


def test_every_bad_checkpoint_gives_one_clear_error_and_runs_nothing(tmp_path):
    for name, message in bad_files(tmp_path).items():
        with pytest.raises(CheckpointError, match=message):
            load_segmenter(tmp_path / name)
    assert not (tmp_path / "pwned").exists()


def test_a_kill_during_save_leaves_the_previous_file_intact(tmp_path):
    model = small_unet()
    path = checkpoints.save(tmp_path / "model.pt", model, shapes_meta(model, metrics={"round": 1}))
    script = f"""
import os, signal, torch
from segdemo import checkpoints, models
from segdemo.data import shapes
model = models.create("unet", 3, 6, base_channels=64, depth=4)  # large: the write takes a while
meta = checkpoints.build_meta(model, task="multilabel", classes=shapes.CLASSES, colors=shapes.COLORS)
real_save = torch.save
def save_then_die(obj, file, *a, **k):
    real_save(obj, file, *a, **k)
    os.kill(os.getpid(), signal.SIGKILL)  # killed after writing, before the rename
torch.save = save_then_die
checkpoints.save({str(path)!r}, model, meta)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -9
    assert checkpoints.read(path)["meta"]["metrics"] == {"round": 1}


def test_predict_probabilities_and_labels():
    model = small_unet()
    segmenter = Segmenter(model, shapes_meta(model))
    images, _ = shapes.generate(1, size=(50, 70), seed=0)
    prediction = segmenter.predict(images[0])
    probabilities = prediction.probabilities
    assert probabilities.shape == (6, 50, 70) and probabilities.dtype == np.float32
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    assert prediction.labels().shape == (50, 70) and prediction.labels().max() <= 6
    assert prediction.label_names == segmenter.label_names and prediction.label_names[0] == "background"
    assert len(prediction.label_colors) == 7 and prediction.classes == shapes.CLASSES
    assert prediction.seconds > 0 and prediction.path == segmenter.path.describe()
    assert abs(sum(prediction.fractions().values()) - 1) < 1e-4
    with pytest.raises(ValueError, match="uint8"):
        segmenter.predict(np.zeros((5, 5), dtype=np.float32))


def test_a_prediction_with_one_thread_keeps_that_thread_at_one_and_no_other():
    """OpenMP keeps torch's thread count per thread: a server's request predicts on one thread
    without changing the count of the thread that asked nothing (a training thread, say)."""
    import threading

    model = small_unet()
    segmenter = Segmenter(model, shapes_meta(model))
    image = shapes.generate(1, size=(48, 48), seed=0)[0][0]
    before = torch.get_num_threads()
    expected = segmenter.predict(image).probabilities
    seen = {}

    def request():
        seen["probabilities"] = segmenter.predict(image, threads=1).probabilities
        seen["threads"] = torch.get_num_threads()

    worker = threading.Thread(target=request)
    worker.start()
    worker.join()
    assert seen["threads"] == 1 and torch.get_num_threads() == before
    assert (np.argmax(seen["probabilities"], 0) == np.argmax(expected, 0)).mean() > 0.999


def test_fast_path_is_checked_against_fp32_and_the_model_is_left_alone():
    model = small_unet()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    segmenter = Segmenter(model, shapes_meta(model))
    images, _ = shapes.generate(1, seed=1)
    segmenter.predict(images[0])
    assert segmenter.agreement is not None and segmenter.agreement >= 0.995
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    fast = inference.fast_path_for(segmenter.device)
    if fast.autocast_dtype is not None:  # autocast is kept only if it ran the probe image faster
        plain = dataclasses.replace(fast, autocast_dtype=None)
        assert set(segmenter.probe_seconds) == {fast.describe(), plain.describe()}
        assert segmenter.path == min((fast, plain), key=lambda path: segmenter.probe_seconds[path.describe()])
        assert segmenter.card()["inference path"] == segmenter.path.describe()


def test_the_faster_inference_path_is_kept(monkeypatch):
    """The timing decides: with an autocast path that is made slow, fp32 (folded, channels_last)
    is kept, and the other way round."""
    model = small_unet()
    bf16 = inference.InferencePath(torch.bfloat16, True, True)
    monkeypatch.setattr(inference, "fast_path_for", lambda device: bf16)
    for slow in (torch.bfloat16, None):
        segmenter = Segmenter(model, shapes_meta(model))
        forward = segmenter._forward

        def timed_forward(model_, path, x, slow=slow):
            if model_ is segmenter._fast_model and path.autocast_dtype == slow:
                time.sleep(0.02)
            return forward(model_, path, x)

        monkeypatch.setattr(segmenter, "_forward", timed_forward)
        segmenter.predict(shapes.generate(1, seed=1)[0][0])
        assert segmenter.path.autocast_dtype == (None if slow == torch.bfloat16 else torch.bfloat16)


def test_tiled_prediction_equals_whole_image_prediction(monkeypatch):
    model = models.create("unet", 3, 2, base_channels=4, depth=3).eval()
    meta = checkpoints.build_meta(model, task="multilabel", classes=["a", "b"], colors=[(1, 2, 3), (4, 5, 6)])
    segmenter = Segmenter(model, meta, precision="fp32")
    image = np.random.default_rng(0).integers(0, 255, (700, 900, 3), dtype=np.uint8)
    whole = segmenter.predict(image).probabilities
    monkeypatch.setattr(inference, "TILE_ABOVE_PIXELS", 1000)
    monkeypatch.setattr(inference, "TILE_SIZE", 256)
    monkeypatch.setattr(inference, "TILE_MARGIN", 48)
    tiled = segmenter.predict(image).probabilities
    assert np.abs(tiled - whole).max() < 1e-4


def test_pretrained_voc_segmenter_from_a_local_file(tmp_path):
    made = models.create("lraspp_mobilenet_v3_large_voc", pretrained=False)
    torch.save(made.model.state_dict(), tmp_path / "w.pth")
    segmenter = pretrained_segmenter("lraspp_mobilenet_v3_large", weights_path=str(tmp_path / "w.pth"))
    probabilities = segmenter.predict(np.zeros((64, 80, 3), dtype=np.uint8)).probabilities
    assert probabilities.shape == (21, 64, 80)
    assert np.allclose(probabilities.sum(axis=0), 1, atol=1e-4)
    assert segmenter.classes[15] == "person"


def test_feature_shapes_follow_the_u():
    model = models.create("unet", 3, 6, base_channels=8, depth=3)
    rows = Segmenter(model, shapes_meta(model)).feature_shapes(192, 192)
    shapes_by_stage = {row["stage"]: row["output shape"] for row in rows}
    assert shapes_by_stage["encoder 3 (down)"] == (1, 64, 24, 24)
    assert shapes_by_stage["head (1×1 conv)"] == (1, 6, 192, 192)


def test_the_catalog_loads_a_model_once_for_concurrent_visitors(tmp_path, monkeypatch):
    """The app's warm-up and a first visitor ask for the default model at the same moment."""
    import threading
    import time

    from segdemo.catalog import ModelCatalog

    model = small_unet()
    checkpoints.save(tmp_path / "shipped" / "tiny.pt", model, shapes_meta(model))
    catalog = ModelCatalog(tmp_path / "shipped", tmp_path / "models", default="tiny", include_pretrained=False)
    loads, real_load = [], inference.load_segmenter
    monkeypatch.setattr(inference, "load_segmenter",
                        lambda *a, **k: loads.append(a) or time.sleep(0.2) or real_load(*a, **k))
    got = []
    threads = [threading.Thread(target=lambda: got.append(catalog.get())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1 and len(got) == 4 and all(g is got[0] for g in got)
    assert catalog.loaded() == ["tiny"]
