"""Bounded resources, requests side (issue 18): every hostile request against the running app in
public mode is refused with a message that names the limit, or served within a bounded cost.

The matrix runs against one public app. Throughout it a watcher asks ``/models`` every 0.3 s
(it must answer within a second), and the app's resident memory (this process: the app runs in
it) must grow by less than 200 MB from the first test to the last. The app is started with a
small per-request budget (``SEGDEMO_REQUEST_GFLOP=30``) so that what is served downscaled stays
fast here; the rules are the same as with the public default (400).
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from apphelpers import start_app, wait_for
from fakes import zip_with
from segdemo import limits
from segdemo.annotations import DatasetStore
from segdemo.data.archive import FileTree, zip_entry_count
from segdemo.datafolder import DataFolder
from segdemo.errors import ArchiveError, ImageError, LimitError
from segdemo.image_files import image_size, read_image

pytestmark = pytest.mark.slow

UPLOADED = "uploaded .zip (DRIVE, VOC or image/mask folder)"
SHIPPED = ("unet_shapes", "fcn_resnet18_shapes", "u2netp_shapes")
CLASSES = ("classes.json", '{"classes": ["background", "a"]}')
LONG_RUN = dict(model="unet", unet_width=4, epochs=1000, batch_size=2, learning_rate=0.003, crop_size=32,
                time_limit_seconds=0)


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG")
    return buffer.getvalue()


def declared_png(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width × height`` RGBA pixels, with almost no data behind it:
    only reading its header is cheap, decoding it is not."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + chunk(b"IEND", b""))


class ModelsWatch:
    """Asks ``/models`` every 0.3 s from its own client and keeps the answer times."""

    def __init__(self, app):
        self.client = app.client()
        self.times: list[float] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                self.client.predict(api_name="/models")
                self.times.append(time.perf_counter() - started)
            except Exception as error:  # noqa: BLE001  (counted: the test says what failed)
                self.failures.append(repr(error))
            self.stop.wait(0.3)

    def close(self):
        self.stop.set()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    """The real app in public mode with a small request budget, every shipped model loaded, and
    the /models watcher and the memory baseline taken after that."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEGDEMO_REQUEST_GFLOP", "30")
        patch.setenv("SEGDEMO_ZIP_MB", "16")
        patch.setenv("SEGDEMO_RUN_SECONDS", "60")
        running = start_app(tmp_path_factory.mktemp("resources"), public=True)
    client = running.client()
    for name in SHIPPED:  # loaded and probed: what later requests cost is theirs alone
        client.predict(model=name, api_name="/model_card")
    running.watch = ModelsWatch(running)
    running.baseline_mb = resident_mb()
    yield running
    running.watch.close()
    running.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The hostile files, made once (the 64-megapixel JPEG of one flat colour is 1 MB)."""
    folder = tmp_path_factory.mktemp("hostile")
    made = {"photo": folder / "photo.jpg"}
    Image.new("RGB", (8000, 8000), (90, 140, 200)).save(made["photo"], quality=85)
    with zipfile.ZipFile(folder / "many.zip", "w", zipfile.ZIP_STORED) as archive:
        for index in range(100_000):
            archive.writestr(f"images/{index}.png", b"")
    made["many"] = folder / "many.zip"
    big = declared_png(8000, 8000)
    made["declared"] = zip_with(folder / "declared.zip", [CLASSES, *[(f"{kind}/{index}.png", big) for index in range(30)
                                                                     for kind in ("images", "masks")]])
    made["bomb"] = zip_with(folder / "bomb.zip", [CLASSES, ("images/a.png", b"\0" * (64 * 2**20))])
    noise = np.random.default_rng(0).bytes(6 * 2**20)
    made["large"] = zip_with(folder / "large.zip", [CLASSES, *[(f"images/{i}.png", noise) for i in range(3)]])
    made["deep"] = zip_with(folder / "deep.zip", [CLASSES, ("/".join(["d"] * 20) + "/a.png", b"x")])
    link = zipfile.ZipInfo("images/a.png")
    link.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(folder / "link.zip", "w") as archive:
        archive.writestr(*CLASSES)
        archive.writestr(link, "/etc/passwd")
    made["link"] = folder / "link.zip"
    image, mask = png_bytes(np.zeros((32, 32, 3), np.uint8)), png_bytes(np.zeros((32, 32), np.uint8))
    made["pairs"] = zip_with(folder / "pairs.zip", [CLASSES, *[(f"{kind}/p{index:03d}.png", data) for index in range(60)
                                                               for kind, data in (("images", image), ("masks", mask))]])
    made["layer"] = folder / "layer.png"
    made["layer"].write_bytes(declared_png(13000, 13000))
    made["junk"] = folder / "notes.png"
    made["junk"].write_bytes(b"these are my notes, not a picture" * 20)
    return made


def visitor(app, key: str | None = None) -> Client:
    return Client(app.url, verbose=False, analytics_enabled=False, ssl_verify=False,
                  headers={"x-segdemo-workspace": key} if key else None)


def refused(call, *messages: str, within: float = 3.0) -> str:
    """Run ``call``; it must fail within ``within`` seconds with a message holding each of ``messages``."""
    started = time.perf_counter()
    with pytest.raises(Exception) as caught:
        call()
    text = str(caught.value)
    assert time.perf_counter() - started < within, text
    for message in messages:
        assert message in text, text
    for internal in ("Traceback", "<_io.", "DefaultCPUAllocator", "/tmp/"):
        assert internal not in text, text
    return text


# --- images and inference ----------------------------------------------------------------------
@pytest.mark.parametrize("model", ["u2netp_shapes", "unet_shapes"])
def test_a_64_megapixel_photo_is_refused_by_segment_before_anything_is_decoded(public, files, model):
    client = public.client()
    text = refused(lambda: client.predict(image=handle_file(str(files["photo"])), model=model, api_name="/segment"),
                   "8000×8000", "request_gflop", "fits with this model")
    assert "30 GFLOP" in text


def test_display_endpoints_downscale_a_huge_photo_within_the_budget(public, files):
    client = public.client()
    started = time.perf_counter()
    *_, info = client.predict(image=handle_file(str(files["photo"])), ground_truth=None, model="u2netp_shapes",
                              threshold=0.5, opacity=0.5, api_name="/segment_upload")
    assert "The 8000×8000 image was predicted at" in info
    gallery, times = client.predict(models=list(SHIPPED), image_source="uploaded image", seed=0,
                                    image=handle_file(str(files["photo"])), threshold=0.5, api_name="/compare")
    assert len(gallery) == 3 and len(times["data"]) == 3
    assert time.perf_counter() - started < 30


def test_the_shapes_tab_refuses_more_images_than_a_request_may_segment(public):
    client = public.client()
    client.predict(count=12, seed=0, size=512, api_name="/generate_shapes")
    refused(lambda: client.predict(model="u2netp_shapes", threshold=0.5, api_name="/segment_shapes"),
            "12 images of 512×512", "request_gflop")
    client.predict(count=2, seed=0, size=128, api_name="/generate_shapes")
    assert client.predict(model="u2netp_shapes", threshold=0.5, api_name="/segment_shapes")[3]


def test_a_request_past_its_time_stops_with_a_message(public, monkeypatch, tmp_path):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (1500, 1500), (10, 200, 30)).save(photo)
    monkeypatch.setattr(limits, "_current", dataclasses.replace(limits.current(), request_gflop=0.0,
                                                                 request_seconds=0.05))
    refused(lambda: public.client().predict(image=handle_file(str(photo)), model="u2netp_shapes",
                                            api_name="/segment"),
            "stopped after 0.05 s", "request_seconds", within=10)


def test_work_for_a_visitor_who_has_gone_stops(public, files, monkeypatch):
    """A cancelled /compare (as a closed page: gradio marks the event dead) stops before its
    next convolution, where the thread used to run on for minutes. It reads gradio's queue
    (``active_jobs``, each event's ``request`` and ``alive``), which this also checks."""
    assert hasattr(public.demo._queue, "active_jobs")
    # About 150 s of work here: the photo downscaled to 5 megapixels for U²-Net(P)
    monkeypatch.setattr(limits, "_current", dataclasses.replace(limits.current(), request_gflop=3000.0))
    client = public.client()
    job = client.submit(models=["u2netp_shapes"], image_source="uploaded image", seed=0,
                        image=handle_file(str(files["photo"])), threshold=0.5, api_name="/compare")
    wait_for(lambda: job.status().code.name == "PROCESSING", timeout=30, interval=0.05)
    time.sleep(2)  # the 64-megapixel photo is decoded and the model is predicting it (minutes of work)
    job.cancel()
    time.sleep(1)
    used = time.process_time()
    time.sleep(3)
    assert time.process_time() - used < 1.0  # the /models watcher and the clients: a few percent of a core


def test_the_fast_path_is_decided_on_the_probe_image_not_a_visitors(tmp_path):
    from segdemo.inference import AGREEMENT_REQUIRED, fast_path_for, load_segmenter

    segmenter = load_segmenter(Path(__file__).resolve().parent.parent / "checkpoints" / "u2netp_shapes.pt")
    noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    segmenter.predict(noise)   # noise as the first request: 99.47 % agreement, which put everybody on fp32
    assert segmenter.agreement >= AGREEMENT_REQUIRED
    assert segmenter.path == fast_path_for(segmenter.device)
    assert 300e3 < segmenter.flop_per_pixel < 500e3   # U²-Net(P): 394 kFLOP a pixel
    flop, memory = segmenter.work(8000, 8000)
    assert flop > 25e12 and memory > 64e6 * 4 * 6
    with pytest.raises(LimitError, match="request_gflop"):
        segmenter.check_work(8000, 8000, 400e9, None)
    height, width = segmenter.largest_within(8000, 6000, 400e9, None)
    assert segmenter.work(height, width)[0] <= 400e9 and abs(height / width - 8 / 6) < 0.01


# --- zips and annotations -----------------------------------------------------------------------
@pytest.mark.parametrize("archive, messages", [
    ("many", ("100,000 entries", "limit")),
    ("bomb", ("zip bomb", "zip_ratio")),
    ("large", ("unpacks to more than 16 MB", "zip_mb")),
    ("deep", ("folders deep", "zip_depth")),
    ("link", ("symbolic link",)),
])
def test_hostile_zips_are_refused_by_import_and_training_and_not_kept(public, files, archive, messages):
    client = visitor(public)
    refused(lambda: client.predict(dataset_zip=handle_file(str(files[archive])), name="imported",
                                   api_name="/annotate_import"), *messages)
    refused(lambda: client.predict(data=UPLOADED, dataset_zip=handle_file(str(files[archive])), **LONG_RUN,
                                   api_name="/train_start"), *messages[:1])
    kept = [path for path in public.context.data.root.glob("workspaces/*/uploads/**/*") if path.is_file()]
    assert not kept, kept


def test_declared_sizes_are_checked_from_the_headers_before_decoding(public, files):
    client = visitor(public)
    refused(lambda: client.predict(dataset_zip=handle_file(str(files["declared"])), name="big",
                                   api_name="/annotate_import"), "8000×8000", "annotation_side")
    client.predict(name="painted", classes_from="shapes", class_list="", api_name="/annotate_create")
    background = files["layer"].parent / "background.png"
    Image.new("RGB", (64, 64)).save(background)
    client.predict(dataset="painted", image=handle_file(str(background)), api_name="/annotate_open_upload")
    painting = {"background": handle_file(str(background)), "layers": [handle_file(str(files["layer"]))] * 9,
                "composite": None}
    refused(lambda: client.predict(dataset="painted", painting=painting, item="x", api_name="/annotate_save"),
            "9 layers", "editor_layers")
    painting["layers"] = painting["layers"][:1]
    refused(lambda: client.predict(dataset="painted", painting=painting, item="x", api_name="/annotate_save"),
            "13000×13000", "editor_side")


def test_an_imported_dataset_is_shown_a_page_of_thumbnails_at_a_time(public, files):
    client = visitor(public)
    assert "60 pairs" in client.predict(dataset_zip=handle_file(str(files["pairs"])), name="sixty",
                                        api_name="/annotate_import")[1]
    view = client.predict(dataset="sixty", api_name="/annotate_dataset")
    assert len(view[3]) == 24 and "page 1 of 3" in view[-1]
    gallery, progress = client.predict(dataset="sixty", page=3, api_name="/annotate_gallery")
    assert len(gallery) == 12 and "page 3 of 3" in progress
    stats = dict(map(tuple, view[4]["data"]))
    assert stats["background"] == 60 * 32 * 32


def test_a_hundred_thousand_entry_zip_is_refused_before_it_is_listed(files, tmp_path):
    assert zip_entry_count(files["many"]) == 100_000
    started = time.perf_counter()
    with pytest.raises(ArchiveError, match="two files for each of at most 5,000 pairs"):
        DatasetStore(tmp_path / "store").import_zip(files["many"], "many")
    with pytest.raises(ArchiveError, match="zip_files"):
        FileTree(files["many"], max_files=1000)
    assert time.perf_counter() - started < 0.5
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())


# --- disk -----------------------------------------------------------------------------------------
def test_two_uploads_of_the_same_name_never_replace_each_other(public, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    image, mask = png_bytes(np.zeros((48, 48, 3), np.uint8)), png_bytes(np.zeros((48, 48), np.uint8))
    good = zip_with(first / "shared.zip", [CLASSES, *[(f"{kind}/{i}.png", data) for i in range(3)
                                                      for kind, data in (("images", image), ("masks", mask))]])
    junk = second / "shared.zip"
    junk.write_bytes(b"not a zip" * 100)
    key = "same-workspace-key-0001"
    alice, bob = visitor(public, key), visitor(public, key)
    assert "run" in alice.predict(data=UPLOADED, dataset_zip=handle_file(str(good)), **LONG_RUN,
                                  api_name="/train_start")
    try:
        refused(lambda: bob.predict(data=UPLOADED, dataset_zip=handle_file(str(junk)), **LONG_RUN,
                                    api_name="/train_start"), "shared.zip")
        kept = [path for path in public.context.workspaces.get(key).data.uploads.rglob("*") if path.is_file()]
        assert len(kept) == 1 and kept[0].name == "shared.zip" and kept[0].read_bytes() == good.read_bytes()
    finally:
        alice.predict(api_name="/train_stop")
        wait_for(lambda: alice.predict(api_name="/train_status")["state"] in ("stopped", "finished", "failed"),
                 timeout=120)
    status = alice.predict(api_name="/train_status")
    assert status["checkpoint"] is None or not status["checkpoint"].startswith("/")
    wait_for(lambda: not any(p.is_file() for p in public.context.workspaces.get(key).data.uploads.rglob("*")),
             timeout=30)


def test_old_runs_are_pruned_and_scratch_folders_of_stopped_processes_removed(tmp_path, monkeypatch):
    data = DataFolder.at(tmp_path / "data")
    for index in range(7):
        (data.runs / f"2026113{index // 5}-00000{index % 5}-abcdef").mkdir(parents=True)
    (data.runs / "not-a-run").mkdir()
    removed = data.prune_runs(3, in_use={"20261130-000000-abcdef"})   # the oldest, but in use
    assert removed == ["20261130-000001-abcdef", "20261130-000002-abcdef", "20261130-000003-abcdef"]
    assert sorted(p.name for p in data.runs.iterdir()) == [
        "20261130-000000-abcdef", "20261130-000004-abcdef", "20261131-000000-abcdef", "20261131-000001-abcdef",
        "not-a-run"]

    import tempfile

    from segdemo.ui.files import remove_stale_scratch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1     # no process ever has it
    (tmp_path / f"segdemo-scratch-{os.getpid()}").mkdir()          # this process: alive
    (tmp_path / "segdemo-scratch-1").mkdir()                         # init: alive
    (tmp_path / f"segdemo-scratch-{gone}").mkdir()
    assert remove_stale_scratch() == [f"segdemo-scratch-{gone}"]
    assert (tmp_path / f"segdemo-scratch-{os.getpid()}").exists() and (tmp_path / "segdemo-scratch-1").exists()


# --- messages -------------------------------------------------------------------------------------
def test_read_errors_name_the_file_and_allocation_failures_read_as_a_sentence(public, files):
    text = refused(lambda: public.client().predict(image=handle_file(str(files["junk"])), model="",
                                                   api_name="/segment"), "notes.png", "not an image")
    assert "BytesIO" not in text
    with pytest.raises(ImageError, match="images/x.png is not an image") as caught:
        read_image(b"junk" * 10, name="images/x.png")
    assert "0x" not in str(caught.value)
    assert image_size(declared_png(9000, 7000)) == (7000, 9000)

    import gradio as gr

    from segdemo.errors import OUT_OF_MEMORY, SettingsError, failure_message
    from segdemo.ui.messages import user_errors

    def allocates():
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 8589934592 bytes. Error code 12 (Cannot allocate memory)")

    with pytest.raises(gr.Error) as caught:
        user_errors(allocates)()
    assert caught.value.message == OUT_OF_MEMORY
    assert failure_message(RuntimeError("Expected more than 1 value per channel, got torch.Size([1, 8, 1, 1])")) \
        .startswith("something went wrong")
    assert failure_message(SettingsError("crop size must be at least 32")) == "crop size must be at least 32"


# --- what the whole matrix cost ---------------------------------------------------------------------
def test_models_answered_within_a_second_and_memory_stayed_bounded(public):
    """Last in the file: the /models watcher ran through every test above."""
    watch = public.watch
    assert not watch.failures, watch.failures[:3]
    assert len(watch.times) > 20 and max(watch.times) < 1.0, sorted(watch.times)[-5:]
    grown = resident_mb() - public.baseline_mb
    assert grown < 200, f"the app's resident memory grew {grown:.0f} MB over the matrix"

