"""The small pieces a run is made of: the learning rate, one step, one epoch, an evaluation, a snapshot.

Each takes the run's :class:`~segdemo.engine.setup.TrainingSetup` (and :class:`~.setup.Progress`,
where it moves the counters) and does one job, in the manner of torchvision's reference
``train_one_epoch`` and ``evaluate``; :class:`~segdemo.engine.loop.Trainer` strings them together.
They are the seams that probes, pausing and live learning-rate changes hook into.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from .. import viz
from ..files import json_safe
from ..losses import set_progress
from ..metrics import SegmentationMetrics
from ..prediction import Prediction
from ..runtime import DeviceClock
from ..tasks import probabilities_from_logits
from .config import TrainConfig
from .events import Listener, PrecisionChosen, SnapshotTaken, StepDone
from .precision import precision_name
from .setup import Progress, TrainingSetup


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def lr_factor(schedule: str, progress: float, config: TrainConfig) -> float:
    """Learning-rate multiplier at ``progress`` (0 → 1) through the run.

    Schedules follow progress, not a step count, so that a run limited by ``max_seconds`` still
    anneals: progress is the larger of the step fraction and the time fraction.
    """
    progress = min(max(progress, 0.0), 1.0)
    warmup = config.warmup_fraction
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        epoch = progress * config.epochs
        return config.step_gamma ** int(epoch // config.step_every_epochs)
    if schedule == "cosine":
        if warmup > 0 and progress < warmup:
            return progress / warmup
        return 0.5 * (1 + math.cos(math.pi * (progress - warmup) / max(1e-8, 1 - warmup)))
    # one-cycle (Smith): cosine up from lr/25 to lr, then cosine down to lr/10⁴
    start, end = 1 / 25, 1 / 1e4
    if warmup > 0 and progress < warmup:
        return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * progress / warmup))
    phase = (progress - warmup) / max(1e-8, 1 - warmup)
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * phase))


def run_fraction(setup: TrainingSetup, progress: Progress) -> float:
    """How far the run is, 0 → 1: the step fraction, or the time fraction when a time limit comes
    first. The learning-rate schedule and the losses' progress hook both follow it."""
    fraction = progress.step / setup.total_steps
    if setup.config.max_seconds:
        fraction = max(fraction, progress.time_counted() / setup.config.max_seconds)
    return min(fraction, 1.0)


def learning_rate(setup: TrainingSetup, progress: Progress) -> float:
    """The learning rate of the next step: the peak rate scaled by the schedule at the run's
    progress (:func:`run_fraction`), unless a person chose one mid-run (:mod:`.control`): that one
    stays, the schedule set aside."""
    if progress.chosen_lr is not None:
        return progress.chosen_lr
    config = setup.config
    return config.lr * lr_factor(config.schedule, run_fraction(setup, progress), config)


def train_step(setup: TrainingSetup, images: torch.Tensor, target: torch.Tensor, lr: float,
               step: int) -> tuple[float, torch.Tensor]:
    """One optimizer step at learning rate ``lr`` on a prepared batch; returns the loss and the
    (main) output logits. Raises :class:`TrainingDiverged` when the loss is not finite (before the
    weights change, so the last good state is kept); ``step`` is its number, for that message."""
    for group in setup.optimizer.param_groups:
        group["lr"] = lr
    with setup.autocast():
        outputs = setup.trained(images)
        loss = setup.loss_fn(outputs, target)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingDiverged(f"the loss diverged at step {step} ({value}); lower the learning rate "
                               f"(now {setup.config.lr:g}) or turn gradient clipping on")
    setup.optimizer.zero_grad(set_to_none=True)
    scaler = setup.scaler
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(setup.optimizer)
    else:
        loss.backward()
    if setup.config.grad_clip:
        torch.nn.utils.clip_grad_norm_(setup.model.parameters(), setup.config.grad_clip)
    if scaler is not None:
        scaler.step(setup.optimizer)
        scaler.update()
    else:
        setup.optimizer.step()
    main = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    return value, main.detach()


def timed_trial_step(setup: TrainingSetup, trial, images: torch.Tensor, target: torch.Tensor, lr: float,
                     step: int) -> tuple[float, torch.Tensor]:
    """:func:`train_step` in the precision ``trial`` (a :class:`~.precision.PrecisionTrial`) hands
    out, timed for it; once it has decided, the run keeps its choice."""
    setup.autocast_dtype = trial.next()
    clock = DeviceClock(setup.device)
    clock.start()
    result = train_step(setup, images, target, lr, step)
    trial.record(clock.stop())
    setup.autocast_dtype = trial.next()
    return result


@dataclass
class EpochOutcome:
    losses: list[float]          # one per step taken
    stop_reason: tuple[str, str] | None = None   # (reason, message) when a stop or time limit cut it short
    images: int = 0              # images trained on, all ranks together
    seconds: float = 0.0         # wall time of the steps and their data (no validation)

    @property
    def complete(self) -> bool:
        return self.stop_reason is None


def epoch_batches(setup: TrainingSetup, epoch: int) -> Iterator:
    """The ``setup.steps_per_epoch`` training batches of epoch ``epoch``: passes over the training
    set, each reshuffled, as many as those steps take. A run may ask for more steps per epoch than
    one pass holds (DRIVE's 20 images in batches of 8, a class's 10 annotated images): its epoch, and
    the learning-rate schedule that counts on it, then has all of them."""
    shuffle = not hasattr(setup.train_set, "set_epoch")  # the shapes stream is drawn fresh anyway
    left, repeat = setup.steps_per_epoch, 0
    while left > 0:
        served = 0
        for batch in setup.loader(setup.train_set, shuffle=shuffle, batch_size=setup.config.batch_size,
                                  epoch=epoch, repeat=repeat):
            yield batch
            served += 1
            left -= 1
            if left == 0:
                return
        if served == 0:  # nothing to draw from (cannot happen once the run is planned): end the epoch
            return
        repeat += 1


def train_one_epoch(setup: TrainingSetup, progress: Progress, emit: Listener,
                    should_stop: Callable[[], tuple[str, str] | None],
                    after_step: Callable[[Progress, Listener], None] | None = None) -> EpochOutcome:
    """Train ``setup.steps_per_epoch`` steps (fewer when ``should_stop``, asked before each step,
    gives a reason; it also holds the run while it is paused), emitting a :class:`~.events.StepDone`
    every ``log_every`` steps, and for every step taken one at a time while paused; then
    ``after_step(progress, emit)`` after each (the probes: :class:`~.probes.Probes`). Time paused is
    left out of the speeds and of ``seconds``."""
    config = setup.config
    batch_metrics = SegmentationMetrics(setup.info.task, setup.info.num_classes, roc=False)
    outcome = EpochOutcome([])
    started = window_start = time.perf_counter()
    paused_before = window_paused = progress.seconds_paused()
    window_images = 0
    for images, target in Prefetcher(epoch_batches(setup, progress.epoch), config.prefetch):
        outcome.stop_reason = should_stop()
        if outcome.stop_reason is not None:
            break
        images, target = setup.prepare(images, target)
        lr = learning_rate(setup, progress)
        set_progress(setup.loss_fn, run_fraction(setup, progress))  # losses that follow the run (boundary weight)
        trial = setup.precision_trial
        if trial is None:
            loss, logits = train_step(setup, images, target, lr, progress.step + 1)
        else:
            loss, logits = timed_trial_step(setup, trial, images, target, lr, progress.step + 1)
        progress.step += 1
        if trial is not None and trial.decided:
            setup.precision_trial = None
            emit(PrecisionChosen(step=progress.step, precision=precision_name(trial.choice),
                                 step_seconds=trial.medians, elapsed=progress.elapsed()))
        outcome.losses.append(loss)
        outcome.images += len(images) * setup.context.world_size
        window_images += len(images) * setup.context.world_size
        if progress.step % config.log_every == 0 or progress.one_step:
            now, paused = time.perf_counter(), progress.seconds_paused()
            speed = window_images / max(now - window_start - (paused - window_paused), 1e-9)
            window_start, window_paused, window_images = now, paused, 0
            batch_metrics.reset()
            batch_metrics.update(logits, target)
            event = StepDone(step=progress.step, epoch=progress.epoch + len(outcome.losses) / setup.steps_per_epoch,
                             loss=loss, dice=json_safe(batch_metrics.compute()["mean_dice"]), lr=lr,
                             images_per_second=speed, total_steps=setup.total_steps, elapsed=progress.elapsed())
            progress.history["steps"].append({"step": event.step, "epoch": event.epoch, "loss": loss,
                                              "dice": event.dice, "lr": lr, "images_per_second": speed,
                                              "elapsed": event.elapsed})
            emit(event)
        if after_step is not None:
            after_step(progress, emit)
    outcome.seconds = time.perf_counter() - started - (progress.seconds_paused() - paused_before)
    return outcome


def tiles(height: int, width: int, side: int):
    """``(rows, columns)`` slices that cover an ``height × width`` image in tiles of at most
    ``side`` pixels a side (one tile, the whole image, when it is that small)."""
    for top in range(0, height, side):
        for left in range(0, width, side):
            yield slice(top, top + side), slice(left, left + side)


@torch.inference_mode()
def evaluate(setup: TrainingSetup) -> dict:
    """Metrics over the validation set (counts summed across ranks), per class and mean.

    Images larger than ``setup.val_tile`` a side are evaluated tile by tile, so that one huge
    image cannot take more memory than the run was allowed (:mod:`.budget`); the counts of the
    tiles add up to the image's. A tile's edge sees less context than the whole image would."""
    setup.model.eval()
    try:
        metrics = SegmentationMetrics(setup.info.task, setup.info.num_classes)
        for images, target in setup.loader(setup.val_set, shuffle=False, batch_size=setup.val_batch_size, epoch=0,
                                           shard=False):
            for rows, columns in tiles(*images.shape[-2:], setup.val_tile):
                tile_images, tile_target = setup.prepare(images[..., rows, columns], target[..., rows, columns])
                with setup.autocast():
                    logits = setup.model(tile_images)
                metrics.update(logits.float(), tile_target)
        if setup.context.enabled:
            metrics.load_state(setup.context.all_reduce_sum(metrics.state()))
        return metrics.compute()
    finally:
        setup.model.train()


@torch.inference_mode()
def snapshot(setup: TrainingSetup, progress: Progress) -> SnapshotTaken:
    """The model's current prediction on a fixed validation image, drawn as the app draws any."""
    setup.model.eval()
    try:
        image, target = setup.snapshot_item
        images, _ = setup.prepare(image[None], target[None])
        with setup.autocast():
            logits = setup.model(images).float()
        info = setup.info
        prediction = Prediction(probabilities_from_logits(logits, info.task)[0].cpu().numpy(), info.task,
                                info.classes, info.colors, model=setup.model_name)
        picture = viz.overlay(image.permute(1, 2, 0).numpy(), prediction)
        return SnapshotTaken(epoch=progress.epoch, step=progress.step, image=picture, elapsed=progress.elapsed())
    finally:
        setup.model.train()


class Prefetcher:
    """Iterates a DataLoader in a background thread, ``depth`` batches ahead, so generating
    data never stalls a training step. Errors in the thread surface in the consumer."""

    _END = object()

    def __init__(self, loader, depth: int):
        self.loader = loader
        self.depth = depth

    def __iter__(self):
        if self.depth <= 0:
            yield from self.loader
            return
        items: queue.Queue = queue.Queue(maxsize=self.depth)
        cancelled = threading.Event()

        def produce():
            # One torch thread here: a second OpenMP team would fight the training step's team
            # for the same cores (measured: 25 % slower steps on 2 cores).
            torch.set_num_threads(1)
            try:
                for batch in self.loader:
                    while not cancelled.is_set():
                        try:
                            items.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if cancelled.is_set():
                        return
                items.put(self._END)
            except BaseException as error:  # handed to the consumer, re-raised there
                items.put(error)

        worker = threading.Thread(target=produce, name="segdemo-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = items.get()
                if item is self._END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancelled.set()
            worker.join(timeout=10)
