import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from apphelpers import run_fresh, two_rank_run
from fakes import write_drive, write_folder, write_voc
from segdemo import checkpoints, limits, models
from segdemo.engine import (PRESETS, BackgroundTrainer, EpochDone, RunEnded, RunStarted, SnapshotTaken, StepDone,
                            TrainConfig, Trainer, configure, preset)
from segdemo.engine.config import CLASSIC_PRESETS, CLI_PRESET
from segdemo.engine.steps import lr_factor
from segdemo.errors import SettingsError, TrainerBusy
from segdemo.inference import load_segmenter
from segdemo.models import count_parameters, skeleton
from segdemo.train import build_parser, config_from_args


def meta_of(path) -> dict:
    return checkpoints.read(path)["meta"]

ROOT = Path(__file__).resolve().parent.parent


def tiny(**changes) -> TrainConfig:
    """A run that takes a second or two on a CPU."""
    base = TrainConfig(model="unet", model_options={"base_channels": 4, "depth": 2}, data="shapes",
                       data_options={"size": 32, "val_length": 8}, epochs=2, steps_per_epoch=4,
                       batch_size=4, lr=1e-2, val_images=8, prefetch=1)
    return base.replace(**changes)


def test_a_few_steps_make_the_loss_fall(tmp_path):
    events = []
    result = Trainer(tiny(epochs=1, steps_per_epoch=40, schedule="constant", out=str(tmp_path)),
                     [lambda e: events.append(e) if isinstance(e, StepDone) else None]).run()
    assert result.reason == "finished" and result.steps == 40
    # The head starts at the class shares, so the BCE half of the loss starts low: the Dice must rise.
    steps, dice = [e.loss for e in events], [e.dice or 0 for e in events]
    assert np.mean(steps[-5:]) < 0.85 * np.mean(steps[:5]) and np.mean(dice[-5:]) > np.mean(dice[:5]) + 0.05
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()
    meta = meta_of(tmp_path / "best.pt")
    assert meta["recipe"]["steps_per_epoch"] == 40
    assert len(meta["history"]["steps"]) == 40 and meta["metrics"]["mean_dice"] >= 0


def test_events_and_jsonl_log(tmp_path):
    events = []
    Trainer(tiny(out=str(tmp_path)), [events.append]).run()
    kinds = [e.kind for e in events]
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunEnded)
    assert kinds.count("step") == 8 and kinds.count("epoch") == 2 and "snapshot" in kinds
    epoch = next(e for e in events if isinstance(e, EpochDone))
    assert len(epoch.val["dice"]) == 6 and epoch.train_loss > 0
    snapshot = next(e for e in events if isinstance(e, SnapshotTaken))
    assert snapshot.image.shape == (32, 32, 3) and snapshot.image.dtype == np.uint8
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["type"] for line in lines] == kinds
    assert events[-1].images == 8 * 4 and events[-1].images_per_second > 0  # 8 steps of 4: what the CLI reports
    assert "image" not in next(line for line in lines if line["type"] == "snapshot")


def test_divergence_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import segdemo.engine.setup as setup

    real_build = setup.build_loss
    calls = {"n": 0}

    class NanAfterSix(torch.nn.Module):
        def __init__(self, loss):
            super().__init__()
            self.loss = loss

        def forward(self, outputs, target):
            calls["n"] += 1
            value = self.loss(outputs, target)
            return value * float("nan") if calls["n"] > 6 else value

    def nan_after_six(*args, **kwargs):
        return NanAfterSix(real_build(*args, **kwargs))

    monkeypatch.setattr(setup, "build_loss", nan_after_six)
    result = Trainer(tiny(epochs=3, out=str(tmp_path))).run()
    assert result.reason == "diverged"
    assert "diverged at step 7" in result.message and "learning rate" in result.message
    assert meta_of(tmp_path / "last.pt")["steps"] == 4  # from the end of epoch 1, before the NaN


def test_resume_continues_from_the_saved_step(tmp_path):
    first = Trainer(tiny(epochs=2, out=str(tmp_path / "a"))).run()
    assert first.steps == 8
    resumed = Trainer(tiny(epochs=4, out=str(tmp_path / "b"), resume=first.last_path)).run()
    assert resumed.steps == 16 and resumed.epochs == 4
    steps = [s["step"] for s in resumed.history["steps"]]
    assert steps[:8] == list(range(1, 9)) and steps[8:] == list(range(9, 17))
    assert resumed.elapsed > first.elapsed  # the clock carries on from the first part


@pytest.mark.parametrize("separate_process", [False, True], ids=["thread", "child process"])
def test_stop_is_quick_and_leaves_a_loadable_checkpoint(tmp_path, separate_process):
    trainer = BackgroundTrainer(tmp_path, separate_process=separate_process)
    run_id = trainer.start(tiny(epochs=200, steps_per_epoch=50))
    deadline = time.time() + 60
    while (trainer.status()["step"] or 0) < 3 and time.time() < deadline:
        time.sleep(0.05)
    assert trainer.status()["state"] == "running"
    with pytest.raises(TrainerBusy, match="already going"):
        trainer.start(tiny())
    pressed = time.time()
    assert trainer.stop() and trainer.stop()  # twice is harmless
    assert trainer.wait(30)
    assert time.time() - pressed < 10
    status = trainer.status()
    assert status["state"] == "stopped" and status["run_id"] == run_id
    assert meta_of(status["checkpoint"])["steps"] >= 3
    assert not trainer.stop()  # nothing to stop now
    assert len(trainer.steps()) >= 3 and len(trainer.epochs()) >= 1


@pytest.mark.parametrize("separate_process", [False, True], ids=["thread", "child process"])
def test_exiting_python_mid_run_stops_it_cleanly_and_keeps_its_checkpoint(tmp_path, separate_process):
    """Ctrl-C on the app while a run goes: the process exits normally (no abort from a daemon
    thread inside torch) and the run's checkpoint is saved (by the child, when the run has one)."""
    script = f"""
import time
from segdemo.engine import BackgroundTrainer, TrainConfig
trainer = BackgroundTrainer({str(tmp_path)!r}, separate_process={separate_process})
trainer.start(TrainConfig(model="unet", model_options={{"base_channels": 4, "depth": 2}}, data="shapes",
                          data_options={{"size": 32, "val_length": 8}}, epochs=1000, steps_per_epoch=50,
                          batch_size=4, val_images=8))
while (trainer.status()["step"] or 0) < 2:
    time.sleep(0.05)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = tmp_path.iterdir()
    assert checkpoints.read(run / "last.pt")["meta"]["steps"] >= 2


def test_bad_settings_are_refused_once_where_they_are_given(tmp_path):
    """A TrainConfig is checked when it is made, whichever way it is made, so no run starts with one."""
    for bad, message in ((dict(epochs=0), "epochs"), (dict(lr=-1.0), "learning rate"), (dict(batch_size=0), "batch"),
                         (dict(data_options={"size": 100000}), "image size")):
        with pytest.raises(SettingsError, match=message):
            tiny(**bad)
        with pytest.raises(SettingsError, match=message):
            configure(tiny(), **{k: v for k, v in bad.items() if k != "data_options"},
                      image_size=bad.get("data_options", {}).get("size"))
    with pytest.raises(SettingsError, match="unknown model"):
        configure(tiny(), model="resnet9000")
    with pytest.raises(SettingsError, match="inference only"):
        configure(tiny(), model="lraspp_mobilenet_v3_large_voc")
    with pytest.raises(SettingsError, match="no option width"):
        configure(tiny(), model_options={"width": 3})
    with pytest.raises(SettingsError, match="shapes"):
        configure(tiny(), data="folder:x", image_size=64)


def test_a_loss_is_refused_by_name_and_by_the_datas_task_before_anything_trains(tmp_path):
    with pytest.raises(SettingsError, match="loss must be one of"):
        tiny(loss="hinge")
    with pytest.raises(SettingsError, match="suits multiclass data, and this data is multilabel"):
        configure(tiny(), loss="ce_dice")  # the shapes are multi-label
    with pytest.raises(SettingsError, match="suits multiclass data"):
        Trainer(tiny(loss="ce", out=str(tmp_path))).run()
    assert not (tmp_path / "last.pt").exists()


def test_the_step_loop_tells_the_loss_how_far_the_run_is(tmp_path, monkeypatch):
    """The boundary term's weight follows the run's progress (losses.set_progress before each step)."""
    from segdemo.engine import setup

    built = []
    real = setup.build_loss
    monkeypatch.setattr(setup, "build_loss", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    weights = []
    listener = lambda event: weights.append(built[0].loss.current_weight) if isinstance(event, StepDone) else None
    result = Trainer(tiny(loss="dice+boundary", epochs=1, steps_per_epoch=5, out=str(tmp_path)), [listener]).run()
    assert result.reason == "finished" and len(weights) == 5
    boundary = built[0].loss
    assert weights == pytest.approx([boundary.start_weight + (boundary.weight - boundary.start_weight) * step / 5
                                     for step in range(5)])


@pytest.mark.parametrize("block", ["plain", "residual", "dense"])
def test_each_unet_block_and_no_skips_train_and_load_from_their_checkpoint(tmp_path, block):
    options = {"base_channels": 4, "depth": 2, "block": block, "skips": block != "plain"}
    result = Trainer(tiny(model_options=options, epochs=1, steps_per_epoch=3, out=str(tmp_path))).run()
    assert result.reason == "finished"
    segmenter = load_segmenter(result.best_path)
    assert segmenter.meta["model"]["options"] == options
    assert segmenter.feature_shapes(32, 32)[-2]["stage"] == ("decoder 0 (up + skip)" if options["skips"]
                                                             else "decoder 0 (up)")


def test_the_command_line_sets_the_unet_block_and_skips():
    config = config_from_args(build_parser().parse_args(["--block", "dense", "--skips", "off", "--loss", "focal"]))
    assert config.model_options["block"] == "dense" and config.model_options["skips"] is False
    assert config.loss == "focal"
    # A recipe that says residual: True (its checkpoint's spelling) takes another block from the flag
    recipe = str(ROOT / "train" / "unet_shapes.json")
    plain = config_from_args(build_parser().parse_args(["--config", recipe, "--block", "plain"]))
    assert plain.model_options["block"] == "plain" and "residual" not in plain.model_options
    assert config_from_args(build_parser().parse_args(["--config", recipe])).model_options["residual"] is True


def test_configure_gives_each_setting_one_meaning():
    live = preset("live")
    other = configure(live, model="u2netp")
    assert other.model_options == {}, "another model starts from its own defaults"
    wider = configure(live, model_options={"base_channels": 16})
    assert wider.model_options == {**live.model_options, "base_channels": 16}
    assert configure(live, crop_size=0).crop_size is None and configure(live, max_seconds=0).max_seconds is None
    assert configure(live, image_size=128).data_options["size"] == 128
    on_files = configure(configure(live, image_size=128), data="folder:somewhere", crop_size=64)
    assert on_files.data_options == {} and on_files.crop_size == 64


@pytest.mark.parametrize("separate_process", [False, True], ids=["thread", "child process"])
def test_background_run_that_fails_in_setup_is_reported(tmp_path, separate_process):
    trainer = BackgroundTrainer(tmp_path, separate_process=separate_process)
    trainer.start(tiny(data=f"folder:{tmp_path / 'missing'}", data_options={}))
    assert trainer.wait(60)
    status = trainer.status()
    assert status["state"] == "failed" and status["message"].endswith("does not exist")


def test_a_warmed_trainer_runs_in_its_spare_child_and_keeps_one_ready(tmp_path):
    """The app starts a child ahead of the first Start (torch already imported there); a run takes
    the spare, and the next spare starts when the run ends (none is held while a run trains);
    closing the trainer ends the spare."""
    trainer = BackgroundTrainer(tmp_path, separate_process=True)
    trainer.warm()
    first_spare = trainer._spare
    trainer.start(tiny(epochs=1000, steps_per_epoch=50))
    wait_for_steps = time.time() + 60
    while not trainer.steps() and time.time() < wait_for_steps:
        time.sleep(0.05)
    assert trainer.steps(), "the run did not train"
    assert first_spare.alive(), "the run trains in the spare"
    assert trainer._spare is None, "no second child is held while a run trains"
    trainer.stop()
    assert trainer.wait(60) and trainer.status()["state"] == "stopped"
    next_spare = trainer._spare
    assert next_spare is not None and next_spare is not first_spare and next_spare.alive()
    trainer.close()
    deadline = time.time() + 15
    while next_spare.alive() and time.time() < deadline:
        time.sleep(0.1)
    assert not next_spare.alive()


def test_a_run_in_a_child_process_that_outgrows_its_memory_budget_is_ended_and_says_why(tmp_path, monkeypatch):
    """The watchdog: a budget far below what the child needs (torch alone is a few hundred MB)
    ends the run, and the app process lives on to say so."""
    monkeypatch.setenv("SEGDEMO_MEMORY_SHARE", str(32 * 2**20 / limits.usable_memory()))
    limits.configure(public=False)
    try:
        trainer = BackgroundTrainer(tmp_path, separate_process=True)
        trainer.start(tiny(epochs=1000, steps_per_epoch=50))
        assert trainer.wait(60)
    finally:
        monkeypatch.delenv("SEGDEMO_MEMORY_SHARE")
        limits.configure(public=False)
    status = trainer.status()
    assert status["state"] == "failed", status
    assert re.search(r"memory grew past the budget of 32 MB \(to \d+ MB\)", status["message"]), status["message"]


def test_run_messages_explain_allocation_failures_without_allocator_text():
    from segdemo.errors import OUT_OF_MEMORY, failure_message

    raw = RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 4294967296 bytes")
    assert failure_message(raw) == OUT_OF_MEMORY and "alloc" not in OUT_OF_MEMORY.replace("allocat", "")
    assert failure_message(MemoryError()) == OUT_OF_MEMORY
    assert failure_message(SettingsError("batch too big")) == "batch too big"


def test_learning_rate_schedules():
    config = TrainConfig(epochs=10, warmup_fraction=0.1, step_every_epochs=5, step_gamma=0.1)
    assert lr_factor("constant", 0.7, config) == 1.0
    assert lr_factor("step", 0.45, config) == 1.0 and lr_factor("step", 0.55, config) == pytest.approx(0.1)
    assert lr_factor("onecycle", 0.0, config) == pytest.approx(1 / 25)
    assert lr_factor("onecycle", 0.1, config) == pytest.approx(1.0)
    assert lr_factor("onecycle", 1.0, config) == pytest.approx(1e-4)
    assert lr_factor("cosine", 1.0, config) == pytest.approx(0.0, abs=1e-9)


def test_presets_are_valid():
    live = preset("live")
    assert live.validate() is live and live.data == "shapes"
    assert preset("live", epochs=3).epochs == 3
    with pytest.raises(ValueError, match="unknown preset"):
        preset("turbo")


def parameters(config: TrainConfig) -> int:
    """``config``'s model's parameters for the shapes' six classes, counted on the meta device."""
    return count_parameters(skeleton(config.model, 3, 6, **config.model_options))


def test_the_command_line_trains_a_small_model_unless_a_classic_width_is_named():
    default = config_from_args(build_parser().parse_args([]))
    assert default == preset(CLI_PRESET) and default.model_options == preset("live").model_options
    assert parameters(default) < 1_000_000 and default.max_seconds is None and default.epochs <= 5
    assert parameters(preset("tutorial")) == pytest.approx(7.8e6, rel=0.01)   # the tutorials' U-Net
    assert parameters(preset("original")) == pytest.approx(31.0e6, rel=0.01)  # the paper's widths
    assert set(CLASSIC_PRESETS) <= set(PRESETS)
    assert "hours on 2 CPU cores" in build_parser().format_help()
    wider = config_from_args(build_parser().parse_args(["--base-channels", "16"]))
    assert wider.model_options == {**default.model_options, "base_channels": 16}
    other = config_from_args(build_parser().parse_args(["--model", "u2netp"]))
    assert other.model_options == {} and other.crop_size == default.crop_size  # its own defaults, the run's


def test_a_resume_alone_continues_the_run_its_checkpoint_recorded(tmp_path):
    first = Trainer(tiny(epochs=1, out=str(tmp_path))).run()
    config = config_from_args(build_parser().parse_args(["--resume", first.last_path, "--epochs", "2"]))
    assert config.model_options == tiny().model_options and config.data_options == tiny().data_options
    assert config.resume == first.last_path and config.epochs == 2 and config.out == str(tmp_path)
    result = Trainer(config).run()
    assert result.reason == "finished" and result.steps == 8


@pytest.mark.parametrize("writer, spec, options", [
    (write_drive, "drive", {}),
    (write_voc, "voc", {}),
    (write_folder, "folder", {}),
])
def test_training_runs_on_every_file_source(tmp_path, writer, spec, options):
    root = writer(tmp_path / spec)
    result = Trainer(TrainConfig(model="unet", model_options={"base_channels": 4, "depth": 2}, data=f"{spec}:{root}",
                                 epochs=1, steps_per_epoch=2, batch_size=2, crop_size=32, val_images=2,
                                 out=str(tmp_path / "out"))).run()
    assert result.reason == "finished" and result.last_metrics is not None
    assert meta_of(result.last_path)["task"] == {"drive": "binary", "voc": "multiclass", "folder": "multiclass"}[spec]


def test_an_epoch_longer_than_one_pass_over_a_small_dataset_trains_all_its_steps(tmp_path):
    root = write_drive(tmp_path / "drive")  # 3 training images: one batch of 2 per pass
    steps: list[StepDone] = []
    config = TrainConfig(model="unet", model_options={"base_channels": 4, "depth": 2}, data=f"drive:{root}",
                         epochs=2, steps_per_epoch=5, batch_size=2, crop_size=32, val_images=2, lr=1e-2)
    result = Trainer(config, [lambda e: steps.append(e) if isinstance(e, StepDone) else None]).run()
    assert result.reason == "finished" and result.steps == 10 and len(steps) == 10
    lrs = [event.lr for event in steps]
    assert max(lrs) == pytest.approx(1e-2, rel=0.2) and lrs[-1] < 1e-3  # the schedule ran its whole course


def test_fine_tuning_needs_the_same_classes(tmp_path):
    first = Trainer(tiny(epochs=1, out=str(tmp_path / "a"))).run()
    tuned = Trainer(tiny(epochs=1, init_from=first.best_path, out=str(tmp_path / "b"))).run()
    assert tuned.reason == "finished"
    folder = write_folder(tmp_path / "mine")
    with pytest.raises(ValueError, match="same"):
        Trainer(tiny(data=f"folder:{folder}", data_options={}, init_from=first.best_path)).run()


def run_cli(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "run"
    done = run_cli("segdemo.train", "--model", "unet", "--base-channels", "4", "--depth", "2", "--image-size", "32",
                   "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "4", "--val-images", "4",
                   "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "val mean Dice" in done.stderr
    assert {p.name for p in out.iterdir()} >= {"best.pt", "last.pt", "log.jsonl"}
    predicted = run_cli("segdemo.predict", str(out / "best.pt"), str(ROOT / "tests"), "--out", str(tmp_path / "p"))
    # tests/ has no images: nothing to do, and no error
    assert predicted.returncode == 0, predicted.stderr
    from segdemo.data import shapes
    from PIL import Image
    images, _ = shapes.generate(2, size=48, seed=0)
    for index, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"img{index}.png")
    predicted = run_cli("segdemo.predict", str(out / "best.pt"), str(tmp_path / "img0.png"), str(tmp_path / "img1.png"),
                        "--out", str(tmp_path / "p"))
    assert predicted.returncode == 0, predicted.stderr
    mask = Image.open(tmp_path / "p" / "img0_mask.png")
    assert mask.mode == "P" and mask.size == (48, 48)
    assert Image.open(tmp_path / "p" / "img1_overlay.png").size == (48, 48)


def test_cli_help_and_bad_settings():
    helped = run_cli("segdemo.train", "--help")
    assert helped.returncode == 0
    for option in ("--model", "--data", "--epochs", "--batch-size", "--lr", "--crop-size", "--image-size", "--out", "--resume",
                   "--device", "--preset", "--max-seconds"):
        assert option in helped.stdout
    bad = run_cli("segdemo.train", "--epochs", "0")
    assert bad.returncode == 2 and "epochs must be between" in bad.stderr
    assert run_cli("segdemo.predict", "--help").returncode == 0


def test_importing_the_engine_does_not_load_gradio():
    # segdemo.engine loads its modules on first use: name them, so that they are imported here
    run_fresh("import sys, segdemo.engine.loop, segdemo.engine.background, segdemo.train, segdemo.inference; "
              "assert 'gradio' not in sys.modules, 'gradio imported'")


@pytest.mark.slow
def test_two_process_gloo_run_ends_with_identical_weights(tmp_path):
    run = two_rank_run(tmp_path, "cpu", OMP_NUM_THREADS="1")
    assert (run / "best.pt").exists()  # written by rank 0 only


def test_fine_tuning_a_multilabel_model_on_an_annotation_dataset(tmp_path):
    """The annotate → train loop: index masks with a background class fine-tune the shapes model."""
    from segdemo.annotations import CLASS_PRESETS, DatasetStore
    from segdemo.data import shapes

    first = Trainer(tiny(epochs=1, out=str(tmp_path / "a"))).run()
    store = DatasetStore(tmp_path / "datasets")
    store.create("mine", CLASS_PRESETS["shapes"])
    images, masks = shapes.generate(3, 48, seed=1)
    for index, (image, mask) in enumerate(zip(images, masks)):
        labels = np.zeros(mask.shape[1:], dtype=np.uint8)
        for channel in range(6):
            labels[mask[channel] == 1] = channel + 1
        store.save("mine", f"item-{index}", image, labels)
    tuned = Trainer(tiny(data=f"folder:{store.dataset_path('mine')}", data_options={}, crop_size=32,
                         init_from=first.best_path, epochs=1, out=str(tmp_path / "b"))).run()
    assert tuned.reason == "finished"
    segmenter = load_segmenter(tuned.best_path)
    assert segmenter.task == "multilabel" and segmenter.classes == shapes.CLASSES
    assert segmenter.meta["normalization"] == meta_of(first.best_path)["normalization"]


def test_auto_precision_keeps_what_its_timed_first_steps_found_faster(monkeypatch):
    """The trial hands out each candidate in turn, ignores each one's warm-up step and keeps the
    lower median; under torchrun the ranks' medians are averaged first, so all choose alike."""
    from segdemo.engine import precision

    def run(seconds: dict, agree=None):
        trial = precision.PrecisionTrial([None, torch.bfloat16], agree=agree)
        handed = []
        while not trial.decided:
            dtype = trial.next()
            handed.append(dtype)
            warm_up = handed.count(dtype) <= precision.WARMUP_STEPS
            trial.record(10.0 if warm_up else seconds[dtype])  # a slow first step must not count
        return trial, handed

    trial, handed = run({None: 0.15, torch.bfloat16: 0.10})
    assert handed == [None, torch.bfloat16] * (precision.WARMUP_STEPS + precision.TIMED_STEPS)
    assert trial.choice == torch.bfloat16 and trial.medians == {"fp32": 0.15, "bfloat16": 0.10}
    assert trial.next() == torch.bfloat16  # kept from now on
    trial, _ = run({None: 0.08, torch.bfloat16: 0.10})
    assert trial.choice is None  # fp32 faster (a small model on a GPU)
    trial, _ = run({None: 0.08, torch.bfloat16: 0.10}, agree=lambda medians: [medians[0] + 1, medians[1]])
    assert trial.choice == torch.bfloat16  # the other rank's fp32 was slow: the mean decides

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.candidates(cpu, "auto") == [None]  # emulated bf16: nothing worth timing
    assert precision.PrecisionTrial([None]).decided
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.candidates(cpu, "auto") == [None, torch.bfloat16]
    assert precision.candidates(cpu, "bf16") == [torch.bfloat16] and precision.candidates(cpu, "fp32") == [None]


def test_a_fresh_model_starts_from_its_classes_pixel_shares():
    """Prior initialisation: an untrained U-Net's head predicts each class's share of the pixels
    (sigmoid outputs at their log-odds, a softmax at their logarithms); fine-tuned models and models
    without a ``head`` are left alone."""
    from segdemo.engine.setup import build_setup, class_shares
    from segdemo.models.common import start_from_class_shares
    from segdemo.tasks import MULTICLASS, MULTILABEL

    config = TrainConfig(model="unet", model_options={"base_channels": 4, "depth": 2}, data="shapes",
                         data_options={"size": 32, "val_length": 4}, epochs=1, steps_per_epoch=2, batch_size=2)
    setup = build_setup(config)
    shares = class_shares(setup.train_set, setup.info)
    targets = torch.stack([setup.train_set[i][1] for i in range(16)]).double()
    assert torch.allclose(shares, targets.mean(dim=(0, 2, 3)))
    with torch.no_grad():
        probabilities = setup.model.eval()(torch.zeros(1, 3, 32, 32)).sigmoid()
    assert probabilities.max() < 0.2  # where the old head said 0.5 everywhere
    assert not build_setup(config.replace(prior_init=False)).model.head.bias.abs().max() > 1

    model = models.create("unet", 3, 3, base_channels=4, depth=1)
    assert start_from_class_shares(model, torch.tensor([0.7, 0.2, 0.1]), MULTICLASS)
    assert torch.allclose(model.head.bias.softmax(0), torch.tensor([0.7, 0.2, 0.1]))
    assert start_from_class_shares(model, torch.tensor([0.5, 0.0, 1.0]), MULTILABEL)
    assert model.head.bias[0] == 0 and model.head.bias[1] < -9 and model.head.bias[2] > 9  # 0 and 1 clamped
    assert not start_from_class_shares(models.create("fcn_resnet18", 3, 3, width=8), torch.ones(3) / 3, MULTICLASS)
