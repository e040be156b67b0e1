"""What a training run will need, known before it starts: memory, and whether it can train at all.

Every way a run starts (the CLI, the Train tab, the API, the library's :class:`~.loop.Trainer`)
goes through :func:`plan_run`, which refuses with a :class:`~segdemo.errors.SettingsError` that
says what would work instead:

- a loss that does not suit the data's task (cross-entropy for binary data: :func:`segdemo.loss_names.check_loss`);
- more classes than a label map holds (:data:`segdemo.tasks.MAX_LABELS`);
- a training set smaller than one batch (the batch is reduced to the set's size, with a note:
  a handful of annotations is a normal first dataset);
- a model of more parameters than :attr:`segdemo.limits.Limits.model_parameters` (counted on the
  meta device, before anything else is traced);
- a batch and crop so small that a BatchNorm layer would see one value per channel;
- a run whose estimated peak memory is over :func:`segdemo.limits.memory_budget`: the message
  names the size and what fits ("U-Net width 64, batch 512 at 192 px (whole images: they are
  smaller than the crop) needs about 59 GB, more than the 14 GB one run may use on this server;
  at most batch 108 at 192 px fits here").

How the memory is estimated (:func:`estimate_run_memory`, a :class:`RunCost` by part):

- **activations**: one training step (forward, loss, backward) and one validation forward of
  the model's :func:`~segdemo.models.skeleton` are run on the ``meta`` device, where tensors have
  shapes but no data, so nothing is allocated; :func:`segdemo.models.cost.measure_peak` (the
  meter :func:`segdemo.models.estimate` uses too) follows every tensor's storage from its
  creation to its release and keeps the peak of the live bytes (:func:`_activation_bytes`, the
  one function to swap for another estimator). The model is traced in the run's autocast dtype.
  A step's activations grow with the batch and the pixels; suggestions for other sizes scale the
  traced numbers by the pixel count.
- **weights and optimizer**: parameters in fp32, their autocast copies, gradients and the
  optimizer's state (AdamW: two more copies), counted from the parameter count.
- **data**: the batch as it is prepared (uint8, normalized float, channels-last copy), what the
  data source keeps (the shapes' generated blocks, DRIVE's decoded images), an image file being
  decoded (whole until cropped: up to 64 MP, about 1.1 GB; a file's size is not known before it
  is read) and what validation metrics need.

Validation is bounded too: images larger than :attr:`RunCost.val_tile` pixels a side are
evaluated tile by tile (metrics are sums of counts, so tiles add up), and the prediction
snapshot is the centre of the first validation image, at most a tile large.

How close it is: ``tests/test_resources_training.py::test_the_estimate_is_close_to_a_measured_run``
runs two real steps and a validation in a fresh process and compares the growth of its peak
resident memory with the estimate. On this project's 2-core Xeon (bf16 autocast) the estimate was
0.74× the measured growth for U-Net width 16, batch 16 at 192 px (581 vs 782 MB), 0.99× for U-Net
width 32 depth 4, batch 8 at 256 px (1098 vs 1114 MB) and 0.87× for U²-NetP, batch 4 at 128 px
(290 vs 332 MB); measured once by hand, 0.88× for the first in fp32, 1.03× for FCN-ResNet18 batch 16
at 256 px and 1.02× for U-Net width 64, batch 24 at 192 px (3.0 GB). The test holds it between
0.6× and 1.6×. What the trace cannot see (allocator slack, oneDNN's scratch and reordered
weights) makes it low rather than high; the budget's share of the memory leaves room for that.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .. import limits
from ..errors import SettingsError, UserError
from ..limits import size_text
from ..loss_names import check_loss
from ..tasks import MAX_LABELS

if TYPE_CHECKING:
    from ..data import DataSource, DatasetInfo
# TrainConfig (segdemo.engine.config) is named in annotations only: config imports this module to
# plan the runs it configures.

log = logging.getLogger(__name__)

VAL_TILE = 1024              # validation images wider or taller than this are evaluated in tiles
VAL_TILES = (1024, 768, 512, 384, 256)   # smaller tiles, tried in turn when a large one does not fit
SUGGESTED_CROPS = (2048, 1536, 1024, 768, 512, 384, 256, 192, 128, 96, 64, 48, 32)
OPTIMIZER_COPIES = {"adam": 2, "adamw": 2, "sgd": 1}   # state tensors per parameter


@dataclass(frozen=True)
class ModelSpec:
    """The network a run trains: a registry name, its options, its input and output channels."""

    name: str
    options: dict = field(default_factory=dict)
    in_channels: int = 3
    num_classes: int = 1
    task: str = "multilabel"

    @property
    def described(self) -> str:
        """How a person names it: "U-Net width 64", "u2netp"."""
        if self.name == "unet":
            return f"U-Net width {self.options.get('base_channels', 64)}"
        return self.name


@dataclass(frozen=True)
class Activations:
    """Traced activation memory: ``fixed + batch × per_image`` bytes at one input size."""

    per_image: int
    fixed: int = 0
    batch_norm_values: int | None = None   # fewest values per channel a BatchNorm sees, per image


@dataclass(frozen=True)
class RunCost:
    """A run's estimated peak memory in bytes, by part, for ``batch_size`` images of ``crop``
    pixels (H, W) and validation on ``val_batch`` images of at most ``val_size``."""

    spec: ModelSpec
    batch_size: int
    crop: tuple[int, int]
    val_batch: int
    val_size: tuple[int, int]
    val_tile: int
    parameters: int
    weights: int          # fp32 parameters and buffers, and their autocast copies
    optimizer: int        # gradients and the optimizer's state
    step: int             # one training step's activations (forward, loss, backward)
    validation: int       # one validation forward (no gradients) with its metrics
    data: int             # the prepared batch and what the data source keeps
    device: str = "cpu"   # where weights and activations live

    @property
    def model_bytes(self) -> int:
        """What lives on the run's device: weights, optimizer, the larger of a step and a validation."""
        return self.weights + self.optimizer + max(self.step, self.validation)

    @property
    def total(self) -> int:
        return self.model_bytes + self.data


@dataclass(frozen=True)
class RunPlan:
    """What :func:`plan_run` decided: the config to run (its batch fitted to the data), its
    estimated cost, and notes for the person who started it."""

    config: TrainConfig
    cost: RunCost
    notes: tuple[str, ...] = ()


# --- activation memory, traced on the meta device ------------------------------------------------------
def _activation_bytes(spec: ModelSpec, *, batch: int, size: tuple[int, int], dtype_name: str,
                      training: bool, loss: str = "auto") -> Activations:
    """Activation memory of ``spec`` on ``batch`` images of ``size``: a training step (forward,
    loss, backward) when ``training``, else a forward without gradients. Allocates nothing.

    This is the estimator's one model-specific function: another that gives the same numbers
    (e.g. a per-model table) can replace it.
    """
    try:
        return _trace(spec.name, _frozen(spec.options), spec.in_channels, spec.num_classes, spec.task,
                      batch, tuple(size), dtype_name, training, loss)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001  (a model that cannot run on this size: say so, log the rest)
        log.warning("tracing %s on %d×%s failed", spec, batch, size, exc_info=True)
        raise SettingsError(f"{spec.described} cannot {'train' if training else 'run'} on images of "
                            f"{_px(size)} ({type(error).__name__}; the server log has the details)") from None


def _frozen(options: dict) -> tuple:
    """``options`` as a hashable key (lists become tuples)."""
    return tuple(sorted((key, tuple(value) if isinstance(value, list) else value) for key, value in options.items()))


@functools.lru_cache(maxsize=128)
def _trace(name, options, in_channels, num_classes, task, batch, size, dtype_name, training, loss) -> Activations:
    """:func:`_activation_bytes` for hashable arguments, remembered: the model's skeleton in ``dtype_name``."""
    import torch

    from ..losses import build_loss
    from ..models import skeleton
    from ..models.cost import measure_peak

    dtype = getattr(torch, dtype_name)
    model = skeleton(name, in_channels, num_classes, **dict(options)).to(dtype).train(training)
    images = torch.empty(batch, in_channels, *size, device="meta", dtype=dtype)
    if not training:
        with torch.no_grad():
            return Activations(per_image=math.ceil(measure_peak(model, images).peak / batch))
    target_shape = (batch, *size) if task == "multiclass" else (batch, num_classes, *size)
    target = torch.empty(target_shape, device="meta", dtype=torch.uint8)
    # The boundary term computes distances with OpenCV: not traceable, and small beside the rest.
    loss_fn = build_loss(task, loss.partition("+")[0])
    meter = measure_peak(lambda: loss_fn(model(images), target).backward())
    # Gradients of the weights do not grow with the batch: what of them was live at the peak is fixed.
    fixed = meter.live_at_peak(p.grad for p in model.parameters() if p.grad is not None)
    return Activations(per_image=math.ceil((meter.peak - fixed) / batch), fixed=fixed,
                       batch_norm_values=meter.batch_norm_values and meter.batch_norm_values // batch)


# --- the estimate ---------------------------------------------------------------------------------
def trace_dtype(config: TrainConfig) -> tuple[str, str]:
    """The run's device type and the dtype its activations take (autocast's, else float32; the
    widest a run with ``auto`` precision may keep after timing its candidates)."""
    from ..runtime import resolve_device
    from .precision import candidates

    device = resolve_device(config.device)
    options = candidates(device, config.precision)
    dtype = None if None in options else options[0]
    return device.type, str(dtype or "torch.float32").replace("torch.", "")


def model_spec(config: TrainConfig, info: "DatasetInfo", initial_meta: dict | None = None) -> ModelSpec:
    """The network ``config`` trains on data described by ``info`` (a fine-tuned checkpoint's own
    network when ``initial_meta`` is its metadata)."""
    if initial_meta is not None:
        model = initial_meta["model"]
        return ModelSpec(model["name"], dict(model.get("options") or {}), int(model.get("in_channels", 3)),
                         int(model["num_classes"]), initial_meta.get("task", info.task))
    return ModelSpec(config.model, dict(config.model_options), 3, info.num_classes, info.task)


def estimate_run_memory(config: TrainConfig, source: "DataSource", *, spec: ModelSpec | None = None,
                        val_tile: int = VAL_TILE) -> RunCost:
    """The peak memory of training ``config`` on ``source`` (opened, nothing read yet), by part.

    ``spec`` is the network when it is not ``config``'s own (fine-tuning); ``val_tile`` the side
    of the tiles larger validation images are evaluated in. Allocates nothing; takes about 0.1 s
    for a U-Net and 1–3 s for a U²-Net the first time (results are cached per size)."""
    spec = spec or model_spec(config, source.info)
    device, dtype_name = trace_dtype(config)
    crop = source.train_size(config.crop_size)
    val_image = source.val_size()
    val_batch = config.batch_size if val_image is not None else 1
    val_size = tuple(min(side, val_tile) for side in (val_image or (val_tile, val_tile)))
    step = _activation_bytes(spec, batch=2, size=crop, dtype_name=dtype_name, training=True, loss=config.loss)
    validation = _activation_bytes(spec, batch=1, size=val_size, dtype_name=dtype_name, training=False)
    return _cost(config, source, spec, device, dtype_name, config.batch_size, crop, step, val_batch, val_size,
                 val_tile, validation)


def _cost(config, source, spec, device, dtype_name, batch, crop, step, val_batch, val_size, val_tile,
          validation) -> RunCost:
    parameters = _parameter_count(spec)
    half = dtype_name in ("bfloat16", "float16")
    weights = parameters * (4 + (2 if half else 0))
    optimizer = parameters * 4 * (1 + OPTIMIZER_COPIES.get(config.optimizer, 2))
    channels = 1 if spec.task == "multiclass" else spec.num_classes
    pixels, val_pixels = crop[0] * crop[1], val_size[0] * val_size[1]
    # the batch as loaded (uint8), normalized (float32) and made channels-last, its target, and prefetched batches
    batch_bytes = batch * pixels * (spec.in_channels * (1 + 4 + 4) + channels) * (1 + config.prefetch)
    # validation metrics: float logits, probabilities, masks (and int64 indices for multiclass)
    metric_bytes = val_batch * val_pixels * (spec.in_channels * 9 + spec.num_classes * 12 + 32)
    return RunCost(spec=spec, batch_size=batch, crop=tuple(crop), val_batch=val_batch, val_size=tuple(val_size),
                   val_tile=val_tile, parameters=parameters, weights=weights, optimizer=optimizer,
                   step=step.fixed + batch * step.per_image,
                   validation=val_batch * validation.per_image + metric_bytes,
                   data=batch_bytes + source.held_bytes() + source.decode_bytes() * (1 + config.prefetch),
                   device=device)


@functools.lru_cache(maxsize=128)
def _parameters(name: str, options: tuple, in_channels: int, num_classes: int) -> int:
    try:
        from ..models import skeleton

        model = skeleton(name, in_channels, num_classes, **dict(options))
    except RuntimeError as error:  # sizes past what a tensor can describe
        raise SettingsError(f"{name} with {dict(options)} is far too large to build") from error
    return sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())


def _parameter_count(spec: ModelSpec) -> int:
    """Parameters and buffers of ``spec``'s model, counted on the meta device."""
    return _parameters(spec.name, _frozen(spec.options), spec.in_channels, spec.num_classes)


def budget_bytes(device: str) -> int:
    """What one run may use: the process's memory budget, or on a GPU the same share of its memory."""
    if device == "cuda":
        import torch

        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        return int(limits.current().memory_share * total)
    return limits.memory_budget()


# --- checks ---------------------------------------------------------------------------------------
def plan_run(config: TrainConfig, source: "DataSource", *, train_length: int | None = None,
             initial_meta: dict | None = None, world_size: int = 1) -> RunPlan:
    """Check that ``config`` can train on ``source`` here, before anything is built.

    ``train_length`` is the number of training items where the caller knows it (None: the
    training set is made here to count it); ``initial_meta`` a fine-tuned checkpoint's metadata.
    Returns the plan (its config's batch reduced to a training set smaller than one batch, with
    a note); raises :class:`~segdemo.errors.SettingsError` for a run that cannot fit or train.
    """
    notes = []
    info = source.info
    check_loss(config.loss, initial_meta.get("task", info.task) if initial_meta else info.task)
    classes = int(initial_meta["model"]["num_classes"]) if initial_meta else info.num_classes
    if classes > MAX_LABELS:
        from ..data.base import too_many_classes

        raise SettingsError(too_many_classes(classes))
    if train_length is None:
        train_length = _train_length(source, config)
    if train_length is not None:
        per_process = train_length // world_size
        if per_process < 1:
            raise SettingsError(f"the training set has {train_length} images: each of the {world_size} "
                                "processes needs at least one")
        if per_process < config.batch_size:
            notes.append(f"batch {per_process} instead of {config.batch_size}: the training set has only "
                         f"{train_length} images")
            config = config.replace(batch_size=per_process)
    spec = model_spec(config, info, initial_meta)
    cap = limits.current().model_parameters
    if _parameter_count(spec) > cap:
        raise SettingsError(f"{spec.described} has {_parameter_count(spec) / 1e6:,.0f} M parameters; "
                            f"at most {cap / 1e6:,.0f} M are trained here")
    cost = _fit_validation(config, source, spec)
    _check_batch_norm(config, source, spec)
    budget = budget_bytes(cost.device)
    host_budget = limits.memory_budget()
    if cost.model_bytes > budget or (cost.total if cost.device == "cpu" else cost.data) > host_budget:
        raise SettingsError(_over_budget_message(config, source, cost, budget))
    log.info("run estimate: %s of %s allowed (weights %s, optimizer %s, step %s, validation %s, data %s)",
             size_text(cost.total), size_text(budget), size_text(cost.weights), size_text(cost.optimizer),
             size_text(cost.step), size_text(cost.validation), size_text(cost.data))
    return RunPlan(config, cost, tuple(notes))


def _train_length(source: "DataSource", config: TrainConfig) -> int | None:
    """How many items the training set has, or None for an endless stream (the shapes)."""
    dataset = source.train_dataset(crop_size=config.crop_size, seed=config.seed)
    return None if hasattr(dataset, "length") else len(dataset)  # the shapes stream as many as asked


def _fit_validation(config: TrainConfig, source: "DataSource", spec: ModelSpec) -> RunCost:
    """The cost with the largest validation tile that fits the budget (the smallest if none does)."""
    cost = None
    for tile in VAL_TILES:
        cost = estimate_run_memory(config, source, spec=spec, val_tile=tile)
        if cost.validation <= cost.step or cost.model_bytes <= budget_bytes(cost.device) and \
                cost.total <= limits.memory_budget():
            return cost
    return cost


def _check_batch_norm(config: TrainConfig, source: "DataSource", spec: ModelSpec) -> None:
    """BatchNorm cannot train on one value per channel ("Expected more than 1 value per channel")."""
    _, dtype_name = trace_dtype(config)
    crop = source.train_size(config.crop_size)
    values = _activation_bytes(spec, batch=2, size=crop, dtype_name=dtype_name, training=True,
                               loss=config.loss).batch_norm_values
    if values is not None and values * config.batch_size <= 1:
        raise SettingsError(f"batch {config.batch_size} at {_px(crop)} is too small to train {spec.described}: "
                            "its deepest BatchNorm layer would see one value per channel; use a batch of at "
                            "least 2 or a larger crop")


def _px(size: tuple[int, int]) -> str:
    return f"{size[0]} px" if size[0] == size[1] else f"{size[0]}×{size[1]} px"


def _over_budget_message(config: TrainConfig, source: "DataSource", cost: RunCost, budget: int) -> str:
    where = "the GPU" if cost.device == "cuda" else "this server"
    whole = " (whole images: they are smaller than the crop)" if config.crop_size and \
        config.crop_size > max(cost.crop) else ""
    message = (f"{cost.spec.described}, batch {cost.batch_size} at {_px(cost.crop)}{whole} needs about "
               f"{size_text(cost.total)}, more than the {size_text(budget)} one run may use on {where}")
    fits = suggestions(config, source, cost, budget)
    if not fits:
        return message + f"; even batch 1 at {_px((SUGGESTED_CROPS[-1],) * 2)} does not fit: pick a smaller model"
    return message + "; at most " + ", or ".join(f"batch {b} at {_px(s)}" for b, s in fits) + " fits here"


def suggestions(config: TrainConfig, source: "DataSource", cost: RunCost, budget: int) -> list[tuple[int, tuple]]:
    """Up to two ``(batch, crop)`` that fit ``budget``: the largest batch at the asked crop, and,
    where that batch is small, a smaller crop that takes a larger one. Scaled from the traced
    sizes by the pixel count (activations grow with it), with a tenth kept spare."""
    _, dtype_name = trace_dtype(config)
    spec = cost.spec
    step = _activation_bytes(spec, batch=2, size=cost.crop, dtype_name=dtype_name, training=True, loss=config.loss)
    validation = _activation_bytes(spec, batch=1, size=cost.val_size, dtype_name=dtype_name, training=False)
    device = cost.device
    image = source.train_size(None) if source.val_size() is not None else None  # the shapes' whole images

    def fits(batch: int, crop: tuple[int, int]) -> bool:
        scale = crop[0] * crop[1] / (cost.crop[0] * cost.crop[1])
        scaled = replace(step, per_image=math.ceil(step.per_image * scale))
        val_batch = batch if cost.val_batch > 1 else 1
        trial = _cost(config, source, spec, device, dtype_name, batch, crop, scaled, val_batch, cost.val_size,
                      cost.val_tile, validation)
        limit = 0.9 * budget
        return trial.model_bytes <= limit and (trial.total if device == "cpu" else trial.data) <= 0.9 * limits.memory_budget()

    def largest_batch(crop) -> int:
        low, high = 0, cost.batch_size
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(middle, crop) else (low, middle - 1)
        return low

    crops = [cost.crop] + [(c, c) for c in SUGGESTED_CROPS if c < min(cost.crop)
                           and (image is None or c < min(image))]
    found = []
    for crop in crops:
        batch = largest_batch(crop)
        if batch >= 1 and not found:
            found.append((batch, crop))
            if batch >= min(cost.batch_size, 16):
                break
        elif found and batch >= min(cost.batch_size, 16):
            found.append((batch, crop))
            break
    return found
