"""One-click lessons: a few runs that differ in one setting, trained on the same budget, side by side.

Each :class:`Lesson` is data: a name, a paragraph for students, and its variants, each a label and
the settings it changes on the Train tab's ``live`` preset. Every variant of a lesson trains for the
same seconds, from the same seed, on the same data (the generated shapes), so what differs between
their curves is the one setting. :func:`lesson_configs` makes the runs' checked configurations; the
background trainer queues them as one series (``BackgroundTrainer.start_series``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SettingsError
from .config import LIVE_MODEL, TrainConfig, configure, preset

SECONDS_CHOICES = (20, 30, 60)   # per run: the live preset learns the shapes to Dice 0.9 in about 15-30 s
DEFAULT_SECONDS = 30
BASE_PRESET = "live"
# What every run of a lesson changes on the preset: validated every 25 steps rather than 50, so that
# a 20-30 s run's Dice curve has points enough to compare (each validation of 48 images takes about
# 0.6 s of the run's seconds, the same for every variant).
LESSON_SETTINGS = {"steps_per_epoch": 25}

# The live U-Net without its block choice, for the lesson that chooses one.
_LIVE_WITHOUT_BLOCK = {key: value for key, value in LIVE_MODEL.items() if key not in ("block", "residual")}


@dataclass(frozen=True)
class Variant:
    """One run of a lesson: its ``label`` and the settings it changes (keyword arguments of
    :func:`~segdemo.engine.config.configure`). ``model_options``, when given, are the model's
    options in full, not added to the preset's."""

    label: str
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Lesson:
    name: str
    explanation: str
    variants: tuple[Variant, ...]


LESSONS: tuple[Lesson, ...] = (
    Lesson(
        "Why skip connections",
        "A U-Net's decoder gets two inputs at each stage: the coarse, deep features coming up, and the "
        "encoder's fine features of the same size handed across by a skip connection. Without the skips "
        "the decoder must rebuild every edge from the 1/8-size bottleneck; the FCN goes further and "
        "predicts at 1/32 of the image and scales it up. Watch which one draws the thin shapes' edges, "
        "and how fast each one's Dice rises.",
        (Variant("U-Net"),
         Variant("U-Net without skips", {"model_options": {**LIVE_MODEL, "skips": False}}),
         # Half width, as the shipped FCN: 2.9 M parameters, so its two checkpoints take 23 MB of a
         # classroom workspace's disk rather than 90 MB.
         Variant("FCN (ResNet-18)", {"model": "fcn_resnet18",
                                     "model_options": {"pretrained_backbone": False, "width": 32}})),
    ),
    Lesson(
        "Why Dice",
        "Most pixels are background. Binary cross-entropy scores every pixel alike, so a model can do well "
        "on it by drawing little; the Dice loss scores the overlap of each class's prediction with its "
        "truth, so small shapes count as much as large ones, but its gradient is noisy early on. Together "
        "they learn steadily and find the small classes: compare the three Dice curves.",
        (Variant("BCE only", {"loss": "bce"}),
         Variant("Dice only", {"loss": "dice"}),
         Variant("BCE + Dice", {"loss": "bce_dice"})),
    ),
    Lesson(
        "How wide",
        "The width is the number of channels of the first stage (each deeper stage doubles it). A wider "
        "network can represent more, but each step costs more: on a CPU, in the same seconds a narrow "
        "one takes many more steps. Which learns the shapes best in the time given?",
        tuple(Variant(f"width {width}", {"model_options": {**LIVE_MODEL, "base_channels": width}})
              for width in (4, 8, 16)),
    ),
    Lesson(
        "Which block",
        "Each U-Net stage is a block of two 3×3 convolutions. A plain block is just that; a residual block "
        "adds its input back to its output (a shortcut that lets gradients flow straight through); a "
        "dense block feeds each convolution every feature map before it. Same width, same seconds: which "
        "block learns fastest here?",
        tuple(Variant(f"{block} blocks", {"model_options": {**_LIVE_WITHOUT_BLOCK, "block": block}})
              for block in ("plain", "residual", "dense")),
    ),
)


def lesson_names() -> list[str]:
    return [lesson.name for lesson in LESSONS]


def lesson(name: str) -> Lesson:
    """The lesson called ``name``; an unknown name is a :class:`~segdemo.errors.SettingsError` listing them."""
    for known in LESSONS:
        if known.name == name:
            return known
    raise SettingsError(f"unknown lesson {name!r}; the lessons are: {', '.join(lesson_names())}")


def lesson_configs(name: str, seconds: float = DEFAULT_SECONDS, base: TrainConfig | None = None) -> list[TrainConfig]:
    """The checked configurations of lesson ``name``'s runs, in order: ``base`` (default: the ``live``
    preset) with :data:`LESSON_SETTINGS` and each variant's settings, all for ``seconds`` of training
    from the same seed on the same data, titled "<lesson>: <variant>". Raises :class:`~segdemo.errors.SettingsError`
    naming the variant whose settings are refused (nothing is queued then)."""
    chosen = lesson(name)
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 < seconds <= 3600:
        raise SettingsError(f"a lesson's runs train for 1 s to an hour each (got {seconds!r})")
    base = base or preset(BASE_PRESET)
    configs = []
    for variant in chosen.variants:
        settings = {**LESSON_SETTINGS, **variant.settings}
        start = base.replace(model_options={}) if "model_options" in settings else base
        try:
            configs.append(configure(start, max_seconds=seconds, title=f"{chosen.name}: {variant.label}", **settings))
        except SettingsError as error:
            raise SettingsError(f"{chosen.name}, {variant.label}: {error}") from None
    return configs
