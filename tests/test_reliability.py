"""Bad input, faults and file-route security, against the real running app (issue: reliability).

Every bad input must give a clear message over the API (a gradio error carrying our text) and the
app must keep serving afterwards.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import handle_file
from PIL import Image

from apphelpers import assert_refused, wait_for
from fakes import write_folder, zip_tree, zip_with
from segdemo import checkpoints, models
from segdemo.data import shapes

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def still_serving(client):
    assert client.predict(api_name="/models")[0] == "unet_shapes"


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def bomb_png(width=30000, height=30000) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64000, 9))
            + chunk(b"IEND", b""))


def rgb(height=64, width=80):
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8))


def good_inputs():
    frames = [Image.new("P", (40, 30), color) for color in (1, 2)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 250, 0, 0, 0, 250, 0] + [0] * 759)
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:16, :, 3] = 255
    return {
        "one_pixel.png": encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "sixteen_bit.tif": encode(Image.fromarray(np.linspace(0, 60000, 48 * 64).reshape(48, 64).astype(np.uint16)), "TIFF"),
        "cmyk.jpg": encode(Image.new("CMYK", (40, 30), (0, 200, 200, 0)), "JPEG"),
        "transparent.png": encode(Image.fromarray(rgba, "RGBA"), "PNG"),
        "palette.gif": encode(frames[0], "GIF"),
        "animated.gif": encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0),
    }


def bad_inputs():
    jpeg = encode(rgb(300, 300), "JPEG")
    return {
        "empty.png": (b"", "empty"),
        "random.png": (np.random.default_rng(1).bytes(3000), "not an image"),
        "truncated.jpg": (jpeg[: len(jpeg) // 3], "truncated|decoded"),
        "bomb.png": (bomb_png(), "megapixels"),
    }


@pytest.mark.parametrize("name", list(good_inputs()))
def test_unusual_but_valid_images_are_segmented(client, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(good_inputs()[name])
    overlay, labels, info = client.predict(handle_file(str(path)), "", api_name="/segment")
    assert Image.open(overlay).size == Image.open(labels).size
    assert abs(sum(info["fractions"].values()) - 1) < 1e-3


@pytest.mark.parametrize("name", list(bad_inputs()))
def test_bad_images_get_a_clear_message(client, tmp_path, name):
    data, message = bad_inputs()[name]
    path = tmp_path / name
    path.write_bytes(data)
    for call in (lambda: client.predict(handle_file(str(path)), "", api_name="/segment"),
                 lambda: client.predict(handle_file(str(path)), None, "unet_shapes", 0.5, 0.5,
                                        api_name="/segment_upload")):
        with pytest.raises(Exception, match=message):
            call()
    still_serving(client)


def test_a_large_photo_is_segmented_in_tiles(client, tmp_path):
    photo = np.zeros((6000, 8000, 3), dtype=np.uint8)
    images, _ = shapes.generate(1, 1000, seed=3)
    photo[:1000, :1000] = images[0]
    path = tmp_path / "photo.jpg"
    Image.fromarray(photo).save(path, quality=80)
    overlay, labels, info = client.predict(handle_file(str(path)), "", api_name="/segment")
    assert Image.open(labels).size == (8000, 6000)
    assert max(Image.open(overlay).size) <= 1600  # the picture sent back is scaled for display
    assert info["fractions"]["background"] > 0.9


def test_masks_of_the_wrong_size_or_with_unknown_classes(client, tmp_path):
    image = tmp_path / "image.png"
    Image.fromarray(shapes.generate(1, 64, seed=1)[0][0]).save(image)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((20, 30), dtype=np.uint8)).save(small)
    with pytest.raises(Exception, match=r"30×20 pixels but the image is 64×64"):
        client.predict(handle_file(str(image)), handle_file(str(small)), "unet_shapes", 0.5, 0.5,
                       api_name="/segment_upload")
    unknown = tmp_path / "unknown.png"
    Image.fromarray(np.full((64, 64), 42, dtype=np.uint8)).save(unknown)
    with pytest.raises(Exception, match=r"class values \[42\]"):
        client.predict(handle_file(str(image)), handle_file(str(unknown)), "unet_shapes", 0.5, 0.5,
                       api_name="/segment_upload")
    still_serving(client)


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_bad_checkpoints_are_refused_and_run_nothing(client, tmp_path):
    marker = tmp_path / "pwned"
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("hello")
    other = tmp_path / "other.pt"
    torch.save(models.create("fcn_resnet18", 3, 6, pretrained_backbone=False).state_dict(), other)
    mismatch = tmp_path / "mismatch.pt"
    model = models.create("unet", 3, 6, base_channels=4, depth=2)
    meta = checkpoints.build_meta(model, task="multilabel", classes=shapes.CLASSES, colors=shapes.COLORS)
    meta["model"] = {"name": "u2netp", "in_channels": 3, "num_classes": 6, "options": {}}
    torch.save({"format": "segdemo-checkpoint", "format_version": 1, "meta": meta,
                "state_dict": model.state_dict()}, mismatch)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "segdemo-checkpoint", "meta": RunsCode(marker)}, evil)
    for path, message in ((not_a_checkpoint, "not a readable"), (other, "bare state dict"),
                          (mismatch, "do not fit"), (evil, "refused")):
        with pytest.raises(Exception, match=message):
            client.predict(handle_file(str(path)), api_name="/upload_checkpoint")
    assert not marker.exists()
    assert not any(name.startswith("uploaded: ") for name in client.predict(api_name="/models"))


def test_hostile_and_broken_dataset_zips(client, tmp_path):
    slip = zip_with(tmp_path / "slip.zip", [("classes.json", '{"classes": ["bg", "a"]}'), ("../../evil.png", b"x")])
    absolute = zip_with(tmp_path / "abs.zip", [("classes.json", '{"classes": ["bg", "a"]}'), ("/tmp/evil.png", b"x")])
    bomb = zip_with(tmp_path / "bomb.zip", [("classes.json", '{"classes": ["bg", "a"]}'),
                                           ("images/a.png", b"\0" * (300 * 2**20))])
    folder = write_folder(tmp_path / "nomasks")
    for mask in (folder / "masks").iterdir():
        mask.unlink()
    missing = zip_tree(folder, tmp_path / "missing.zip")
    cases = [(slip, "unsafe"), (absolute, "unsafe"), (bomb, "zip bomb|limit"), (missing, "no image in images/ with a mask")]
    for archive, message in cases:
        with pytest.raises(Exception, match=message):
            client.predict(handle_file(str(archive)), "imported", api_name="/annotate_import")
        with pytest.raises(Exception, match=message):
            client.predict("unet", 8, "uploaded .zip (DRIVE, VOC or image/mask folder)", handle_file(str(archive)),
                           1, 4, 0.001, 64, 10, api_name="/train_start")
    assert not Path("/tmp/evil.png").exists()
    still_serving(client)


@pytest.mark.parametrize("settings, message", [
    ((0, 16, 0.003, 96, 30), "epochs must be between"),
    ((5, 16, -0.1, 96, 30), "learning rate"),
    ((5, 0, 0.003, 96, 30), "batch size"),
    ((5, 16, 0.003, 100000, 30), "crop size"),
])
def test_training_settings_out_of_range(client, settings, message):
    epochs, batch, lr, size, seconds = settings
    with pytest.raises(Exception, match=message):
        client.predict("unet", 8, "synthetic shapes", None, epochs, batch, lr, size, seconds, api_name="/train_start")
    assert client.predict(api_name="/train_status")["state"] in ("idle", "finished", "stopped", "failed")


def test_file_routes_refuse_files_the_app_does_not_serve(app):
    targets = ["/etc/passwd", "../../../../etc/passwd", "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
               str(ROOT / "app.py"), str(app.context.data.datasets), "%2Fetc%2Fpasswd"]
    assert_refused(app.url, targets, [b"root:x:0:0", b"build_demo"])


def test_an_annotation_survives_a_kill_during_its_save(tmp_path):
    from segdemo.annotations import CLASS_PRESETS, DatasetStore

    store = DatasetStore(tmp_path / "datasets")
    store.create("d", CLASS_PRESETS["shapes"])
    image = np.full((32, 32, 3), 100, dtype=np.uint8)
    labels = np.zeros((32, 32), dtype=np.uint8)
    labels[4:10, 4:10] = 1
    store.save("d", "keep", image, labels)
    # Re-save with new pixels, and SIGKILL the process right after the new image is in place but
    # before the new mask is: the worst moment for a pair of files.
    script = f"""
import os, signal, numpy as np
from segdemo.annotations import DatasetStore
real_replace = os.replace
def replace_then_die(source, target, *args, **kwargs):
    real_replace(source, target, *args, **kwargs)
    if str(target).endswith("images/keep.png"):
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace_then_die
DatasetStore({str(tmp_path / 'datasets')!r}).save("d", "keep", np.zeros((32, 32, 3), np.uint8),
                                                  np.full((32, 32), 2, np.uint8))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == -9, done.stderr
    restarted = DatasetStore(tmp_path / "datasets")  # "after a restart"
    loaded_image, loaded_labels = restarted.load("d", "keep")
    assert np.array_equal(loaded_image, image) and np.array_equal(loaded_labels, labels)
    assert [item.name for item in restarted.items("d")] == ["keep"]


def test_disk_full_gives_a_clear_message(app, client, monkeypatch):
    import segdemo.annotations as annotations

    client.predict("full-disk", "shapes", "", api_name="/annotate_create")
    client.predict("full-disk", 1, 64, api_name="/annotate_open_shapes")

    def no_space(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(annotations, "atomic_write", no_space)
    with pytest.raises(Exception, match="No space left on device"):
        client.predict("full-disk", {"background": None, "layers": [], "composite": None}, "x",
                       api_name="/annotate_save")
    still_serving(client)


def test_stop_during_first_step_during_validation_and_twice(app, client):
    trainer = app.context.trainer
    client.predict("unet", 8, "synthetic shapes", None, 3, 8, 0.003, 64, 60, api_name="/train_start")
    client.predict(api_name="/train_stop")
    client.predict(api_name="/train_stop")
    status = wait_for(lambda: (s := client.predict(api_name="/train_status"))["state"] in ("stopped", "finished", "failed") and s,
                      timeout=120)
    assert status["state"] == "stopped", status
    assert trainer.status()["state"] == "stopped"
    # now stop while it validates
    client.predict("unet", 8, "synthetic shapes", None, 50, 8, 0.003, 64, 120, api_name="/train_start")
    wait_for(lambda: trainer.status()["phase"] == "validating", timeout=120, interval=0.02)
    client.predict(api_name="/train_stop")
    status = wait_for(lambda: (s := client.predict(api_name="/train_status"))["state"] in ("stopped", "finished") and s,
                      timeout=120)
    assert status["state"] == "stopped" and status["epochs"]
    assert "Stopping" not in client.predict(api_name="/train_stop")  # nothing to stop: says so


def test_a_diverging_run_is_reported_and_the_app_stays_usable(app, client, monkeypatch):
    import segdemo.engine.setup as setup

    real = setup.build_loss

    class Poisoned(torch.nn.Module):
        def __init__(self, loss):
            super().__init__()
            self.loss, self.calls = loss, 0

        def forward(self, outputs, target):
            self.calls += 1
            value = self.loss(outputs, target)
            return value * float("nan") if self.calls > 3 else value

    monkeypatch.setattr(setup, "build_loss", lambda *a, **k: Poisoned(real(*a, **k)))
    # The poisoned loss lives in this process: the run trains in a thread here, not in the app's
    # child process (which would import the real one). How a run is reported is the same either way.
    monkeypatch.setattr(app.context.trainer, "separate_process", False)
    client.predict("unet", 8, "synthetic shapes", None, 5, 8, 0.003, 64, 60, api_name="/train_start")
    status = wait_for(lambda: (s := client.predict(api_name="/train_status"))["state"] not in ("starting", "running", "stopping") and s,
                      timeout=120)
    assert status["state"] == "failed" and "diverged at step 4" in status["message"]
    still_serving(client)
