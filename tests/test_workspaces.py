"""A classroom on one app: in public mode each gradio_client session (or workspace key) is a visitor
whose data no other visitor can see or change, and training runs wait their turn in a fair queue."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from apphelpers import assert_api_is_named, assert_refused, start_app, wait_for
from segdemo import checkpoints, models
from segdemo.data import shapes
from segdemo.workspaces import KEY_PATTERN, new_key

pytestmark = pytest.mark.slow

TEACHER_KEY = "the-teachers-own-key"
LONG_RUN = dict(model="unet", unet_width=4, data="synthetic shapes", dataset_zip=None, epochs=1000, batch_size=2,
                learning_rate=0.003, crop_size=32, time_limit_seconds=0)


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    """The real app in public mode: a workspace per visitor, a queue of at most 2 waiting runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEGDEMO_QUEUE_LENGTH", "2")
        patch.setenv("SEGDEMO_RUN_SECONDS", "120")
        patch.setenv("SEGDEMO_DATASETS", "3")
        patch.setenv("SEGDEMO_ADMIN_KEY", TEACHER_KEY)
        running = start_app(tmp_path_factory.mktemp("classroom"), public=True)
    yield running
    running.close()


def visitor(app, key: str | None = None) -> Client:
    """A visitor: a client session of its own, or one holding workspace ``key``."""
    return Client(app.url, verbose=False, analytics_enabled=False, ssl_verify=False,
                  headers={"x-segdemo-workspace": key} if key else None)


def wait_idle(client, timeout=180):
    return wait_for(lambda: (s := client.predict(api_name="/train_status"))["state"] not in
                    ("starting", "running", "stopping") and s, timeout=timeout)


def test_one_visitors_dataset_is_invisible_and_untouchable_to_another(classroom, tmp_path):
    alice, bob = visitor(classroom), visitor(classroom)
    alice.predict(name="alice-private", classes_from="shapes", class_list="", api_name="/annotate_create")
    image = tmp_path / "photo.png"
    Image.fromarray(shapes.generate(1, 64, seed=2)[0][0]).save(image)
    alice.predict(dataset="alice-private", image=handle_file(str(image)), api_name="/annotate_open_upload")
    layer = np.zeros((64, 64, 4), np.uint8)
    layer[5:20, 5:20] = (201, 58, 64, 255)
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    painting = {"background": handle_file(str(image)), "layers": [handle_file(str(tmp_path / "layer.png"))],
                "composite": None}
    assert "Saved" in alice.predict(dataset="alice-private", painting=painting, item="first",
                                    api_name="/annotate_save")[0]

    with pytest.raises(Exception, match="no dataset named 'alice-private'"):
        bob.predict(dataset="alice-private", api_name="/annotate_dataset")
    created = bob.predict(name="bob-set", classes_from="shapes", class_list="", api_name="/annotate_create")[0]
    assert "alice-private" not in str(created) and "bob-set" in str(created)
    for call in (dict(dataset="alice-private", item="first", api_name="/annotate_open_item"),
                 dict(dataset="alice-private", item="first", api_name="/annotate_delete"),
                 dict(dataset="alice-private", api_name="/annotate_export"),
                 dict(dataset="alice-private", api_name="/annotate_export_voc"),
                 dict(dataset="alice-private", class_list="background\nx #ff0000", api_name="/annotate_classes"),
                 dict(dataset="alice-private", painting=painting, item="first", api_name="/annotate_save")):
        with pytest.raises(Exception, match="no dataset named"):
            bob.predict(**call)
    # Bob may import a dataset of the same name: it lands in his workspace, and changing it leaves hers be
    exported = alice.predict(dataset="alice-private", api_name="/annotate_export")
    assert "1 pairs" in bob.predict(dataset_zip=handle_file(exported), name="alice-private",
                                    api_name="/annotate_import")[1]
    bob.predict(dataset="alice-private", item="first", api_name="/annotate_delete")
    # Alice's pair is still there, unchanged, and only hers
    stats = alice.predict(dataset="alice-private", api_name="/annotate_dataset")[4]
    assert dict(map(tuple, stats["data"]))["filled square"] == 15 * 15
    assert "Opened" in alice.predict(dataset="alice-private", item="first", api_name="/annotate_open_item")[-1]


def test_uploaded_checkpoints_belong_to_their_uploader(classroom, tmp_path):
    alice, bob = visitor(classroom), visitor(classroom)
    model = models.create("unet", 3, 6, base_channels=4, depth=2)
    meta = checkpoints.build_meta(model, task="multilabel", classes=shapes.CLASSES, colors=shapes.COLORS,
                                  title="alice net")
    path = checkpoints.save(tmp_path / "alice.pt", model, meta)
    alice.predict(checkpoint=handle_file(str(path)), api_name="/upload_checkpoint")
    assert "uploaded: alice net" in alice.predict(api_name="/models")
    assert "uploaded: alice net" not in bob.predict(api_name="/models")
    image = tmp_path / "s.png"
    Image.fromarray(shapes.generate(1, 64, seed=1)[0][0]).save(image)
    with pytest.raises(Exception, match="no model named"):
        bob.predict(image=handle_file(str(image)), model="uploaded: alice net", api_name="/segment")
    assert alice.predict(image=handle_file(str(image)), model="uploaded: alice net",
                         api_name="/segment")[2]["model"] == "uploaded: alice net"
    assert "unet_shapes" in bob.predict(api_name="/models")  # the shipped ones are everybody's


def test_a_workspace_key_opens_the_same_workspace_from_any_client(classroom):
    key = new_key()
    first, same, other = visitor(classroom, key), visitor(classroom, key), visitor(classroom, new_key())
    first.predict(name="keyed", classes_from="shapes", class_list="", api_name="/annotate_create")
    assert "keyed" in str(same.predict(name="keyed-2", classes_from="shapes", class_list="",
                                       api_name="/annotate_create")[0])
    with pytest.raises(Exception, match="no dataset named 'keyed'"):
        other.predict(dataset="keyed", api_name="/annotate_dataset")
    for hostile in ("../../x", "a/b/c/d/e/f/g/h/i/j", "short", "x" * 100, "..%2F..%2Fetc"):
        with pytest.raises(Exception, match="not a workspace key"):
            visitor(classroom, hostile).predict(api_name="/models")
    root = classroom.context.workspaces.root
    assert all(len(folder.name) == 32 and all(c in "0123456789abcdef" for c in folder.name)
               for folder in root.iterdir()), "workspace folders are digests, never keys"
    assert not (classroom.context.data.root.parent / "x").exists()


def test_runs_wait_their_turn_and_only_their_owner_stops_them(classroom):
    alice, bob, carol, dave = (visitor(classroom) for _ in range(4))
    assert "Started run" in alice.predict(**LONG_RUN, api_name="/train_start")
    wait_for(lambda: alice.predict(api_name="/train_status")["step"] >= 2, timeout=120)
    queued = bob.predict(**LONG_RUN, api_name="/train_start")
    assert "queue" in queued and "number 1" in queued
    with pytest.raises(Exception, match="one run per workspace"):
        bob.predict(**LONG_RUN, api_name="/train_start")
    assert "number 2" in carol.predict(**LONG_RUN, api_name="/train_start")
    with pytest.raises(Exception, match="queue is full"):
        dave.predict(**LONG_RUN, api_name="/train_start")

    # Bob can neither stop Alice's run nor see her checkpoint; he sees her run train and his place
    assert "no run going or queued" not in bob.predict(api_name="/train_stop")  # it cancels his own
    assert alice.predict(api_name="/train_status")["state"] == "running"
    seen_by_bob = bob.predict(api_name="/train_status")
    assert seen_by_bob["state"] == "running" and not seen_by_bob["yours"] and seen_by_bob["your_position"] is None
    seen_by_carol = carol.predict(api_name="/train_status")
    assert seen_by_carol["your_position"] == 1 and seen_by_carol["your_wait_seconds"] is not None
    assert "no run going or queued" in dave.predict(api_name="/train_stop")
    assert alice.predict(api_name="/train_status")["state"] == "running"

    # Alice stops hers; Carol's starts, and only Alice gets Alice's model
    assert "Stopping" in alice.predict(api_name="/train_stop")
    wait_for(lambda: (s := carol.predict(api_name="/train_status"))["yours"] and s["state"] == "running", timeout=120)
    mine = wait_for(lambda: [n for n in alice.predict(api_name="/models") if n.startswith("trained: ")], timeout=60)
    assert not any(n.startswith("trained: ") for n in bob.predict(api_name="/models"))
    assert alice.predict(api_name="/train_status")["checkpoint"] is None  # Carol's run is the one shown now
    assert "Stopping" in carol.predict(api_name="/train_stop")
    final = wait_idle(carol)
    assert final["yours"] and final["state"] == "stopped" and final["checkpoint"]
    # with nothing training, each sees their own latest run again
    back = wait_idle(alice)
    assert back["yours"] and back["state"] == "stopped" and back["checkpoint"] != final["checkpoint"]
    assert mine and not bob.predict(api_name="/train_status")["yours"]


def test_every_run_is_held_to_the_time_cap(classroom):
    carl = visitor(classroom)
    carl.predict(**LONG_RUN, api_name="/train_start")
    status = wait_for(lambda: (s := carl.predict(api_name="/train_status"))["state"] == "running" and s, timeout=120)
    assert status["yours"] and status["time_limit"] == 120  # asked for no limit: the app's cap holds
    carl.predict(api_name="/train_stop")
    wait_idle(carl)


def test_keys_are_long_and_random():
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100 and all(KEY_PATTERN.match(key) and len(key) == 32 for key in keys)


def test_a_workspace_holds_at_most_its_quota_of_datasets(classroom):
    dora = visitor(classroom)
    for index in range(3):
        dora.predict(name=f"set-{index}", classes_from="shapes", class_list="", api_name="/annotate_create")
    with pytest.raises(Exception, match="holds 3 datasets, the most it may"):
        dora.predict(name="set-3", classes_from="shapes", class_list="", api_name="/annotate_create")
    assert "set-2" in str(visitor(classroom).predict(name="set-2", classes_from="shapes", class_list="",
                                                     api_name="/annotate_create")[0]), "others are not held back"


def test_no_file_route_serves_a_workspace(classroom, tmp_path):
    erin = visitor(classroom)
    erin.predict(name="erin-secret", classes_from="custom (edit the list)",
                 class_list="background\nerin-only-class #123456", api_name="/annotate_create")
    folders = [path for path in classroom.context.workspaces.root.rglob("classes.json")]
    assert folders
    targets = [str(path) for path in folders] + [str(path.parent) for path in folders] + \
        [str(classroom.context.workspaces.root)]
    assert_refused(classroom.url, targets, [b"erin-only-class"])


def saved_dataset(client, tmp_path, name: str, size: int = 64) -> None:
    """A dataset ``name`` with one painted pair, made through the API."""
    client.predict(name=name, classes_from="shapes", class_list="", api_name="/annotate_create")
    image = tmp_path / f"{name}.png"
    Image.fromarray(shapes.generate(1, size, seed=4)[0][0]).save(image)
    layer = np.zeros((size, size, 4), np.uint8)
    layer[2:12, 2:12] = (201, 58, 64, 255)
    Image.fromarray(layer, "RGBA").save(tmp_path / f"{name}-layer.png")
    painting = {"background": handle_file(str(image)), "layers": [handle_file(str(tmp_path / f"{name}-layer.png"))],
                "composite": None}
    client.predict(dataset=name, image=handle_file(str(image)), api_name="/annotate_open_upload")
    client.predict(dataset=name, painting=painting, item="pair", api_name="/annotate_save")


def test_a_share_code_gives_a_copy_that_leaves_the_original_alone(classroom, tmp_path):
    frank, grace = visitor(classroom), visitor(classroom)
    saved_dataset(frank, tmp_path, "frank-set")
    said = frank.predict(dataset="frank-set", api_name="/share_dataset")
    code = said.split("`")[1]
    assert len(code) == 9 and code[4] == "-"
    assert "frank-set" in grace.predict(code=code.lower().replace("-", " "), api_name="/take_shared")
    grace.predict(dataset="frank-set", item="pair", api_name="/annotate_delete")   # her copy
    assert frank.predict(dataset="frank-set", api_name="/annotate_dataset")[-1].startswith("**frank-set**: 1 ")
    with pytest.raises(Exception, match="not a share code"):
        grace.predict(code="../../etc", api_name="/take_shared")
    with pytest.raises(Exception, match="no share has the code"):
        grace.predict(code="AAAA-AAAA", api_name="/take_shared")

    model = models.create("unet", 3, 6, base_channels=4, depth=2)
    meta = checkpoints.build_meta(model, task="multilabel", classes=shapes.CLASSES, colors=shapes.COLORS,
                                  title="frank net")
    frank.predict(checkpoint=handle_file(str(checkpoints.save(tmp_path / "f.pt", model, meta))),
                  api_name="/upload_checkpoint")
    code = frank.predict(model="uploaded: frank net", api_name="/share_model").split("`")[1]
    grace.predict(code=code, api_name="/take_shared")
    assert "uploaded: frank net shared" in grace.predict(api_name="/models")
    with pytest.raises(Exception, match="everybody's already"):
        frank.predict(model="unet_shapes", api_name="/share_model")


def test_the_teacher_publishes_to_every_workspace(classroom, tmp_path):
    teacher, student, latecomer = visitor(classroom), visitor(classroom), visitor(classroom)
    saved_dataset(teacher, tmp_path, "lesson-1")
    model = models.create("unet", 3, 6, base_channels=4, depth=2)
    meta = checkpoints.build_meta(model, task="multilabel", classes=shapes.CLASSES, colors=shapes.COLORS,
                                  title="reference net")
    teacher.predict(checkpoint=handle_file(str(checkpoints.save(tmp_path / "t.pt", model, meta))),
                    api_name="/upload_checkpoint")
    with pytest.raises(Exception, match="not the teacher's key"):
        student.predict(model="unet_shapes", teacher_key="guess", api_name="/publish_model")
    assert "published: reference net" in teacher.predict(model="uploaded: reference net", teacher_key=TEACHER_KEY,
                                                         api_name="/publish_model")
    assert "published: reference net" in student.predict(api_name="/models")
    assert "published: reference net" in latecomer.predict(api_name="/models")
    image = tmp_path / "p.png"
    Image.fromarray(shapes.generate(1, 64, seed=9)[0][0]).save(image)
    assert student.predict(image=handle_file(str(image)), model="published: reference net",
                           api_name="/segment")[2]["model"] == "published: reference net"
    teacher.predict(dataset="lesson-1", teacher_key=TEACHER_KEY, api_name="/publish_dataset")
    assert "lesson-1" in student.predict(dataset="lesson-1", api_name="/take_published")
    assert student.predict(dataset="lesson-1", api_name="/annotate_dataset")[-1].startswith("**lesson-1**: 1 ")


def test_the_shared_apps_endpoints_are_named_and_documented(classroom):
    api = assert_api_is_named(visitor(classroom))
    assert {"/share_model", "/share_dataset", "/take_shared", "/publish_model", "/publish_dataset",
            "/take_published"} <= set(api["named_endpoints"])
