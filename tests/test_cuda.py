"""The CUDA path: device and precision choice, training steps under autocast (bf16, fp16 with loss
scaling) in channels_last memory, a real run that learns, the inference fast path against the CPU,
and DistributedDataParallel over NCCL.

Each test that has a CPU counterpart runs on both devices from the same body, so the code these tests
drive is exercised on every machine; the ``cuda`` cases skip where there is no GPU (CI never has
one) and run on a GPU machine through ``bench/gpu_check.sh``.
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from apphelpers import ROOT, SHIPPED, free_port, two_rank_run
from segdemo import checkpoints
from segdemo.data import shapes
from segdemo.engine import PrecisionChosen, RunStarted, StepDone, TrainConfig, Trainer
from segdemo.engine.precision import TIMED_STEPS, WARMUP_STEPS, candidates, precision_name
from segdemo.engine.setup import build_setup
from segdemo.engine.steps import train_step
from segdemo.errors import SettingsError
from segdemo.inference import AGREEMENT_REQUIRED, TILE_ABOVE_PIXELS, fast_path_for, load_segmenter
from segdemo.runtime import autocast_dtype, resolve_device

HAS_CUDA = torch.cuda.is_available()
NO_GPU = "no CUDA GPU here (torch.cuda.is_available() is False); bench/gpu_check.sh runs these on a GPU machine"
needs_cuda = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason=NO_GPU)]
CUDA = pytest.param("cuda", marks=needs_cuda, id="cuda")
DEVICES = ["cpu", CUDA]
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
SHIPPED_MODELS = ("unet_shapes", "fcn_resnet18_shapes", "u2netp_shapes")


def tiny(**changes) -> TrainConfig:
    """A run that takes a second or two on a CPU (as in test_engine), on the device it is given; its
    head starts at zero (not at the class shares), so the loss has room to fall in a few steps."""
    base = TrainConfig(model="unet", model_options={"base_channels": 4, "depth": 2}, data="shapes",
                       data_options={"size": 32, "val_length": 8}, epochs=1, steps_per_epoch=4,
                       batch_size=4, lr=1e-2, val_images=8, prior_init=False)
    return base.replace(**changes)


def first_conv_weight(model: nn.Module) -> torch.Tensor:
    return next(module.weight for module in model.modules() if isinstance(module, nn.Conv2d))


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason=NO_GPU)
def test_auto_picks_the_gpu_and_its_fastest_exact_enough_precision():
    device = resolve_device("auto")
    assert device.type == "cuda"
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)  # torchrun's rank picks the GPU
    assert resolve_device("cuda:0", local_rank=3) == torch.device("cuda", 0)  # unless one is named
    assert autocast_dtype(device) == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    assert autocast_dtype(device, "fp16") == torch.float16 and autocast_dtype(device, "bf16") == torch.bfloat16
    assert autocast_dtype(device, "fp32") is None


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
def test_without_a_gpu_auto_is_the_cpu_and_cuda_or_fp16_are_refused():
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(SettingsError, match="no GPU is available"):
        resolve_device("cuda")
    with pytest.raises(SettingsError, match="fp16 needs a GPU"):
        autocast_dtype(torch.device("cpu"), "fp16")


def _cuda_precision(precision: str):
    marks = list(needs_cuda)
    if precision == "bf16" and HAS_CUDA and not torch.cuda.is_bf16_supported():
        marks.append(pytest.mark.skip(reason="this GPU has no bf16"))
    return pytest.param("cuda", precision, marks=marks, id=f"cuda-{precision}")


@pytest.mark.parametrize("device, precision", [
    ("cpu", "fp32"), ("cpu", "bf16"),
    _cuda_precision("fp32"), _cuda_precision("bf16"), _cuda_precision("fp16"),
])
def test_training_steps_under_autocast_in_channels_last_memory_fit_a_batch(device, precision):
    """The engine's own setup and step: weights stay fp32 on the device in channels_last memory, the
    forward runs in the autocast dtype, fp16 (and only fp16) scales the loss, and 30 steps on one
    batch drive its loss down (to about 0.58 of the start on the CPU)."""
    setup = build_setup(tiny(device=device, precision=precision, schedule="constant"))
    assert setup.device.type == device and setup.autocast_dtype == DTYPES[precision]
    assert (setup.scaler is not None) == (precision == "fp16")
    assert setup.channels_last and first_conv_weight(setup.model).is_contiguous(memory_format=torch.channels_last)
    assert all(p.device.type == device and p.dtype == torch.float32 for p in setup.model.parameters())
    images, target = next(iter(setup.loader(setup.train_set, shuffle=False, batch_size=4, epoch=0)))
    images, target = setup.prepare(images, target)
    assert images.device.type == device and images.is_contiguous(memory_format=torch.channels_last)
    before = first_conv_weight(setup.model).detach().clone()
    losses, logits = [], None
    for step in range(1, 31):
        loss, logits = train_step(setup, images, target, 3e-2, step)
        losses.append(loss)
    assert logits.dtype == (DTYPES[precision] or torch.float32) and logits.device.type == device
    assert all(np.isfinite(losses)) and np.mean(losses[-3:]) < 0.75 * np.mean(losses[:3]), losses
    assert not torch.equal(first_conv_weight(setup.model), before)  # the (scaled) steps were taken
    if setup.scaler is not None:
        assert setup.scaler.get_scale() > 0


@pytest.mark.parametrize("device, precision", [("cpu", "auto"), pytest.param("cuda", "auto", marks=needs_cuda,
                                                                            id="cuda-auto"),
                                               _cuda_precision("fp16")])
def test_a_run_on_the_device_learns_saves_loadable_weights_and_resumes(tmp_path, device, precision):
    """The real Trainer: the loss falls, the checkpoint written from device memory holds the trained
    weights and loads on the CPU, and a resume (optimizer and loss-scaler state read from
    that file) carries on on the device."""
    events = []
    config = tiny(device=device, precision=precision, steps_per_epoch=40, lr=3e-2, schedule="constant",
                  out=str(tmp_path / "a"))
    result = Trainer(config, [events.append]).run()
    started = next(e for e in events if isinstance(e, RunStarted))
    options = [precision_name(option) for option in candidates(torch.device(device), precision)]
    assert started.device.startswith(device) and started.channels_last
    assert started.precision == " or ".join(options)
    chosen = [e for e in events if isinstance(e, PrecisionChosen)]
    if len(options) > 1:  # auto with a choice: the first steps time each, the faster is kept
        assert len(chosen) == 1 and sorted(chosen[0].step_seconds) == sorted(options)
        assert chosen[0].precision == min(chosen[0].step_seconds, key=chosen[0].step_seconds.get)
        assert chosen[0].step == len(options) * (WARMUP_STEPS + TIMED_STEPS)
    else:
        assert not chosen
    losses = [e.loss for e in events if isinstance(e, StepDone)]
    assert result.reason == "finished" and len(losses) == 40
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses

    saved = checkpoints.read(result.last_path)["state_dict"]
    trained = result.model.state_dict()
    assert saved.keys() == trained.keys()
    assert all(saved[key].device.type == "cpu" and torch.equal(saved[key], trained[key].cpu()) for key in saved)
    on_cpu = load_segmenter(result.last_path, device="cpu", precision="fp32")
    assert on_cpu.predict(shapes.generate(1, 32, seed=5)[0][0]).probabilities.shape == (6, 32, 32)

    resumed = Trainer(config.replace(epochs=2, out=str(tmp_path / "b"), resume=result.last_path)).run()
    assert resumed.reason == "finished" and resumed.steps == 80
    assert np.isfinite([s["loss"] for s in resumed.history["steps"][40:]]).all()


@pytest.mark.parametrize("name", SHIPPED_MODELS)
@pytest.mark.parametrize("device", DEVICES)
def test_a_shipped_model_on_the_device_keeps_its_fast_path_and_agrees_with_the_cpu(device, name):
    """``load_segmenter`` on the device: the fast path (channels_last, folded batch norms, autocast
    where it ran the probe image faster) passes its own check against fp32 and is kept, and its label maps agree with plain
    fp32 on the CPU (allowing for bf16 rounding at a few boundary pixels)."""
    reference = load_segmenter(SHIPPED / f"{name}.pt", device="cpu", precision="fp32")
    segmenter = load_segmenter(SHIPPED / f"{name}.pt", device=device)
    assert segmenter.device.type == device
    images, _ = shapes.generate(3, 192, seed=11)
    for image in images:
        answer, expected = segmenter.predict(image), reference.predict(image)
        assert answer.probabilities.dtype == np.float32 and answer.probabilities.shape == expected.probabilities.shape
        assert (answer.labels() == expected.labels()).mean() >= 0.99
        assert np.abs(answer.probabilities - expected.probabilities).mean() < 0.01
    assert segmenter.agreement is not None and segmenter.agreement >= AGREEMENT_REQUIRED
    fast = fast_path_for(segmenter.device)  # kept, with its autocast or without it, whichever timed faster
    assert segmenter.path in (fast, dataclasses.replace(fast, autocast_dtype=None)), \
        f"fell back to {segmenter.path.describe()}"


@pytest.mark.parametrize("device", DEVICES)
def test_a_large_image_is_tiled_on_the_device_as_on_the_cpu(device):
    reference = load_segmenter(SHIPPED / "unet_shapes.pt", device="cpu", precision="fp32")
    segmenter = load_segmenter(SHIPPED / "unet_shapes.pt", device=device, precision="fast")
    image = shapes.generate(1, 1040, seed=2)[0][0]
    assert image.shape[0] * image.shape[1] > TILE_ABOVE_PIXELS
    answer, expected = segmenter.predict(image), reference.predict(image)
    assert answer.probabilities.shape == (6, 1040, 1040)
    assert (answer.labels() == expected.labels()).mean() >= 0.99


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_distributed_data_parallel_in_a_one_process_group_learns(tmp_path, device):
    """NCCL on a GPU (gloo on the CPU): the engine joins the group, wraps the model in DDP, and its
    stop flags, metric counts, mean loss and batch-norm buffers all cross the group; see
    tests/one_rank_worker.py for why one process."""
    record = tmp_path / "record.json"
    config = tiny(device=device, steps_per_epoch=40, lr=3e-2, schedule="constant", out=str(tmp_path / "run"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "one_rank_worker.py"), str(record),
                           json.dumps(config.to_dict())], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(record.read_text())
    assert outcome["backend"] == ("nccl" if device == "cuda" else "gloo")
    assert outcome["wrapped"] and outcome["device"].startswith(device) and outcome["group_left"]
    assert outcome["reason"] == "finished" and outcome["steps"] == 40 and outcome["mean_dice"] is not None
    losses = outcome["losses"]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert load_segmenter(outcome["best_path"], device="cpu").task == "multilabel"


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL across processes needs two GPUs (NCCL refuses "
                                                        "two ranks on one GPU)")
def test_two_gpus_over_nccl_end_with_identical_weights(tmp_path):
    two_rank_run(tmp_path, "cuda")
