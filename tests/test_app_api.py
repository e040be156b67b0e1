"""The real app, started on a free port and driven through gradio_client."""

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

from apphelpers import assert_api_is_named, run_fresh, save_image, wait_for
from fakes import write_drive
from segdemo import checkpoints, models
from segdemo.data import shapes

pytestmark = pytest.mark.slow


@pytest.fixture
def shapes_png(tmp_path):
    images, masks = shapes.generate(1, 192, seed=2024)
    labels = np.zeros((192, 192), dtype=np.uint8)
    for index in range(6):
        labels[masks[0, index] == 1] = index + 1
    image = save_image(tmp_path / "shapes.png", images[0])
    mask = tmp_path / "mask.png"
    palette = Image.fromarray(labels, mode="P")
    palette.putpalette([0, 0, 0] + [v for c in shapes.COLORS for v in c])
    palette.save(mask)
    return image, mask


def test_models_lists_the_shipped_checkpoints_default_first(client):
    names = client.predict(api_name="/models")
    assert names[0] == "unet_shapes"
    assert {"fcn_resnet18_shapes", "u2netp_shapes"} <= set(names)


def test_generate_and_segment_shapes(client):
    gallery = client.predict(3, 5, 192, api_name="/generate_shapes")
    assert len(gallery) == 3
    pictures, table, channels, info = client.predict("unet_shapes", 0.5, api_name="/segment_shapes")
    assert len(pictures) == 3 and "ms per image" in info
    means = [float(row[-1]) for row in table["data"]]
    assert len(means) == 3 and min(means) > 0.9
    assert len(channels) == 6 and channels[0]["caption"].endswith("filled square")
    first = Image.open(pictures[0]["image"])
    assert first.size[1] == 192 and first.size[0] > 3 * 192  # input | truth | prediction


def test_segment_endpoint(client, shapes_png):
    image, _ = shapes_png
    overlay, label_png, info = client.predict(handle_file(str(image)), "", api_name="/segment")
    assert Image.open(overlay).size == (192, 192)
    labels = Image.open(label_png)
    assert labels.mode == "P" and labels.size == (192, 192)
    fractions = info["fractions"]
    assert info["model"] == "unet_shapes" and abs(sum(fractions.values()) - 1) < 1e-3
    assert fractions["background"] > 0.7 and fractions["ring"] > 0


def test_a_class_segmenting_at_once_each_gets_its_own_result(app, tmp_path):
    """Several visitors calling ``/segment`` at the same moment (a class) each get the overlay,
    label map and fractions of their own image, as one visitor alone would."""
    import threading

    images = [save_image(tmp_path / f"shapes{seed}.png", shapes.generate(1, 192, seed=seed)[0][0])
              for seed in range(4)]
    alone = [app.client().predict(handle_file(str(image)), "", api_name="/segment") for image in images]
    expected = [(np.asarray(Image.open(labels)), info["fractions"]) for _, labels, info in alone]
    results, failures = [], []

    def visitor(index):
        client = app.client()
        try:
            for request in range(3):
                which = (index + request) % len(images)
                results.append((which, client.predict(handle_file(str(images[which])), "", api_name="/segment")))
        except Exception as error:  # noqa: BLE001  (reported below with the others)
            failures.append(repr(error))

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures and len(results) == 18, failures
    for which, (overlay, labels, info) in results:
        own_labels, own_fractions = expected[which]
        assert Image.open(overlay).size == (192, 192) and info["model"] == "unet_shapes"
        # the same image gives the same answer (up to a pixel or two where threads sum in another order)
        assert (np.asarray(Image.open(labels)) == own_labels).mean() > 0.999
        assert max(abs(info["fractions"][name] - share) for name, share in own_fractions.items()) < 1e-3
        others = [fractions for index, (_, fractions) in enumerate(expected) if index != which]
        assert all(max(abs(info["fractions"][name] - other[name]) for name in other) > 1e-3 for other in others)


def test_a_request_predicts_on_one_thread_while_a_run_trains_or_others_predict(app, client, shapes_png):
    """AppContext.request_threads reads three attributes of gradio's queue: if gradio renames
    them, this fails instead of every request silently predicting with all the cores. A run
    training meanwhile is asked to make room (BackgroundTrainer.make_room)."""
    import dataclasses
    import os
    from types import SimpleNamespace

    from segdemo.ui.context import INFERENCE

    client.predict(handle_file(str(shapes_png[0])), "", api_name="/segment")  # gradio makes the group on first use
    group = app.demo._queue.event_queue_per_concurrency_id[INFERENCE]
    assert group.current_concurrency == 0 and group.queue == []
    assert app.context.request_threads() == len(os.sched_getaffinity(0))
    rooms = []
    training = dataclasses.replace(app.context, trainer=SimpleNamespace(running=True, make_room=lambda: rooms.append(1)))
    assert training.request_threads() == 1 and rooms == [1]  # and the run is asked to make room
    for running, waiting in ((2, []), (1, ["an event"])):
        queue = SimpleNamespace(event_queue_per_concurrency_id={INFERENCE: SimpleNamespace(
            current_concurrency=running, queue=waiting)})
        assert dataclasses.replace(app.context, queue=queue).request_threads() == 1


def test_segment_upload_with_and_without_ground_truth(client, shapes_png):
    image, mask = shapes_png
    result = client.predict(handle_file(str(image)), None, "unet_shapes", 0.5, 0.5, api_name="/segment_upload")
    annotated, label_map, channels, metrics, errors, info = result
    annotated = annotated.get("value", annotated)  # sent as an update that also sets the legend colors
    assert len(annotated["annotations"]) >= 5 and Image.open(label_map).size == (192, 192)
    assert errors is None and len(channels) == 6 and metrics["data"] == []
    result = client.predict(handle_file(str(image)), handle_file(str(mask)), "unet_shapes", 0.5, 0.5,
                            api_name="/segment_upload")
    metrics, errors = result[3], result[4]
    rows = {row[0]: row for row in metrics["data"]}
    assert float(rows["mean"][1]) > 0.9
    assert Image.open(errors).size == (192, 192)


def test_switching_models(client, shapes_png):
    image, _ = shapes_png
    for name in ("fcn_resnet18_shapes", "u2netp_shapes"):
        _, _, info = client.predict(handle_file(str(image)), name, api_name="/segment")
        assert info["model"] == name


def test_drive_image_with_its_manual_annotation(client, tmp_path):
    root = write_drive(tmp_path / "DRIVE", size=(584, 565))
    image = root / "test" / "images" / "01_test.tif"
    manual = root / "test" / "1st_manual" / "01_manual1.gif"
    result = client.predict(handle_file(str(image)), handle_file(str(manual)), "unet_shapes", 0.5, 0.5,
                            api_name="/segment_upload")
    assert "565×584" in result[5]


def test_model_card_shows_the_u(client):
    details, stages, legend = client.predict("unet_shapes", api_name="/model_card")
    assert "Parameters" in details and "mean Dice" in details
    assert any("encoder" in row[0] for row in stages["data"])


def test_upload_a_checkpoint_then_use_it(client, tmp_path, shapes_png):
    model = models.create("unet", 3, 6, base_channels=4, depth=2)
    meta = checkpoints.build_meta(model, task="multilabel", classes=shapes.CLASSES, colors=shapes.COLORS,
                                  title="my tiny unet")
    path = checkpoints.save(tmp_path / "mine.pt", model, meta)
    client.predict(handle_file(str(path)), api_name="/upload_checkpoint")
    names = client.predict(api_name="/models")
    assert "uploaded: my tiny unet" in names
    _, _, info = client.predict(image=handle_file(str(shapes_png[0])), model="uploaded: my tiny unet",
                                api_name="/segment")
    assert info["model"] == "uploaded: my tiny unet"


def test_compare_models(client):
    gallery, times = client.predict(["unet_shapes", "fcn_resnet18_shapes"], "shapes image", 3, None, 0.5,
                                    api_name="/compare")
    assert len(gallery) == 3 and len(times["data"]) == 2
    assert all(float(row[2]) > 0 for row in times["data"])


def test_train_start_status_stop_and_use_the_new_model(app, client, shapes_png):
    message = client.predict("unet", 8, "synthetic shapes", None, 50, 8, 0.003, 64, 60, api_name="/train_start")
    assert "Started run" in message
    with pytest.raises(Exception, match="already going"):
        client.predict("unet", 8, "synthetic shapes", None, 1, 8, 0.003, 64, 60, api_name="/train_start")
    status = wait_for(lambda: (s := client.predict(api_name="/train_status")) and len(s["steps"]) >= 5 and s)
    assert status["state"] == "running" and status["steps"][-1]["loss"] > 0
    assert "Stopping" in client.predict(api_name="/train_stop")
    final = wait_for(lambda: (s := client.predict(api_name="/train_status"))["state"] in ("stopped", "finished") and s)
    assert final["epochs"], "a stopped run is validated"
    names = wait_for(lambda: [n for n in client.predict(api_name="/models") if n.startswith("trained: ")])
    _, _, info = client.predict(handle_file(str(shapes_png[0])), names[0], api_name="/segment")
    assert info["model"] == names[0]


def test_train_start_with_a_chosen_loss_and_a_loss_that_does_not_suit_the_data(app, client):
    settings = dict(model="unet", unet_width=8, data="synthetic shapes", dataset_zip=None, epochs=1, batch_size=8,
                    learning_rate=0.003, crop_size=64, time_limit_seconds=4)
    with pytest.raises(Exception, match="suits multiclass data, and this data is multilabel"):
        client.predict(**settings, loss="ce", api_name="/train_start")
    assert "Started run" in client.predict(**settings, loss="focal+boundary", api_name="/train_start")
    final = wait_for(lambda: (s := client.predict(api_name="/train_status"))["state"] in ("stopped", "finished") and s)
    assert final["title"].endswith("focal + boundary loss") and final["steps"] and final["steps"][-1]["loss"] > 0


def step_done(step: int, loss: float, dice: float | None):
    from segdemo.engine import StepDone

    return StepDone(step=step, epoch=step / 10, loss=loss, dice=dice, lr=1e-3, images_per_second=10.0,
                    total_steps=1000, elapsed=float(step))


def epoch_done(step: int, train_loss: float, mean_dice: float):
    from segdemo.engine import EpochDone

    return EpochDone(epoch=step // 10, step=step, train_loss=train_loss, val={"mean_dice": mean_dice},
                     partial_epoch=False, validation_seconds=0.1, elapsed=float(step))


def test_long_curves_are_thinned_but_keep_their_ends():
    from segdemo.ui.train_tab import CURVE_POINTS, curve_frames, thinned

    events = [step_done(step, 1.0 / step, 0.5) for step in range(1, 1001)]
    kept = thinned(events)
    assert len(kept) <= CURVE_POINTS + 1 and kept[0].step == 1 and kept[-1].step == 1000
    assert thinned(events[:10]) == events[:10]
    loss, dice = curve_frames(events, [epoch_done(1000, 0.1, 0.9)])
    assert set(loss["series"]) == {"train loss (batch)", "train loss (epoch mean)"}
    assert dice["value"].iloc[-1] == 0.9


def test_curve_frames_suit_gradios_line_plot():
    """The plots keep the axis types and legend of the first frame they draw: no frame before
    the first step (an empty one made both axes categories, with no line, for the whole run),
    numeric axes, and every series present from the start (validation Dice comes later)."""
    import math

    import gradio as gr

    from segdemo.ui.train_tab import TRAIN_DICE, VAL_DICE, curve_frames

    assert curve_frames([], []) == (None, None)
    plot = gr.LinePlot(x="step", y="value", color="series", render=False)
    loss, dice = curve_frames([step_done(1, 0.9, 0.1)], [])
    for frame in (loss, dice):
        datatypes = plot.postprocess(frame).model_dump()["datatypes"]
        assert datatypes["step"] == datatypes["value"] == "quantitative"
    assert set(dice["series"]) == {TRAIN_DICE, VAL_DICE}
    assert math.isnan(dice[dice["series"] == VAL_DICE]["value"].iloc[0])
    later = curve_frames([step_done(1, 0.9, 0.1), step_done(2, 0.8, 0.2)], [epoch_done(2, 0.85, 0.3)])[1]
    assert later["value"].notna().all() and set(later["series"]) == {TRAIN_DICE, VAL_DICE}


def test_the_page_is_built_without_torch_and_warmed_up_after():
    """Importing torch takes about 2.4 s of the 8 s the app may take to serve its page on 2 cores:
    building the page must not import it (nor torchvision); warm_up loads it and the default model."""
    result = run_fresh("""
import sys, tempfile
from segdemo.ui import build_demo, create_context, warm_up
context = create_context(tempfile.mkdtemp(), "checkpoints")
demo = build_demo(context)
heavy = [name for name in ("torch", "torchvision") if name in sys.modules]
assert not heavy, f"building the app imported {heavy}"
warm_up(context)
assert "torch" in sys.modules and context.page_catalog().loaded() == ["unet_shapes"], context.page_catalog().loaded()
""")
    assert "warming up" not in result.stderr, result.stderr[-3000:]


def test_the_idle_queue_polls_gently(app):
    """calm_queue sets two attributes of gradio's Queue: if gradio renames them, this fails
    instead of the app silently going back to waking every millisecond."""
    from segdemo.ui.app import PROGRESS_POLL_SECONDS, QUEUE_IDLE_POLL_SECONDS

    queue = app.demo._queue
    assert queue.sleep_when_free == QUEUE_IDLE_POLL_SECONDS
    assert queue.progress_update_sleep_when_free == PROGRESS_POLL_SECONDS


def test_scratch_folders_are_pruned(monkeypatch):
    """Files handed to gradio are copied into its cache; our copies must not pile up in /tmp."""
    import os
    import time

    from segdemo.ui import files

    old = files.scratch_folder("test-")
    (old / "picture.png").write_bytes(b"x")
    stale = time.time() - files.SCRATCH_KEEP_SECONDS - 5
    os.utime(old, (stale, stale))
    monkeypatch.setattr(files, "_scratch_pruned", 0.0)
    fresh = files.scratch_folder("test-")
    assert fresh.is_dir() and not old.exists()


def test_every_endpoint_names_what_it_takes_and_gives(client):
    """An API client reads ``view_api`` to learn what to send: no ``param_3``, no ``m``, no ``value_105``."""
    api = assert_api_is_named(client)
    assert [p["parameter_name"] for p in api["named_endpoints"]["/segment"]["parameters"]] == ["image", "model"]


def test_endpoints_take_keyword_arguments(client, shapes_png):
    overlay, label_png, info = client.predict(image=handle_file(str(shapes_png[0])), model="unet_shapes",
                                              api_name="/segment")
    assert info["model"] == "unet_shapes" and Image.open(label_png).mode == "P"
    gallery = client.predict(count=2, seed=1, size=64, api_name="/generate_shapes")
    assert len(gallery) == 2
