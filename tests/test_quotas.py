"""What a workspace may hold, and the cleaning of unused ones (library level; the classroom tests
check the same messages through the running app)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from segdemo import checkpoints, models
from segdemo.annotations import CLASS_PRESETS
from segdemo.data import shapes
from segdemo.datafolder import DataFolder
from segdemo.errors import UserError
from segdemo.workspaces import LAST_USED, Quotas, Workspaces, new_key

SHIPPED = os.path.join(os.path.dirname(__file__), "..", "checkpoints")


def classroom(tmp_path, **limits) -> Workspaces:
    return Workspaces(DataFolder.at(tmp_path / "data"), SHIPPED, public=True,
                      quotas=Quotas(**{"min_free_mb": 0.0, **limits}))


def pair(size=64):
    image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)  # noise: PNG cannot shrink it
    return image, np.zeros((size, size), np.uint8)


def test_a_workspace_over_its_disk_quota_saves_nothing_more(tmp_path):
    space = classroom(tmp_path, workspace_mb=0.1).get(new_key())
    space.store.create("d", CLASS_PRESETS["shapes"])
    space.store.save("d", "small", *pair(64))                     # ~12 KB
    with pytest.raises(UserError, match="the limit is 0.1 MB"):
        space.store.save("d", "large", *pair(256))                # ~200 KB
    assert [item.name for item in space.store.items("d")] == ["small"]


def test_dataset_and_model_counts_are_capped(tmp_path):
    space = classroom(tmp_path, datasets=1, models=1).get(new_key())
    space.store.create("one", CLASS_PRESETS["shapes"])
    with pytest.raises(UserError, match="holds 1 datasets"):
        space.store.create("two", CLASS_PRESETS["shapes"])
    model = models.create("unet", 3, 6, base_channels=4, depth=2)
    meta = checkpoints.build_meta(model, task="multilabel", classes=shapes.CLASSES, colors=shapes.COLORS)
    path = checkpoints.save(tmp_path / "m.pt", model, meta)
    space.catalog.add_checkpoint(path, title="first")
    with pytest.raises(UserError, match="holds 1 models"):
        space.catalog.add_checkpoint(path, title="second")
    with pytest.raises(UserError, match="holds 1 models"):
        space.room_for_run()  # a run could not register its model


def test_a_nearly_full_disk_refuses_every_write(tmp_path):
    space = Workspaces(DataFolder.at(tmp_path / "data"), SHIPPED, public=True,
                       quotas=Quotas(min_free_mb=1e12)).get(new_key())
    with pytest.raises(UserError, match="disk is nearly full"):
        space.store.create("d", CLASS_PRESETS["shapes"])


def test_unused_workspaces_are_removed_and_used_ones_kept(tmp_path):
    workspaces = classroom(tmp_path, unused_days=7)
    old, recent = workspaces.get(new_key()), workspaces.get(new_key())
    for space in (old, recent):
        space.store.create("d", CLASS_PRESETS["shapes"])
    workspaces.get(old.key), workspaces.get(recent.key)  # opening marks them used
    stale = time.time() - 8 * 86400
    os.utime(old.data.root / LAST_USED, (stale, stale))
    assert workspaces.clean() == [old.data.root.name]
    assert not old.data.root.exists() and recent.store.datasets() == ["d"]
    assert workspaces.get(old.key).store.datasets() == [], "a returning visitor starts afresh"


def test_the_single_user_app_has_no_quotas(tmp_path):
    space = Workspaces(DataFolder.at(tmp_path / "data"), SHIPPED).get()
    assert space.quotas is None and space.key is None
    for index in range(25):
        space.store.create(f"d{index}", CLASS_PRESETS["shapes"])
    assert len(space.store.datasets()) == 25


def test_a_workspace_reopened_after_leaving_the_cache_shares_its_folders_locks(tmp_path, monkeypatch):
    """A request may still hold a workspace object that the cache has let go of; the object
    reopened for the next request must not write the same folder under a lock of its own."""
    import threading

    from segdemo import workspaces

    monkeypatch.setattr(workspaces, "OPEN_WORKSPACES", 1)
    spaces, key = classroom(tmp_path), new_key()
    old = spaces.get(key)
    spaces.get(new_key())               # pushes the first one out of the cache
    new = spaces.get(key)
    assert new is not old and new.store._lock is old.store._lock and new.catalog._lock is old.catalog._lock
    old.store.create("d", CLASS_PRESETS["shapes"])
    savers = [threading.Thread(target=space.store.save, args=("d", f"item{i}", *pair(32)))
              for i, space in enumerate([old, new] * 10)]
    for saver in savers:
        saver.start()
    for saver in savers:
        saver.join()
    assert sorted(item.name for item in new.store.items("d")) == sorted(f"item{i}" for i in range(20))
