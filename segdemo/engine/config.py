"""Training configuration: one dataclass shared by the CLI, the app's Train tab and checkpoints.

A :class:`TrainConfig` is checked when it is made, so every one in existence is valid and nothing
downstream checks it again. Presets name complete, measured recipes (``live`` for the Train tab on
2 CPU cores); :func:`configure` is the one way the CLI, the Train tab and the API change one.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field, fields

from ..errors import SettingsError
from ..loss_names import LOSS_NAMES
from ..runtime import PRECISIONS

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "step", "cosine", "onecycle")

MAX_IMAGE_SIZE = 2048
MAX_BATCH_SIZE = 512
MAX_EPOCHS = 10_000
MAX_PROBE_IMAGES = 16


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults are a plain, safe run; presets tune them."""

    # what to train
    model: str = "unet"
    model_options: dict = field(default_factory=dict)
    data: str = "shapes"
    data_options: dict = field(default_factory=dict)
    init_from: str | None = None       # fine-tune from this checkpoint's weights
    title: str | None = None           # name shown in model pickers

    # how long
    epochs: int = 10
    steps_per_epoch: int | None = None  # None: one pass over the training set
    max_seconds: float | None = None    # stop (and validate, save) when this wall time is reached

    # optimization
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "onecycle"
    warmup_fraction: float = 0.1        # one-cycle: share of steps spent rising to the peak
    step_every_epochs: int = 10         # step schedule
    step_gamma: float = 0.1
    grad_clip: float | None = 1.0
    prior_init: bool = True             # a fresh model's head starts at the classes' pixel shares
                                        # (models.common.start_from_class_shares)
    loss: str = "auto"                  # a name of segdemo.loss_names.LOSS_NAMES; whether it suits the
                                        # data's task is checked when the data is known (budget.plan_run)
    bce_weight: float = 0.5
    dice_weight: float = 0.5

    # data shapes
    crop_size: int | None = None        # train on random crops of this size (None: whole images)

    # validation
    val_images: int | None = None       # None: the whole validation set
    val_every: int = 1                  # epochs between validations
    snapshot_every: int = 1             # epochs between prediction snapshots
    probe_images: int = 0               # validation images predicted as the run trains, dense early
                                        # (engine.probes: the Train tab's timeline; the live preset: 4)

    # machinery
    precision: str = "auto"             # auto: fp32 or bf16, the faster on the first steps (engine.precision)
    channels_last: bool | None = None   # None: on where measured to help (CPU and CUDA convnets)
    device: str = "auto"
    threads: int | None = None          # torch CPU threads for this run (None: leave as is)
    seed: int = 0
    prefetch: int = 0                   # batches generated ahead in a thread (0: inline; on 2 cores a
                                        # thread slowed steps by 10-25 %: it fights for the GIL and cores)
    out: str | None = None              # folder for checkpoints and the JSON-lines log
    resume: str | None = None           # a "last.pt" of an earlier run to continue
    half_checkpoint: bool = False       # store weights as float16 (smaller shipped files)
    log_every: int = 1                  # steps between step events

    def __post_init__(self):
        self.validate()

    def validate(self) -> "TrainConfig":
        """Raise :class:`~segdemo.errors.SettingsError` naming every setting out of range
        (called when a config is made)."""
        problems = []
        for name in ("lr", "weight_decay", "momentum", "warmup_fraction", "step_gamma", "bce_weight", "dice_weight",
                     "max_seconds", "grad_clip"):
            value = getattr(self, name)
            if value is not None and not _finite(value):
                problems.append(f"{_SPOKEN.get(name, name.replace('_', ' '))} must be a finite number (got {value!r})")
        for name in ("epochs", "steps_per_epoch", "batch_size", "crop_size", "val_images", "val_every",
                     "snapshot_every", "log_every", "prefetch", "threads", "seed", "probe_images"):
            value = getattr(self, name)
            if value is not None and not _whole(value):  # 2.7 epochs are refused, never cut to 2
                problems.append(f"{_SPOKEN.get(name, name.replace('_', ' '))} must be a whole number (got {value!r})")
        if problems:  # the range checks below assume numbers of the right kind
            raise SettingsError("; ".join(problems))
        if not _whole(self.epochs) or not 1 <= self.epochs <= MAX_EPOCHS:
            problems.append(f"epochs must be between 1 and {MAX_EPOCHS} (got {self.epochs})")
        if self.steps_per_epoch is not None and (not _whole(self.steps_per_epoch) or self.steps_per_epoch < 1):
            problems.append(f"steps per epoch must be at least 1 (got {self.steps_per_epoch})")
        if not _whole(self.batch_size) or not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            problems.append(f"batch size must be between 1 and {MAX_BATCH_SIZE} (got {self.batch_size})")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr <= 10):
            problems.append(f"learning rate must be above 0 and at most 10 (got {self.lr})")
        if self.weight_decay < 0:
            problems.append(f"weight decay must be >= 0 (got {self.weight_decay})")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)} (got {self.optimizer!r})")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)} (got {self.schedule!r})")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if self.crop_size is not None and (not _whole(self.crop_size) or not 8 <= self.crop_size <= MAX_IMAGE_SIZE):
            problems.append(f"crop size must be between 8 and {MAX_IMAGE_SIZE} pixels (got {self.crop_size})")
        size = self.data_options.get("size")
        if size is not None:
            sides = size if isinstance(size, (list, tuple)) else (size, size)
            if not all(_whole(s) and 8 <= s <= MAX_IMAGE_SIZE for s in sides):
                problems.append(f"image size must be between 8 and {MAX_IMAGE_SIZE} pixels (got {size})")
        if self.max_seconds is not None and self.max_seconds <= 0:
            problems.append(f"the time limit must be positive seconds (got {self.max_seconds})")
        if self.grad_clip is not None and self.grad_clip <= 0:
            problems.append(f"gradient clipping must be positive or off (got {self.grad_clip})")
        if self.val_images is not None and self.val_images < 1:
            problems.append(f"validation images must be at least 1 (got {self.val_images})")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be at least 1 (got {self.threads})")
        if self.loss not in LOSS_NAMES:
            problems.append(f"loss must be one of {', '.join(LOSS_NAMES)} (got {self.loss!r})")
        if not 0 <= self.bce_weight <= 1:
            problems.append(f"the BCE weight must be between 0 and 1 (got {self.bce_weight})")
        if not 0 <= self.probe_images <= MAX_PROBE_IMAGES:
            problems.append(f"probe images must be between 0 and {MAX_PROBE_IMAGES} (got {self.probe_images})")
        if self.val_every < 1 or self.snapshot_every < 1 or self.log_every < 1 or self.prefetch < 0:
            problems.append("val_every, snapshot_every and log_every must be at least 1, prefetch at least 0")
        if problems:
            raise SettingsError("; ".join(problems))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SettingsError(f"unknown training settings: {', '.join(sorted(unknown))}")
        return cls(**data)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


_SPOKEN = {"lr": "learning rate", "max_seconds": "the time limit", "grad_clip": "gradient clipping",
           "crop_size": "crop size", "batch_size": "batch size"}


def _finite(value) -> bool:
    """A real number that is neither NaN nor infinite (a raw JSON ``NaN`` would disable a limit)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value) -> bool:
    """An ``int`` proper (not a bool, not 2.7)."""
    return isinstance(value, int) and not isinstance(value, bool)


def whole_number(value, name: str) -> int:
    """``value`` (a number from a form or JSON: 3, 3.0, "3") as an int; 2.7, NaN, inf or text
    are refused with a :class:`~segdemo.errors.SettingsError` naming ``name``, never rounded."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a whole number (got {value!r})") from None
    if not math.isfinite(number) or number != int(number):
        raise SettingsError(f"{name} must be a whole number (got {value!r})")
    return int(number)


def number(value, name: str) -> float:
    """``value`` as a float; text or nothing is refused naming ``name`` (NaN and inf are left to
    :meth:`TrainConfig.validate`, which names the setting they would break)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number (got {value!r})") from None


# Presets: measured on the project's 2-core machines (see BENCHMARKS.md and train/).
LIVE_MODEL = {"base_channels": 8, "depth": 3, "block": "residual", "upsample": "nearest"}  # live and small
PRESETS: dict[str, TrainConfig] = {
    # The Train tab's default: a slim residual U-Net learning the shapes live on 2 CPU cores.
    # Measured (BENCHMARKS.md, bench/bench_live.py): 8-wide residual blocks (ResUNet) learn as well
    # as 16-wide plain ones at 2.4× the steps per second (plain 8-wide ones lose classes); nearest
    # upsampling (bilinear's backward was an eighth of a step, and it learned no better or worse); the head
    # started at the classes' pixel shares (TrainConfig.prior_init); 80×80 crops, batch 12 (a step
    # costs about the same per pixel at any crop or batch here, and at an equal number of pixels
    # learned more steps of smaller batches did better: fresh-shapes Dice 0.96-0.97 over 3 seeds
    # where 96×96 crops, batch 16 gave 0.86-0.93, and batch 24 or 64×64 crops less); AdamW 3e-3
    # one-cycle annealed by wall time, BCE + Dice 0.5/0.5 (less BCE lost thin classes); precision
    # timed on the first steps; validation on 48 whole 192×192 images every 50 steps; 4 probe images
    # predicted for the Train tab's timeline (engine.probes: a few % of the run). A minute by
    # default: fresh-shapes Dice 0.97 at 30 s and at 60 s (3 seeds each), so a class's runs queue briefly.
    "live": TrainConfig(
        model="unet", model_options=dict(LIVE_MODEL), data="shapes", epochs=100, steps_per_epoch=50,
        batch_size=12, lr=3e-3, schedule="onecycle", warmup_fraction=0.15, crop_size=80, val_images=48,
        max_seconds=60, title="live U-Net", probe_images=4,
    ),
    # The command line's run when it names no preset or recipe (CLI_PRESET): the live preset's model,
    # crops and batches, bounded by epochs rather than wall time, so that its length and result are the
    # same on every machine. An epoch is one pass over 2000 fresh shapes (166 steps of 12; under
    # torchrun the ranks share them); each ends with a validation on the 200 whole 192×192 images.
    "small": TrainConfig(
        model="unet", model_options=dict(LIVE_MODEL), data="shapes", epochs=4, batch_size=12, lr=3e-3,
        schedule="onecycle", warmup_fraction=0.15, crop_size=80, title="small U-Net",
    ),
    # The classic widths, by name, with the plain defaults (whole 192×192 images): hours on 2 CPU
    # cores (one batch-25 step of the tutorial's U-Net took 33 s there), minutes on a GPU.
    # "tutorial": the tutorials' U-Net (64 wide, 3 poolings, bilinear, no normalization: 7.8 M
    # parameters); "original": the paper's widths (64 wide, 4 poolings, transposed convolutions,
    # here with batch norm: 31 M parameters).
    "tutorial": TrainConfig(
        model="unet", model_options={"base_channels": 64, "depth": 3, "upsample": "bilinear", "norm": "none"},
        title="tutorial U-Net",
    ),
    "original": TrainConfig(
        model="unet", model_options={"base_channels": 64, "depth": 4, "upsample": "transpose", "norm": "batch"},
        title="original U-Net",
    ),
}


CLI_PRESET = "small"        # python -m segdemo.train without --preset or --config
CLASSIC_PRESETS = ("tutorial", "original")  # slow on a CPU: the command line's help says so


def preset(name: str, **overrides) -> TrainConfig:
    """A copy of preset ``name``, with ``overrides`` applied by :func:`configure`."""
    if name not in PRESETS:
        raise SettingsError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    config = copy.deepcopy(PRESETS[name])  # a copy of a checked config needs no second check
    return configure(config, **overrides) if overrides else config


def configure(base: TrainConfig, *, model_options: dict | None = None, data_options: dict | None = None,
              image_size: int | None = None, **changes) -> TrainConfig:
    """``base`` with ``changes`` applied: the one way the CLI, the Train tab and the API set up a run.

    Each setting means one thing wherever it comes from:

    - any :class:`TrainConfig` field by name (``epochs=5``, ``lr=0.003`` …);
    - ``model``: another model than the base's starts from its own defaults (the base's model
      options are dropped); ``model_options`` are added on top (``base_channels`` …);
    - ``data``: likewise for another kind of data source and ``data_options``;
    - ``crop_size``: train on random crops of this size; 0 or None trains on whole images, and so
      does a crop as large as the images;
    - ``image_size``: the size of the generated shapes (the shapes source only);
    - ``max_seconds``: 0 or None sets no time limit.

    The model and its options are checked against the registry (which imports torch). A run on the
    shapes, whose data is known without reading anything, is also checked against this machine's
    memory budget and the model's needs (:func:`segdemo.engine.budget.plan_run`; runs on files are
    checked when their data is opened). Returns the new config, checked once as it is made; raises
    :class:`~segdemo.errors.SettingsError`.
    """
    from ..data import parse_spec
    from ..models import entry

    unknown = set(changes) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise SettingsError(f"unknown training settings: {', '.join(sorted(unknown))}")
    model = changes.get("model", base.model)
    options = dict(base.model_options) if model == base.model else {}
    options.update(model_options or {})
    data = changes.get("data", base.data)
    kind = parse_spec(data)[0]
    data_settings = dict(base.data_options) if kind == parse_spec(base.data)[0] else {}
    data_settings.update(data_options or {})
    if image_size is not None:
        if kind != "shapes":
            raise SettingsError("the image size sets the generated shapes' size; for a dataset, set the crop size")
        data_settings["size"] = image_size
    for name in ("crop_size", "max_seconds"):
        if name in changes and not changes[name]:
            changes[name] = None
    try:
        model_entry = entry(model)
    except ValueError as error:
        raise SettingsError(str(error)) from None
    if not model_entry.trainable:
        raise SettingsError(f"{model} is for inference only; pick a trainable model")
    refused = sorted(set(options) - set(model_entry.option_names()))
    if refused:
        raise SettingsError(f"{model} has no option {', '.join(refused)}; its options are: "
                            f"{', '.join(model_entry.option_names()) or 'none'}")
    config = dataclasses.replace(base, **changes, model_options=options, data_options=data_settings)
    if kind == "shapes" and config.init_from is None:
        from ..data import open_source
        from .budget import plan_run

        plan_run(config, open_source(config.data, **config.data_options))
    return config
