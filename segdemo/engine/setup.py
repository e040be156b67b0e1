"""Everything a training run builds from its configuration before the first step.

:func:`build_setup` turns a :class:`~segdemo.engine.config.TrainConfig` (and the data source, when the
caller has opened it already, as the app does to report a broken upload at once) into one
:class:`TrainingSetup`: device and precision, the torchrun context, the datasets, the model (new or
fine-tuned), the loss and the optimizer. The pieces that train (:mod:`.steps`) and save
(:mod:`.checkpointing`) take that object, as torchvision's reference ``train_one_epoch`` takes a
model, an optimizer and loaders built elsewhere. :class:`Progress` holds what changes as the run
goes: the counters, the clock and the best result so far (what a resume restores).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler

from .. import checkpoints
from ..data import DatasetInfo, DataSource, open_source
from ..data.adapt import AdaptedTargets, target_adapter
from ..losses import build_loss
from ..models import create
from ..models.common import start_from_class_shares
from ..tasks import IGNORE_INDEX, MULTICLASS
from ..runtime import normalize, resolve_device
from .budget import VAL_TILE, plan_run
from .config import TrainConfig
from .distributed import DistributedContext
from .precision import PrecisionTrial, candidates

log = logging.getLogger(__name__)


@dataclass
class TrainingSetup:
    """The objects one run trains with, built once by :func:`build_setup`."""

    config: TrainConfig
    device: torch.device
    context: DistributedContext
    autocast_dtype: torch.dtype | None   # None: fp32; while ``precision_trial`` runs, the next step's
    scaler: torch.amp.GradScaler | None  # fp16 only
    channels_last: bool
    source: DataSource
    info: DatasetInfo                    # the labels the model learns: the source's, or a fine-tuned model's
    normalization: dict
    train_set: Any
    val_set: Any                         # this rank's share of the validation images
    snapshot_item: tuple                 # (image, target) of the picture shown in snapshots
    steps_per_epoch: int
    model: nn.Module
    trained: nn.Module                   # ``model``, or its DistributedDataParallel wrapper
    model_name: str
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    val_batch_size: int = 1              # validation images per forward (the shapes: the batch size)
    val_tile: int = VAL_TILE             # validation images larger than this a side go tile by tile
    precision_trial: PrecisionTrial | None = None   # ``auto``: times the first steps in each candidate

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    def autocast(self):
        """The autocast context of this run's precision (disabled for fp32)."""
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def prepare(self, images: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of uint8 images and targets as the network's input, on the device."""
        images = normalize(images.to(self.device, non_blocking=True), self.normalization)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, target.to(self.device, non_blocking=True)

    def loader(self, dataset, *, shuffle: bool, batch_size: int, epoch: int, shard: bool = True,
               repeat: int = 0) -> DataLoader:
        """A DataLoader over ``dataset``; under torchrun each rank gets its own shard (unless
        ``shard`` is False: validation sets are sharded once, up front). ``repeat`` counts the
        passes over it within one epoch; each is shuffled differently."""
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        sampler = None
        if self.context.enabled and shard:
            sampler = DistributedSampler(dataset, num_replicas=self.context.world_size, rank=self.context.rank,
                                         shuffle=shuffle, seed=self.config.seed, drop_last=True)
            sampler.set_epoch(epoch + 1_000_003 * repeat)
            shuffle = False
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch + 1_000_003 * repeat)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                          drop_last=shuffle or sampler is not None, generator=generator, num_workers=0)


@dataclass
class Progress:
    """What changes as a run goes: counters, the clock, the best result, the curves."""

    step: int = 0
    epoch: int = 0
    best_score: float = -math.inf
    best_metrics: dict | None = None
    last_metrics: dict | None = None
    best_path: str | None = None
    last_path: str | None = None
    history: dict = field(default_factory=lambda: {"steps": [], "epochs": []})
    seconds_before_resume: float = 0.0
    validation_seconds: float = 0.0       # how long the last validation took (time limits allow for it)
    images: int = 0                       # trained on by this process's run, all ranks (not resumed)
    step_seconds: float = 0.0             # the wall time those images took (no validation, no saving)
    started: float = field(default_factory=time.perf_counter)
    paused_seconds: float = 0.0           # time held by pauses that have ended (not training time)
    paused_since: float | None = None     # when the pause going now began
    pauses_count: bool = False            # pauses count against max_seconds (a shared trainer: see .control)
    chosen_lr: float | None = None        # a learning rate set mid-run: the schedule is set aside
    one_step: bool = False                # the step about to be taken is a single step while paused

    def images_per_second(self) -> float | None:
        """Training throughput of this process's run, all ranks together (None before a step)."""
        return self.images / self.step_seconds if self.images else None

    def elapsed(self) -> float:
        """Training time so far, including the time before a resume (the checkpoint's
        ``train_seconds`` and the curves' seconds count the whole run), not the time paused."""
        return time.perf_counter() - self.started + self.seconds_before_resume - self.seconds_paused()

    def seconds_paused(self) -> float:
        """Time held by pauses so far, the one going now included."""
        going = time.perf_counter() - self.paused_since if self.paused_since is not None else 0.0
        return self.paused_seconds + going

    def time_counted(self) -> float:
        """The seconds that count against ``max_seconds`` (and the schedule's time fraction):
        training time, plus the time paused where pauses count."""
        return self.elapsed() + (self.seconds_paused() if self.pauses_count else 0.0)


def build_setup(config: TrainConfig, source: DataSource | None = None) -> TrainingSetup:
    """Build a run's objects from ``config``; ``source`` is ``config.data`` opened already, if the
    caller has it (nothing is opened twice). Raises a :class:`~segdemo.errors.UserError` for data or
    settings that cannot train."""
    if config.threads:
        torch.set_num_threads(config.threads)
    context = DistributedContext.from_env(resolve_device(config.device).type)
    device = resolve_device(config.device, context.local_rank if context.enabled else None)
    torch.manual_seed(config.seed + context.rank)
    np.random.seed((config.seed + context.rank) % 2**32)
    trial = PrecisionTrial(candidates(device, config.precision), agree=context.mean_of_ranks)

    source = source or open_source(config.data, **config.data_options)
    info, normalization = source.info, source.normalization
    initial = checkpoints.read(config.init_from) if config.init_from else None
    convert = None
    if initial is not None:  # fine-tuning: the model's labels and normalization rule
        convert, info = target_adapter(source.info, initial["meta"])
        normalization = initial["meta"].get("normalization") or normalization
    train_set = source.train_dataset(crop_size=config.crop_size, seed=config.seed)
    val_set = source.val_dataset()
    if convert is not None:
        train_set, val_set = AdaptedTargets(train_set, convert), AdaptedTargets(val_set, convert)
    if config.val_images is not None and config.val_images < len(val_set):
        val_set = Subset(val_set, range(config.val_images))
    # Refuse what cannot fit or train before anything is built; a batch larger than the data shrinks.
    plan = plan_run(config, source, train_length=None if hasattr(train_set, "length") else len(train_set),
                    initial_meta=initial["meta"] if initial is not None else None, world_size=context.world_size)
    for note in plan.notes:
        log.warning("%s", note)
    config = plan.config
    steps_per_epoch = config.steps_per_epoch or max(1, len(train_set) // (config.batch_size * context.world_size))
    needed = steps_per_epoch * config.batch_size * context.world_size
    if hasattr(train_set, "length") and train_set.length < needed:
        train_set.length = needed  # the endless shapes stream: as many as an epoch takes

    if initial is not None:
        model = checkpoints.build_model(initial["meta"], initial["state_dict"], Path(config.init_from).name)
        model_name = initial["meta"]["model"]["name"]
    else:
        model = create(config.model, 3, info.num_classes, **config.model_options)
        model_name = config.model
        if config.prior_init:
            start_from_class_shares(model, class_shares(train_set, info), info.task)
    model = model.to(device)
    channels_last = device.type in ("cpu", "cuda") if config.channels_last is None else config.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    trained = model
    if context.enabled:
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = build_loss(info.task, config.loss, bce_weight=config.bce_weight,
                         dice_weight=config.dice_weight).to(device)
    return TrainingSetup(
        config=config, device=device, context=context, autocast_dtype=trial.next(),
        scaler=torch.amp.GradScaler("cuda") if trial.next() == torch.float16 else None, channels_last=channels_last,
        source=source, info=info, normalization=normalization, train_set=train_set,
        # Each rank validates its own share; the metric counts are summed afterwards.
        val_set=Subset(val_set, range(context.rank, len(val_set), context.world_size)),
        snapshot_item=centre(*val_set[0], plan.cost.val_tile), steps_per_epoch=steps_per_epoch, model=model,
        trained=trained, model_name=model_name, loss_fn=loss_fn, optimizer=build_optimizer(model, config),
        val_batch_size=plan.cost.val_batch, val_tile=plan.cost.val_tile,
        precision_trial=None if trial.decided else trial)


def class_shares(dataset, info: DatasetInfo, items: int = 16) -> torch.Tensor:
    """Each class's share of the labelled pixels of the first ``items`` items of ``dataset``
    ``(C,)`` (what a fresh model's head starts from: :func:`~segdemo.models.common.start_from_class_shares`)."""
    counts = torch.zeros(info.num_classes, dtype=torch.float64)
    labelled = 0
    for index in range(min(items, len(dataset))):
        target = dataset[index][1]
        valid = target != IGNORE_INDEX
        if info.task == MULTICLASS:
            counts += torch.bincount(target[valid].long(), minlength=info.num_classes)[:info.num_classes].double()
            labelled += int(valid.sum())
        else:  # (C, H, W) of 0/1: every pixel is labelled for each class
            counts += (target.double() * valid).sum(dim=(1, 2))
            labelled += int(valid[0].sum())
    return counts / max(labelled, 1)


def centre(image: torch.Tensor, target: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The centre of an ``(image (3, H, W), target)`` pair, at most ``side`` pixels a side (the
    prediction snapshot of a huge validation image shows its middle at full resolution)."""
    height, width = image.shape[-2:]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return (image[..., top:top + side, left:left + side].clone(),
            target[..., top:top + side, left:left + side].clone())


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer; biases and norm weights (1-D parameters) get no weight decay."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.AdamW(groups, lr=config.lr)
