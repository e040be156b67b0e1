"""One training loop for every model and data source.

:class:`Trainer` runs a :class:`~segdemo.engine.config.TrainConfig`: it builds the data, the model,
the optimizer and the learning-rate schedule, trains with optional mixed precision and
``channels_last``, validates on whole images, saves the best and the last checkpoint atomically,
and reports everything as events (:mod:`segdemo.engine.events`). It never prints.

Stopping: a ``threading.Event`` is checked before every step, so a stop takes effect within one
step; the run then validates what it has learned and saves it, so a stopped run always leaves a
usable checkpoint (a stop during a validation takes effect when that bounded validation ends).
A loss that turns NaN/inf ends the run with a clear message and keeps the last good checkpoint.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler

from .. import checkpoints, viz
from ..data import open_source
from ..data.adapt import AdaptedTargets, target_adapter
from ..files import json_safe
from ..inference import cpu_has_native_bf16
from ..losses import build_loss
from ..metrics import SegmentationMetrics
from ..models import count_parameters, create
from ..tasks import MULTICLASS
from .config import TrainConfig
from .distributed import DistributedContext
from .events import JsonlLog, Listener

log = logging.getLogger(__name__)

HISTORY_STEPS_KEPT = 2000


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    reason: str                      # finished, stopped, time limit, diverged
    message: str
    steps: int
    epochs: int
    elapsed: float
    best_metrics: dict | None
    last_metrics: dict | None
    best_path: str | None = None
    last_path: str | None = None
    history: dict = field(default_factory=dict)
    model: torch.nn.Module | None = None
    meta: dict | None = None


def resolve_device(name: str, context: DistributedContext) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no GPU is available")
        if context.enabled:
            device = torch.device("cuda", context.local_rank)
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training, or None for fp32.

    ``auto`` takes bf16 (or fp16 where bf16 is missing) on CUDA, bf16 on CPUs with native bf16,
    and fp32 elsewhere: on CPUs without it bf16 is emulated and measured many times slower.
    """
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("fp16 training needs a GPU; use bf16 or fp32 on the CPU")
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None


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


class Trainer:
    """Runs one training run. ``listeners`` receive events; ``stop_event`` ends the run early."""

    def __init__(self, config: TrainConfig, listeners: list[Listener] | None = None,
                 stop_event: threading.Event | None = None):
        self.config = config.validate()
        self.listeners = list(listeners or [])
        self.stop_event = stop_event or threading.Event()
        self.start_time = time.perf_counter()
        self.seconds_before_resume = 0.0

    # --- events ------------------------------------------------------------------------------------
    def emit(self, event: dict) -> None:
        if not self.context.is_main:
            return
        event.setdefault("elapsed", self.elapsed())
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a broken listener (a closed page) must not end training
                log.exception("a training listener failed")

    def elapsed(self) -> float:
        """Training time so far, including the time before a resume (time limits and the
        checkpoint's ``train_seconds`` count the whole run)."""
        return time.perf_counter() - self.start_time + self.seconds_before_resume

    # --- set-up ------------------------------------------------------------------------------------
    def _setup(self) -> None:
        config = self.config
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = resolve_device(config.device, DistributedContext())
        self.context = DistributedContext.from_env(self.device.type)
        self.device = resolve_device(config.device, self.context)
        torch.manual_seed(config.seed + self.context.rank)
        np.random.seed((config.seed + self.context.rank) % 2**32)
        self.autocast_dtype = resolve_precision(config.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None

        self.source = open_source(config.data, **config.data_options)
        self.info = self.source.info
        self.normalization = self.source.normalization
        self.initial = checkpoints.read(config.init_from) if config.init_from else None
        convert = None
        if self.initial is not None:  # fine-tuning: the model's labels and normalization rule
            convert, self.info = target_adapter(self.source.info, self.initial["meta"])
            self.normalization = self.initial["meta"].get("normalization") or self.normalization
        self.train_set = self.source.train_dataset(crop_size=config.crop_size, seed=config.seed)
        val_set = self.source.val_dataset()
        if convert is not None:
            self.train_set, val_set = AdaptedTargets(self.train_set, convert), AdaptedTargets(val_set, convert)
        if config.val_images is not None and config.val_images < len(val_set):
            val_set = Subset(val_set, range(config.val_images))
        # Each rank validates its own share; the metric counts are summed afterwards.
        self.val_set = Subset(val_set, range(self.context.rank, len(val_set), self.context.world_size))
        self.snapshot_item = val_set[0]

        self.steps_per_epoch = config.steps_per_epoch or max(
            1, len(self.train_set) // (config.batch_size * self.context.world_size))
        needed = self.steps_per_epoch * config.batch_size * self.context.world_size
        if hasattr(self.train_set, "length") and self.train_set.length < needed:
            self.train_set.length = needed  # the endless shapes stream: as many as an epoch takes

        self.model = self._build_model().to(self.device)
        self.channels_last = self.device.type in ("cpu", "cuda") if config.channels_last is None else config.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.trained = self.model
        if self.context.enabled:
            self.trained = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.loss_fn = build_loss(self.info.task, config.loss, bce_weight=config.bce_weight,
                                  dice_weight=config.dice_weight).to(self.device)
        self.optimizer = self._build_optimizer()
        self.mean = torch.tensor(self.normalization["mean"], device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(self.normalization["std"], device=self.device).view(1, -1, 1, 1)

        self.step = 0
        self.epoch = 0
        self.best_score = -math.inf
        self.best_metrics = None
        self.last_metrics = None
        self.history = {"steps": [], "epochs": []}
        self.out = Path(config.out) if config.out else None
        self.best_path = self.last_path = None
        if config.resume:
            self._resume(config.resume)
        if self.out is not None and self.context.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.listeners.append(JsonlLog(self.out / "log.jsonl"))

    def _build_model(self):
        config = self.config
        if self.initial is not None:
            meta = self.initial["meta"]
            model = checkpoints.build_model(meta, self.initial["state_dict"], Path(config.init_from).name)
            self.model_name = meta["model"]["name"]
            return model
        self.model_name = config.model
        return create(config.model, 3, self.info.num_classes, **config.model_options)

    def _build_optimizer(self):
        config = self.config
        decay, no_decay = [], []
        for name, parameter in self.model.named_parameters():
            if parameter.requires_grad:
                (no_decay if parameter.ndim <= 1 else decay).append(parameter)
        groups = [{"params": decay, "weight_decay": config.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        if config.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
        if config.optimizer == "adam":
            return torch.optim.Adam(groups, lr=config.lr)
        return torch.optim.AdamW(groups, lr=config.lr)

    def _resume(self, path: str) -> None:
        payload = checkpoints.read(path)
        state = payload.get("train_state")
        if state is None:
            raise ValueError(f"{Path(path).name} holds no training state to resume (use init_from to fine-tune)")
        self.model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                    for k, v in payload["state_dict"].items()})
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.best_score = float(state.get("best_score", -math.inf))
        self.history = payload["meta"].get("history") or self.history
        self.best_metrics = payload["meta"].get("best_metrics")
        self.seconds_before_resume = float(payload["meta"].get("train_seconds") or 0.0)

    def _loader(self, dataset, *, shuffle: bool, batch_size: int, epoch: int, shard: bool = True):
        """A DataLoader over ``dataset``; under torchrun each rank gets its own shard (unless
        ``shard`` is False: validation sets are sharded once, up front)."""
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        sampler = None
        if self.context.enabled and shard:
            sampler = DistributedSampler(dataset, num_replicas=self.context.world_size, rank=self.context.rank,
                                         shuffle=shuffle, seed=self.config.seed, drop_last=True)
            sampler.set_epoch(epoch)
            shuffle = False
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                          drop_last=shuffle or sampler is not None, generator=generator, num_workers=0)

    # --- steps -----------------------------------------------------------------------------------
    def _prepare(self, images: torch.Tensor, target: torch.Tensor):
        images = images.to(self.device, non_blocking=True).float()
        images = (images / 255.0 - self.mean) / self.std
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, target.to(self.device, non_blocking=True)

    def _autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _train_step(self, images, target, batch_metrics: SegmentationMetrics) -> tuple[float, float]:
        progress = self.step / (self.config.epochs * self.steps_per_epoch)
        if self.config.max_seconds:
            progress = max(progress, self.elapsed() / self.config.max_seconds)
        lr = self.config.lr * lr_factor(self.config.schedule, progress, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self._autocast():
            outputs = self.trained(images)
            loss = self.loss_fn(outputs, target)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(f"the loss diverged at step {self.step + 1} ({value}); lower the learning "
                                   f"rate (now {self.config.lr:g}) or turn gradient clipping on")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        batch_metrics.reset()
        fused = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        batch_metrics.update(fused.detach(), target)
        self.step += 1
        return value, lr

    @torch.inference_mode()
    def validate(self) -> dict:
        """Metrics over the validation set (summed across ranks), and a snapshot picture."""
        self.model.eval()
        try:
            metrics = SegmentationMetrics(self.info.task, self.info.num_classes)
            batch_size = self.config.batch_size if self.source.fixed_size else 1
            loader = self._loader(self.val_set, shuffle=False, batch_size=batch_size, epoch=0, shard=False)
            for images, target in loader:
                images, target = self._prepare(images, target)
                with self._autocast():
                    logits = self.model(images)
                metrics.update(logits.float(), target)
            if self.context.enabled:
                metrics.load_state(self.context.all_reduce_sum(metrics.state()))
            return metrics.compute()
        finally:
            self.model.train()

    @torch.inference_mode()
    def snapshot(self) -> dict:
        """The model's current prediction on a fixed validation image, as pictures."""
        self.model.eval()
        try:
            image, target = self.snapshot_item
            images, _ = self._prepare(image[None], target[None])
            with self._autocast():
                logits = self.model(images).float()
            probabilities = (logits.softmax(1) if self.info.task == MULTICLASS else torch.sigmoid(logits))[0]
            picture = image.permute(1, 2, 0).numpy()
            prediction = viz.overlay(picture, probabilities.cpu().numpy(), self.info.task, self.info.colors)
            return {"type": "snapshot", "epoch": self.epoch, "step": self.step, "image": prediction}
        finally:
            self.model.train()

    # --- checkpoints -------------------------------------------------------------------------------
    def _meta(self, metrics: dict | None) -> dict:
        config = self.config
        return checkpoints.build_meta(
            self.model, task=self.info.task, classes=self.info.classes, colors=self.info.colors,
            normalization=self.normalization, title=config.title, recipe=config.to_dict(),
            data=self.source.describe(), metrics=json_safe(metrics), best_metrics=json_safe(self.best_metrics),
            history=self._history_for_checkpoint(), steps=self.step, epochs=self.epoch,
            train_seconds=round(self.elapsed(), 1),
        )

    def _history_for_checkpoint(self) -> dict:
        steps = self.history["steps"]
        if len(steps) > HISTORY_STEPS_KEPT:
            steps = steps[:: math.ceil(len(steps) / HISTORY_STEPS_KEPT)]
        return {"steps": steps, "epochs": self.history["epochs"]}

    def _save(self, metrics: dict | None) -> None:
        if self.out is None or not self.context.is_main:
            return
        meta = self._meta(metrics)
        state = {"optimizer": self.optimizer.state_dict(), "step": self.step, "epoch": self.epoch,
                 "best_score": self.best_score, "scaler": self.scaler.state_dict() if self.scaler else None}
        self.last_path = str(checkpoints.save(self.out / "last.pt", self.model, meta, train_state=state,
                                              half=self.config.half_checkpoint))
        self.emit({"type": "checkpoint", "kind": "last", "path": self.last_path, "step": self.step})
        score = (metrics or {}).get("mean_dice")
        if score is not None and math.isfinite(score) and score >= self.best_score:
            self.best_score = score
            self.best_metrics = metrics
            meta["best_metrics"] = json_safe(metrics)
            self.best_path = str(checkpoints.save(self.out / "best.pt", self.model, meta,
                                                  half=self.config.half_checkpoint))
            self.emit({"type": "checkpoint", "kind": "best", "path": self.best_path, "step": self.step})

    def _end_of_epoch(self, train_losses: list[float], partial: bool) -> dict:
        """Validate, snapshot and save; returns the validation metrics.

        Validation is not interrupted by a stop (it is bounded by ``val_images``): a stop pressed
        meanwhile ends the run right after it, with what was learned validated and saved."""
        self.context.sync_buffers(self.model)
        started = time.perf_counter()
        self.emit({"type": "validate", "epoch": self.epoch, "step": self.step})
        metrics = self.validate()
        self.validation_seconds = time.perf_counter() - started
        train_loss = self.context.mean(float(np.mean(train_losses)) if train_losses else float("nan"), self.device)
        self.last_metrics = metrics
        event = {"type": "epoch", "epoch": self.epoch, "step": self.step, "train_loss": train_loss,
                 "val": json_safe(metrics), "partial_epoch": partial, "elapsed": self.elapsed(),
                 "validation_seconds": self.validation_seconds}
        self.history["epochs"].append({k: v for k, v in event.items() if k != "type"})
        self.emit(event)
        if self.epoch % self.config.snapshot_every == 0 or partial:
            if self.context.is_main:
                self.emit(self.snapshot())
        self._save(metrics)
        return metrics

    def _stop_reason(self) -> tuple[str, str] | None:
        """Whether to stop before the next step; under torchrun all ranks decide together."""
        stopped = self.stop_event.is_set()
        timed_out = bool(self.config.max_seconds) and \
            self.elapsed() + self.validation_seconds >= self.config.max_seconds
        if self.context.enabled:
            flags = torch.tensor([float(stopped), float(timed_out)], dtype=torch.float64)
            self.context.all_reduce_sum(flags)
            stopped, timed_out = bool(flags[0] > 0), bool(flags[1] > 0)
        if stopped:
            return "stopped", f"stopped at step {self.step}"
        if timed_out:
            return "time limit", f"reached the {self.config.max_seconds:g} s limit at step {self.step}"
        return None

    # --- the run ---------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train; returns how it ended. Raises only for bad settings or data (before training)."""
        self._setup()
        config = self.config
        self.validation_seconds = 0.0
        self.emit({"type": "start", "config": config.to_dict(), "model": self.model_name,
                   "parameters": count_parameters(self.model), "data": self.source.describe(),
                   "steps_per_epoch": self.steps_per_epoch, "total_steps": config.epochs * self.steps_per_epoch,
                   "device": str(self.device), "precision": str(self.autocast_dtype or "fp32").replace("torch.", ""),
                   "channels_last": self.channels_last, "world_size": self.context.world_size,
                   "resumed_at_step": self.step})
        reason, message = "finished", f"trained {config.epochs} epochs"
        batch_metrics = SegmentationMetrics(self.info.task, self.info.num_classes, roc=False)
        self.model.train()
        try:
            while self.epoch < config.epochs:
                train_losses: list[float] = []
                window_start, window_images = time.perf_counter(), 0
                loader = self._loader(self.train_set, shuffle=not hasattr(self.train_set, "set_epoch"),
                                      batch_size=config.batch_size, epoch=self.epoch)
                steps_this_epoch = 0
                for images, target in Prefetcher(loader, config.prefetch):
                    if steps_this_epoch >= self.steps_per_epoch:
                        break
                    stop = self._stop_reason()
                    if stop is not None:
                        reason, message = stop
                        break
                    images, target = self._prepare(images, target)
                    loss, lr = self._train_step(images, target, batch_metrics)
                    steps_this_epoch += 1
                    train_losses.append(loss)
                    window_images += len(images) * self.context.world_size
                    if self.step % config.log_every == 0:
                        now = time.perf_counter()
                        speed = window_images / max(now - window_start, 1e-9)
                        window_start, window_images = now, 0
                        dice = batch_metrics.compute()["mean_dice"]
                        record = {"step": self.step, "epoch": self.epoch + steps_this_epoch / self.steps_per_epoch,
                                  "loss": loss, "dice": dice, "lr": lr, "images_per_second": speed,
                                  "elapsed": self.elapsed()}
                        self.history["steps"].append(json_safe(record))
                        self.emit({"type": "step", **record,
                                   "total_steps": config.epochs * self.steps_per_epoch})
                if reason != "finished":
                    if train_losses:  # learned something since the last save: keep it
                        self.epoch += 1 if steps_this_epoch >= self.steps_per_epoch else 0
                        self._end_of_epoch(train_losses, partial=True)
                    break
                self.epoch += 1
                if self.epoch % config.val_every == 0 or self.epoch == config.epochs:
                    self._end_of_epoch(train_losses, partial=False)
        except TrainingDiverged as error:
            reason, message = "diverged", str(error)
            self.emit({"type": "error", "message": message, "step": self.step})
        self.context.sync_buffers(self.model)
        result = TrainResult(reason=reason, message=message, steps=self.step, epochs=self.epoch,
                             elapsed=self.elapsed(), best_metrics=json_safe(self.best_metrics),
                             last_metrics=json_safe(self.last_metrics), best_path=self.best_path,
                             last_path=self.last_path, history=self.history, model=self.model,
                             meta=self._meta(self.last_metrics))
        self.emit({"type": "end", "reason": reason, "message": message, "steps": self.step, "epochs": self.epoch,
                   "best_metrics": result.best_metrics, "last_metrics": result.last_metrics,
                   "best_path": self.best_path, "last_path": self.last_path})
        for listener in self.listeners:
            if isinstance(listener, JsonlLog):
                listener.close()
        self.context.close()
        return result
