"""Run controls (segdemo.engine.control): pause, resume, one step, a learning rate mid-run, stop."""

import os
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest

from segdemo import checkpoints
from segdemo.engine import BackgroundTrainer, ControlApplied, RunControl, StepDone, TrainConfig, Trainer
from segdemo.engine.control import checked_learning_rate
from segdemo.engine.worker import apply_command
from segdemo.errors import SettingsError, UserError


def endless(**changes) -> TrainConfig:
    """A tiny run that trains until it is stopped (a few ms a step on a CPU)."""
    base = TrainConfig(model="unet", model_options={"base_channels": 4, "depth": 2}, data="shapes",
                       data_options={"size": 32, "val_length": 8}, epochs=1000, steps_per_epoch=50,
                       batch_size=4, lr=1e-2, val_images=8, prefetch=1)
    return base.replace(**changes)


def wait_until(predicate, timeout: float = 60.0):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.05)


def steps_of(events) -> list[StepDone]:
    return [event for event in list(events) if isinstance(event, StepDone)]


def child_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("separate_process", [False, True], ids=["thread", "child process"])
def test_pause_holds_the_run_without_a_core_one_step_steps_once_and_resume_goes_on(tmp_path, separate_process):
    trainer = BackgroundTrainer(tmp_path, separate_process=separate_process)
    trainer.start(endless())
    wait_until(lambda: (trainer.status()["step"] or 0) >= 3)
    trainer.pause()
    wait_until(lambda: trainer.status()["paused"])  # once the step under way has ended
    assert trainer.status()["message"].startswith("paused at step")
    held = trainer.status()["step"]
    if separate_process:
        pid = trainer._current.child.pid
        cpu_before = child_cpu_seconds(pid)
    else:
        cpu_before = time.process_time()
    time.sleep(2.0)
    cpu = (child_cpu_seconds(pid) if separate_process else time.process_time()) - cpu_before
    assert trainer.status()["step"] == held, "a paused run took a step"
    assert cpu < 0.2, f"a paused run used {cpu:.2f} s of CPU in 2 s"

    trainer.step()
    wait_until(lambda: trainer.status()["step"] == held + 1)
    time.sleep(1.0)
    assert trainer.status()["step"] == held + 1 and trainer.status()["paused"], "one step is exactly one"
    assert trainer.steps()[-1].step == held + 1  # reported, whatever log_every says

    trainer.resume()
    assert not trainer.status()["paused"]
    wait_until(lambda: trainer.status()["step"] >= held + 5)
    trainer.stop()
    assert trainer.wait(60) and trainer.status()["state"] == "stopped"
    actions = [event.action for event in control_records(tmp_path)]
    assert actions == ["pause", "one step", "resume"], actions


def control_records(runs_dir) -> list:
    """The ControlApplied lines of the one run's log.jsonl, with their fields as attributes."""
    import json
    from types import SimpleNamespace

    (log,) = runs_dir.glob("*/log.jsonl")
    return [SimpleNamespace(**record) for record in map(json.loads, log.read_text().splitlines())
            if record["type"] == "control"]


def test_a_learning_rate_set_mid_run_is_used_from_the_next_step_and_the_schedule_is_set_aside(tmp_path):
    trainer = BackgroundTrainer(tmp_path)
    trainer.start(endless(schedule="onecycle"))
    wait_until(lambda: (trainer.status()["step"] or 0) >= 3)
    assert trainer.status()["lr_set_by"] == "schedule"
    scheduled = trainer.status()["lr"]
    assert scheduled == trainer.steps()[-1].lr
    assert trainer.set_lr(None, "0.0005") == 0.0005
    status = trainer.status()
    assert status["lr"] == 0.0005 and status["lr_set_by"] == "visitor"
    changed_at = trainer.steps()[-1].step
    wait_until(lambda: trainer.steps()[-1].step >= changed_at + 10)
    after = [event.lr for event in trainer.steps() if event.step > changed_at + 1]
    assert after and all(rate == 0.0005 for rate in after)  # one-cycle would have moved it
    trainer.stop()
    assert trainer.wait(60)
    (record,) = [event for event in control_records(tmp_path) if event.action == "learning rate"]
    assert record.lr == 0.0005


def test_a_learning_rate_chosen_mid_run_outlives_a_resume(tmp_path):
    control = RunControl()
    control.set_learning_rate(3e-4)
    first = Trainer(endless(epochs=2, steps_per_epoch=4, schedule="onecycle", out=str(tmp_path / "a")),
                    control=control).run()
    resumed = Trainer(endless(epochs=4, steps_per_epoch=4, schedule="onecycle", out=str(tmp_path / "b"),
                              resume=first.last_path)).run()
    rates = [step["lr"] for step in resumed.history["steps"] if step["step"] > first.steps]
    assert len(rates) == 8 and all(rate == 3e-4 for rate in rates), rates   # one-cycle would have moved it


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0, -1e-3, 2.0, "fast", None])
def test_absurd_learning_rates_are_refused_with_a_message(value):
    with pytest.raises(SettingsError, match="learning rate"):
        checked_learning_rate(value)


def test_one_step_is_refused_while_the_run_goes():
    with pytest.raises(SettingsError, match="Pause first"):
        RunControl().step()


def test_a_step_taken_while_paused_is_reported_and_stop_while_paused_validates_and_saves(tmp_path):
    control, events = RunControl(), []
    trainer = Trainer(endless(out=str(tmp_path), log_every=4), [events.append], control=control)
    thread = threading.Thread(target=lambda: events.append(trainer.run()))
    thread.start()
    wait_until(lambda: len(steps_of(events)) >= 2)
    control.pause()
    wait_until(lambda: any(isinstance(event, ControlApplied) for event in events))
    for _ in range(2):  # reported one by one, though the run reports every fourth step
        taken = trainer.progress.step
        control.step()
        wait_until(lambda taken=taken: steps_of(events)[-1].step == taken + 1)
    control.stop()
    thread.join(60)
    assert not thread.is_alive()
    result = events[-1]
    assert result.reason == "stopped" and result.last_metrics is not None
    assert checkpoints.read(tmp_path / "last.pt")["meta"]["steps"] == result.steps >= 3


def test_time_paused_does_not_count_against_the_time_limit_alone(tmp_path):
    control, events = RunControl(), []
    trainer = Trainer(endless(max_seconds=3.0), [events.append], control=control)
    thread = threading.Thread(target=lambda: events.append(trainer.run()))
    started = time.perf_counter()
    thread.start()
    wait_until(lambda: len(steps_of(events)) >= 3)
    control.pause()
    time.sleep(3.5)  # longer than the whole limit
    assert thread.is_alive(), "the pause counted against the time limit"
    control.resume()
    thread.join(60)
    result = events[-1]
    assert result.reason == "time limit" and time.perf_counter() - started > 6.0
    assert result.elapsed < 5.0  # training time: the pause is left out
    seconds = [event.elapsed for event in steps_of(events)]
    assert max(b - a for a, b in pairwise(seconds)) < 1.0, "the curves' time axis shows the pause"


def test_on_a_shared_trainer_a_paused_run_still_ends_at_its_time_limit(tmp_path):
    """Others wait for the trainer there: time paused counts, so a pause cannot hold the queue."""
    trainer = BackgroundTrainer(tmp_path, queue_length=2, time_cap=8.0)
    assert trainer.pauses_count
    trainer.start(endless(), owner="a")
    trainer.start(endless(), owner="b")  # waits
    wait_until(lambda: (trainer.status("a")["step"] or 0) >= 1)
    trainer.pause("a")
    paused = time.time()
    wait_until(lambda: trainer.status("b")["state"] == "running" and trainer.status("b")["yours"], timeout=60)
    first = trainer._last_of["a"]
    assert first.result.reason == "time limit" and first.result.elapsed < 8.0
    assert time.time() - paused < 8.0 + 20, "the paused run held the trainer far past its cap"
    trainer.stop("b")
    assert trainer.wait(60)


def test_only_the_owner_controls_a_run_on_a_shared_trainer(tmp_path):
    trainer = BackgroundTrainer(tmp_path, queue_length=2, time_cap=60)
    trainer.start(endless(), owner="a")
    trainer.start(endless(), owner="b")
    wait_until(lambda: (trainer.status("a")["step"] or 0) >= 1)
    for attempt in (lambda who: trainer.pause(who), lambda who: trainer.resume(who), lambda who: trainer.step(who),
                    lambda who: trainer.set_lr(who, 1e-3)):
        with pytest.raises(UserError, match="still waiting in the queue"):
            attempt("b")
        with pytest.raises(UserError, match="another visitor's"):
            attempt("c")
    assert not trainer.status("c")["paused"] and trainer.status("c")["lr_set_by"] == "schedule"
    trainer.pause("a")
    wait_until(lambda: trainer.status("c")["paused"])  # everyone sees that the run is paused
    trainer.stop("b")
    trainer.stop("a")
    assert trainer.wait(60)
    with pytest.raises(UserError, match="no run going"):
        trainer.pause("a")


def test_control_lines_from_the_app_are_parsed_and_bad_ones_change_nothing():
    control = RunControl()
    for line in ("", "jump", "lr", "lr nan", "lr 5", "lr abc", "step", "pause now", "\x00\xff"):
        apply_command(control, line)
    assert not control.paused and control.learning_rate is None and not control.stopped
    apply_command(control, " pause ")
    apply_command(control, "lr 0.003")
    assert control.paused and control.learning_rate == 0.003
    apply_command(control, "step")
    assert control.wait_to_step(0) == "one step" and control.wait_to_step(0) == "timeout"
    apply_command(control, "resume")
    assert control.wait_to_step(0) == "go"
    apply_command(control, "stop")
    assert control.stopped and control.wait_to_step(0) == "stop"
    for line in ("threads", "threads -1", "threads two", "threads 1.5"):
        apply_command(control, line)
    assert control.threads is None
    apply_command(control, "threads 1")
    assert control.threads == 1
    apply_command(control, "threads 0")  # as many as the run began with
    assert control.threads is None


def test_a_trainer_takes_a_stop_event_or_a_control_not_both():
    event = threading.Event()
    assert Trainer(endless(), stop_event=event).stop_event is event
    with pytest.raises(ValueError, match="not both"):
        Trainer(endless(), stop_event=event, control=RunControl())


def test_refused_controls_say_why_and_stop_still_works():
    control = RunControl()
    control.pause()
    control.refuse_changes("distributed under torchrun")
    assert not control.paused
    for attempt in (control.pause, control.step, lambda: control.set_learning_rate(0.01)):
        with pytest.raises(SettingsError, match="torchrun"):
            attempt()
    control.stop()
    assert control.stopped



def test_a_run_trains_on_the_threads_the_app_asks_for_from_its_next_step():
    import torch

    control, threads_at_step = RunControl(), []
    started_with = torch.get_num_threads()

    def listen(event):  # called by the training thread: its own torch thread count
        if isinstance(event, StepDone):
            threads_at_step.append(torch.get_num_threads())
            if event.step == 3:
                control.share_cores(1)
            elif event.step == 6:
                control.share_cores(None)
            elif event.step == 9:
                control.stop()

    Trainer(endless(threads=2), [listen], control=control).run()
    assert threads_at_step[:3] == [2, 2, 2] and threads_at_step[3:6] == [1, 1, 1] and threads_at_step[6:9] == [2, 2, 2]
    torch.set_num_threads(started_with)
    with pytest.raises(SettingsError):
        control.share_cores(0)


def test_requests_make_room_while_they_come_and_the_run_takes_its_cores_back_after(tmp_path, monkeypatch):
    from segdemo.engine import background

    monkeypatch.setattr(background, "ROOM_SECONDS", 0.5)
    trainer = BackgroundTrainer(tmp_path)
    trainer.make_room()  # no run: nothing to do
    trainer.start(endless())
    wait_until(lambda: (trainer.status()["step"] or 0) >= 1)
    control = trainer._current.control
    trainer.make_room()
    assert control.threads == 1
    deadline = time.time() + 1.0
    while time.time() < deadline:  # requests keep coming: the room stays
        trainer.make_room()
        time.sleep(0.1)
        assert control.threads == 1
    wait_until(lambda: control.threads is None, timeout=5)  # quiet for ROOM_SECONDS: all threads again
    trainer.stop()
    assert trainer.wait(60)
    pinned = BackgroundTrainer(tmp_path, cores={0})  # a run on cores of its own (public mode) needs no room
    pinned.start(endless())
    wait_until(lambda: (pinned.status()["step"] or 0) >= 1)
    pinned.make_room()
    assert pinned._current.control.threads is None
    pinned.stop()
    assert pinned.wait(60)
