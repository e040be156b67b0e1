"""Experiments and lessons at library level: runs listed from their folders (broken logs too), their
probe timelines kept there (bounded, broken ones skipped) and read at a training second, a lesson's
runs queued as one series (in order, stopped together, within a classroom's rules), and the
lessons' configurations."""

import json
import time

import numpy as np
import pytest

from segdemo.datafolder import DataFolder
from segdemo.engine import BackgroundTrainer, TrainConfig, preset
from segdemo.engine.events import PICTURE_NAME, LastPicture, ProbeFrame, SnapshotTaken
from segdemo.engine.experiments import (LOG_NAME, RunLogCache, curve_labels, find, frame_at, list_runs, overlay_rows,
                                        read_log_lines, run_checkpoint, run_frames, run_picture)
from segdemo.engine.lessons import LESSONS, lesson_configs
from segdemo.engine.loop import Trainer
from segdemo.engine.timeline import INDEX_NAME, TIMELINE_DIR, ProbeTimeline, read_index, read_timeline
from segdemo.errors import SettingsError, TrainerBusy, UserError
from segdemo.image_files import png_bytes


def tiny(**changes) -> TrainConfig:
    """A run that takes a second or two on a CPU."""
    base = TrainConfig(model="unet", model_options={"base_channels": 4, "depth": 2}, data="shapes",
                       data_options={"size": 32, "val_length": 8}, epochs=2, steps_per_epoch=4,
                       batch_size=4, lr=1e-2, val_images=8)
    return base.replace(**changes)


def long_run(title: str) -> TrainConfig:
    """A run that goes until it is stopped."""
    return tiny(epochs=10_000, steps_per_epoch=50, title=title)


def write_log(folder, lines) -> None:
    folder.mkdir(parents=True)
    (folder / LOG_NAME).write_text("".join(line if isinstance(line, str) else json.dumps(line) + "\n"
                                           for line in lines))


START = {"type": "start", "config": {"model": "unet", "model_options": {"base_channels": 4}, "loss": "auto",
                                     "lr": 0.003, "batch_size": 12, "max_seconds": 30, "title": "How wide: width 4"}}


def step(n, seconds, loss):
    return {"type": "step", "step": n, "loss": loss, "elapsed": seconds}


def epoch(n, seconds, dice):
    return {"type": "epoch", "step": n, "val": {"mean_dice": dice}, "elapsed": seconds}


def test_runs_are_listed_from_their_folders_and_broken_logs_do_not_break_the_list(tmp_path):
    write_log(tmp_path / "20261130-100000-aaaaaa",
              [START, step(1, 0.5, 0.9), epoch(1, 0.7, 0.3), step(2, 1.0, 0.6), epoch(2, 1.2, 0.5),
               {"type": "end", "reason": "time limit", "message": "reached the limit", "steps": 2, "elapsed": 1.3}])
    # The app stopped mid-run: no end line, and the last line half-written.
    write_log(tmp_path / "20261130-100100-bbbbbb", [START, step(1, 0.5, 0.8), epoch(1, 0.6, 0.4),
                                                    '{"type": "step", "step": 2, "lo'])
    write_log(tmp_path / "20261130-100200-cccccc", ["not json\n", "\xff\xfe\n", "[1, 2]\n"])   # nothing usable
    (tmp_path / "20261130-100300-dddddd").mkdir()                                             # no log at all
    write_log(tmp_path / "not-a-run", [START])                                                # not a run folder
    runs = list_runs(tmp_path)
    assert [r.run_id for r in runs] == ["20261130-100000-aaaaaa", "20261130-100100-bbbbbb"]
    done, interrupted = runs
    assert done.state == "finished" and done.best_dice == 0.5 and done.last_dice == 0.5 and done.elapsed == 1.3
    assert done.width == 4 and done.lr == 0.003 and done.batch_size == 12 and done.max_seconds == 30
    assert done.val_curve == ((0.7, 1, 0.3), (1.2, 2, 0.5)) and [p[2] for p in done.loss_curve] == [0.9, 0.6]
    assert "unet base_channels=4" in done.settings_text() and "30 s" in done.settings_text()
    assert interrupted.state == "interrupted" and interrupted.steps == 1 and interrupted.best_dice == 0.4
    assert json.loads(json.dumps(done.as_dict()))["title"] == "How wide: width 4"


def test_a_huge_log_is_read_only_at_its_beginning_and_end(tmp_path):
    folder = tmp_path / "20261130-100000-aaaaaa"
    write_log(folder, [START, *[step(n, n / 10, 1 / n) for n in range(1, 20_001)], epoch(20_000, 2000.0, 0.9),
                       {"type": "end", "reason": "finished", "message": "done", "steps": 20_000, "elapsed": 2001.0}])
    assert (folder / LOG_NAME).stat().st_size > 1_000_000
    records = read_log_lines(folder / LOG_NAME, max_bytes=100_000)
    assert records[0]["type"] == "start" and records[-1]["type"] == "end"
    assert len(records) < 2000   # the middle was not read
    [run] = list_runs(tmp_path, cache=RunLogCache())
    assert run.state == "finished" and run.best_dice == 0.9 and run.steps == 20_000
    assert read_log_lines(tmp_path / "missing.jsonl") == []


def test_the_cache_rereads_a_log_that_grew(tmp_path):
    folder = tmp_path / "20261130-100000-aaaaaa"
    write_log(folder, [START, step(1, 0.5, 0.9)])
    cache = RunLogCache()
    assert list_runs(tmp_path, cache=cache)[0].state == "interrupted"
    with open(folder / LOG_NAME, "a") as log:
        log.write(json.dumps({"type": "end", "reason": "stopped", "message": "stopped", "steps": 1, "elapsed": 0.6})
                  + "\n")
    assert list_runs(tmp_path, cache=cache)[0].state == "stopped"


def test_overlay_rows_label_each_run_and_unknown_runs_are_refused(tmp_path):
    for name, dice in (("20261130-100000-aaaaaa", 0.5), ("20261130-100100-bbbbbb", 0.7)):
        write_log(tmp_path / name, [START, step(1, 0.5, 0.9), epoch(1, 0.6, dice)])
    runs = list_runs(tmp_path)
    assert curve_labels(runs) == ["How wide: width 4 (aaaaaa)", "How wide: width 4 (bbbbbb)"]
    dice_rows, loss_rows = overlay_rows(find(runs, ["20261130-100100-bbbbbb", "20261130-100000-aaaaaa"]))
    assert dice_rows == [(0.6, 0.7, "How wide: width 4 (bbbbbb)"), (0.6, 0.5, "How wide: width 4 (aaaaaa)")]
    assert len(loss_rows) == 2
    with pytest.raises(UserError, match="no run 20261130-000000-ffffff"):
        find(runs, ["20261130-000000-ffffff"])


def test_the_last_picture_is_kept_in_the_run_folder(tmp_path):
    picture = np.random.default_rng(0).integers(0, 255, (8, 10, 3), dtype=np.uint8)
    LastPicture(tmp_path)(SnapshotTaken(epoch=1, step=4, image=picture, elapsed=1.0))
    assert np.array_equal(run_picture(tmp_path), picture)
    assert run_picture(tmp_path / "nowhere") is None
    (tmp_path / PICTURE_NAME).write_bytes(b"not a png")
    assert run_picture(tmp_path) is None


def probe_frame(step: int, seconds: float | None = None, side: int = 6) -> ProbeFrame:
    """A frame whose picture tells its step apart (real PNG bytes)."""
    picture = np.full((side, side, 3), step % 256, dtype=np.uint8)
    return ProbeFrame(step=step, dice=step / 100, image=png_bytes(picture), probe_seconds=0.01,
                      elapsed=step / 10 if seconds is None else seconds)


def kept_files(run_folder) -> set[str]:
    return {path.name for path in (run_folder / TIMELINE_DIR).glob("*.png")}


def test_a_runs_probe_timeline_is_kept_in_its_folder_bounded_and_thinned(tmp_path):
    timeline = ProbeTimeline(tmp_path, max_frames=8)
    timeline(SnapshotTaken(epoch=1, step=1, image=np.zeros((2, 2, 3), np.uint8), elapsed=0.1))   # not a frame
    for step in range(1, 31):
        timeline(probe_frame(step))
        entries = read_index(tmp_path)
        assert len(entries) <= 8 and entries[0].step == 1 and entries[-1].step == step   # first and latest kept
        assert kept_files(tmp_path) == {entry.file for entry in entries}                 # dropped files deleted
    frames = read_timeline(tmp_path)
    assert [f.step for f in frames] == [e.step for e in read_index(tmp_path)] and len(frames) >= 4
    assert frames[-1] == probe_frame(30)   # step, seconds, Dice, picture and cost as the run made it
    assert not [path for path in (tmp_path / TIMELINE_DIR).iterdir() if path.name.endswith(".tmp")]

    # Pictures over the byte bound are thinned too (two always kept).
    small = ProbeTimeline(tmp_path / "photos", max_bytes=5 * len(probe_frame(1).image))
    for step in range(1, 21):
        small(probe_frame(step))
    assert 2 <= len(read_index(tmp_path / "photos")) <= 5 and len(kept_files(tmp_path / "photos")) <= 5


def test_a_timeline_resumed_in_its_folder_goes_on_and_replaces_what_followed_its_checkpoint(tmp_path):
    first = ProbeTimeline(tmp_path)
    for step in (1, 2, 3, 4, 5):
        first(probe_frame(step))
    (tmp_path / TIMELINE_DIR / "00000099.png").write_bytes(b"left by a crash")   # no index names it
    resumed = ProbeTimeline(tmp_path)
    assert "00000099.png" not in kept_files(tmp_path)
    resumed(probe_frame(4, seconds=9.0))   # resumed from the checkpoint at step 3
    assert [(e.step, e.seconds) for e in read_index(tmp_path)] == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 9.0)]
    assert kept_files(tmp_path) == {"00000001.png", "00000002.png", "00000003.png", "00000004.png"}


def test_a_torn_or_damaged_timeline_is_skipped_where_it_is_broken(tmp_path):
    timeline = ProbeTimeline(tmp_path)
    for step in (1, 2, 3, 4):
        timeline(probe_frame(step))
    folder = tmp_path / TIMELINE_DIR
    whole = (folder / "00000002.png").read_bytes()
    (folder / "00000002.png").write_bytes(whole[: len(whole) // 2])     # cut short
    (folder / "00000003.png").unlink()                                   # gone
    assert [f.step for f in read_timeline(tmp_path)] == [1, 4]
    # An index with bad entries: a path out of the folder, fields of the wrong kind; the good ones stay.
    index = json.loads((folder / INDEX_NAME).read_text())
    index["frames"] += [{"step": 5, "seconds": 0.5, "dice": None, "file": "../../secret.png"},
                        {"step": "six", "seconds": 0.6, "dice": 0.1, "file": "00000006.png"}, "not a frame"]
    (folder / INDEX_NAME).write_text(json.dumps(index))
    assert [f.step for f in read_timeline(tmp_path)] == [1, 4]
    for broken in ('{"frames": [{"step": 1, "sec', "[1, 2]", '{"frames": 3}', "\xff\xfe"):   # torn or not an index
        (folder / INDEX_NAME).write_text(broken)
        assert read_timeline(tmp_path) == [] and read_index(tmp_path) == []
    assert read_timeline(tmp_path / "no run") == []
    # What is read back is bounded: at most so many frames and bytes, thinned evenly.
    many = ProbeTimeline(tmp_path / "many")
    for step in range(1, 41):
        many(probe_frame(step))
    assert [f.step for f in read_timeline(tmp_path / "many", max_frames=5)] == [1, 11, 21, 30, 40]
    one = len(probe_frame(1).image)
    assert len(read_timeline(tmp_path / "many", max_bytes=10 * one)) <= 10


def test_the_frame_at_a_training_second_is_the_latest_before_it():
    frames = [probe_frame(step, seconds) for step, seconds in ((1, 0.5), (8, 2.0), (32, 6.0))]
    assert frame_at(frames, None).step == 32         # the end
    assert frame_at(frames, 0.1).step == 1           # before the first frame: the first
    assert frame_at(frames, 2.0).step == 8 and frame_at(frames, 5.9).step == 8
    assert frame_at(frames, 600).step == 32
    assert frame_at([], 3.0) is None


@pytest.mark.slow
def test_a_probing_run_keeps_its_timeline_and_pruning_removes_it_with_the_run(tmp_path):
    data = DataFolder.at(tmp_path / "data")
    folder = data.runs / "20261130-100000-aaaaaa"
    Trainer(tiny(probe_images=2, out=str(folder))).run()
    Trainer(tiny(out=str(data.runs / "20261130-100100-bbbbbb"))).run()          # no probes: no timeline
    assert not (data.runs / "20261130-100100-bbbbbb" / TIMELINE_DIR).exists()
    probed, plain = list_runs(data.runs, cache=RunLogCache())
    frames = run_frames(probed, data.runs)
    assert [f.step for f in frames] == list(range(1, 9))   # every step of the first 16 is probed
    assert frames[-1].image.startswith(b"\x89PNG") and frames[-1].elapsed >= frames[0].elapsed
    assert run_frames(plain, data.runs) == []
    assert data.prune_runs(1) == [folder.name] and not folder.exists()


def wait_until(predicate, timeout=60.0):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_series_trains_its_runs_in_order_and_lists_them(tmp_path):
    trainer = BackgroundTrainer(tmp_path)
    ended = []
    configs = [tiny(title=f"run {n}") for n in (1, 2, 3)]
    trainer.start_series(configs, name="a lesson", on_finish=lambda run_id, result: ended.append(run_id))
    status = trainer.status()
    assert status["series"] == {"name": "a lesson", "index": 1, "total": 3}
    with pytest.raises(TrainerBusy, match="already going"):   # single-user: one thing at a time
        trainer.start(tiny())
    wait_until(lambda: len(ended) == 3 and not trainer.running)
    assert ended == sorted(ended)   # run ids sort by start time: each was named as it started
    runs = list_runs(tmp_path, trainer.runs_of(None))
    assert [r.title for r in runs] == ["run 1", "run 2", "run 3"] and [r.run_id for r in runs] == ended
    assert all(r.state == "finished" and r.steps == 8 and r.best_dice is not None for r in runs)
    assert runs[-1].lesson == "a lesson, run 3 of 3"   # the last is still in the trainer's memory
    assert all(run_picture(tmp_path / run_id) is not None for run_id in ended)
    trainer.start(tiny())   # the series is over: a run may start
    assert trainer.wait(60)


@pytest.mark.slow
def test_stopping_a_series_run_cancels_the_rest(tmp_path):
    trainer = BackgroundTrainer(tmp_path)
    trainer.start_series([long_run("first"), long_run("second"), long_run("third")], name="a lesson")
    wait_until(lambda: trainer.status()["step"] >= 2)
    waiting = list_runs(tmp_path, trainer.runs_of(None))
    assert [(r.title, r.state) for r in waiting] == [("first", "running"), ("second", "queued"), ("third", "queued")]
    assert trainer.stop() == "stopping"
    assert trainer.wait(30)
    assert not trainer.running and trainer.status()["state"] == "stopped"
    assert [(r.title, r.state) for r in list_runs(tmp_path, trainer.runs_of(None))] == [("first", "stopped")]
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.slow
def test_in_a_classroom_a_series_is_its_owners_one_entry_and_takes_a_place_per_run(tmp_path):
    trainer = BackgroundTrainer(tmp_path, queue_length=3)
    try:
        trainer.start(long_run("alice's"), owner="alice")
        with pytest.raises(TrainerBusy, match="queues 4 runs and the training queue has room for 3"):
            trainer.start_series([tiny()] * 4, name="How wide", owner="bob")
        trainer.start_series([tiny(title="bob 1"), tiny(title="bob 2")], name="How wide", owner="bob")
        assert trainer.queue("bob") == {"queued": 2, "your_position": 1, "your_wait_seconds": None}
        with pytest.raises(TrainerBusy, match="one run or lesson per workspace"):
            trainer.start_series([tiny()], name="How wide", owner="bob")
        with pytest.raises(TrainerBusy, match="one run per workspace"):
            trainer.start(tiny(), owner="bob")
        trainer.start(tiny(title="carol's"), owner="carol")   # the third place
        with pytest.raises(TrainerBusy, match="queue is full"):
            trainer.start(tiny(), owner="dave")
        assert [r.state for r in trainer.runs_of("bob")] == ["queued", "queued"]
        assert trainer.stop("bob") == "cancelled"              # both of his runs leave the queue
        assert trainer.runs_of("bob") == [] and trainer.queue("carol")["your_position"] == 1
        assert trainer.stop("carol") == "cancelled"
        bob_ended = []
        trainer.start_series([tiny(title="bob 1"), tiny(title="bob 2")], name="How wide", owner="bob",
                             runs_dir=tmp_path / "bob", on_finish=lambda run_id, result: bob_ended.append(run_id))
        assert trainer.stop("alice") == "stopping"             # alice's run ends: bob's start, in order
        wait_until(lambda: not trainer.running and len(bob_ended) == 2)
        assert [r.title for r in list_runs(tmp_path / "bob", trainer.runs_of("bob"))] == ["bob 1", "bob 2"]
        assert [r.title for r in list_runs(tmp_path, trainer.runs_of("alice"))] == ["alice's"]
    finally:
        trainer.close()
        trainer.wait(60)


def test_how_wide_varies_only_the_width_on_one_budget():
    configs = lesson_configs("How wide", 20)
    assert [c.model_options["base_channels"] for c in configs] == [4, 8, 16]
    live = preset("live")
    for config in configs:
        assert config.max_seconds == 20 and config.seed == live.seed and config.data == live.data
        assert {**config.model_options, "base_channels": 8} == live.model_options
        assert config.replace(model_options=live.model_options, max_seconds=live.max_seconds, title=live.title,
                              steps_per_epoch=live.steps_per_epoch) == live
        assert config.steps_per_epoch == 25   # validated twice as often as the preset: more points per curve
    assert [c.title for c in configs] == ["How wide: width 4", "How wide: width 8", "How wide: width 16"]


def test_unknown_lessons_and_budgets_are_refused():
    with pytest.raises(SettingsError, match="unknown lesson 'Why not'; the lessons are: Why skip connections"):
        lesson_configs("Why not")
    with pytest.raises(SettingsError, match="1 s to an hour"):
        lesson_configs("How wide", 0)


# These need the unet options ``skips`` and ``block`` and the losses ``bce`` and ``dice`` (branch pg-models).
def test_why_skip_connections_compares_the_unet_without_skips_and_the_fcn():
    unet, no_skips, fcn = lesson_configs("Why skip connections", 30)
    assert unet.model_options == preset("live").model_options
    assert no_skips.model_options == {**unet.model_options, "skips": False}
    assert fcn.model == "fcn_resnet18" and fcn.model_options == {"pretrained_backbone": False, "width": 32}
    assert len({(c.max_seconds, c.seed, c.data, c.batch_size, c.lr) for c in (unet, no_skips, fcn)}) == 1


def test_why_dice_compares_bce_dice_and_both():
    configs = lesson_configs("Why Dice", 30)
    assert [c.loss for c in configs] == ["bce", "dice", "bce_dice"]
    assert all(c.model_options == preset("live").model_options for c in configs)


def test_which_block_compares_plain_residual_and_dense_blocks():
    configs = lesson_configs("Which block", 30)
    assert [c.model_options["block"] for c in configs] == ["plain", "residual", "dense"]
    assert all("residual" not in c.model_options and c.model_options["base_channels"] == 8 for c in configs)


def test_every_lesson_has_an_explanation_and_two_to_four_variants():
    for lesson in LESSONS:
        assert len(lesson.explanation) > 200 and 2 <= len(lesson.variants) <= 4
        assert len({variant.label for variant in lesson.variants}) == len(lesson.variants)


def test_a_runs_model_is_its_best_checkpoint_else_its_last(tmp_path):
    assert run_checkpoint(tmp_path) is None                      # ended before its first validation
    (tmp_path / "last.pt").write_bytes(b"last")
    assert run_checkpoint(tmp_path).name == "last.pt"
    (tmp_path / "best.pt").write_bytes(b"best")
    assert run_checkpoint(tmp_path).name == "best.pt"
