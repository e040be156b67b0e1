"""The losses a run can train with, by name: one table that ``TrainConfig.loss``, the CLI's
``--loss`` choices and help, the Train tab's loss picker and :func:`segdemo.losses.build_loss` all
read. It imports no torch, so that the app can build its page before torch is loaded.

A name is a region loss (:data:`REGION_LOSSES`), optionally with :data:`BOUNDARY` appended (Kervadec
et al.'s boundary term on top, weighted in over the run), or ``auto``: BCE + Dice for multi-label
and binary data, cross-entropy for multiclass data.

Which loss suits which task follows from how the model's outputs become probabilities
(:func:`segdemo.tasks.probabilities_from_logits`): BCE treats each class on its own (a sigmoid per
class: multi-label and binary data), cross-entropy makes the classes compete (a softmax:
multiclass data). Dice and focal loss work either way, so they take the task's own rule.
"""

from __future__ import annotations

from .errors import SettingsError
from .tasks import BINARY, MULTICLASS, MULTILABEL, TASKS, check_task

AUTO = "auto"
BOUNDARY = "+boundary"
SIGMOID_TASKS = (MULTILABEL, BINARY)

# name: (label for people, the tasks it suits)
REGION_LOSSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "bce_dice": ("BCE + Dice", SIGMOID_TASKS),
    "bce": ("BCE", SIGMOID_TASKS),
    "dice": ("Dice", TASKS),
    "focal": ("focal", TASKS),
    "ce": ("cross-entropy", (MULTICLASS,)),
    "ce_dice": ("cross-entropy + Dice", (MULTICLASS,)),
}
LOSS_NAMES = (AUTO, *REGION_LOSSES, *(name + BOUNDARY for name in REGION_LOSSES))
LOSS_LABELS = {
    AUTO: "auto (BCE + Dice; cross-entropy for multiclass)",
    **{name: label for name, (label, _) in REGION_LOSSES.items()},
    **{name + BOUNDARY: f"{label} + boundary" for name, (label, _) in REGION_LOSSES.items()},
}


def auto_loss(task: str) -> str:
    """What ``auto`` means for ``task``: BCE + Dice, or cross-entropy for multiclass data."""
    return "ce" if check_task(task) == MULTICLASS else "bce_dice"


def check_loss(name: str, task: str | None = None) -> str:
    """``name`` if it is one of :data:`LOSS_NAMES` and (when ``task`` is given) suits that task;
    else a :class:`~segdemo.errors.SettingsError` (a ``ValueError``) that says which would."""
    if name not in LOSS_NAMES:
        raise SettingsError(f"unknown loss {name!r}; expected one of {', '.join(LOSS_NAMES)}")
    if task is None or name == AUTO:
        return name
    region = name.removesuffix(BOUNDARY)
    label, tasks = REGION_LOSSES[region]
    if check_task(task) not in tasks:
        suitable = [_named(n) for n, (_, suits) in REGION_LOSSES.items() if task in suits]
        raise SettingsError(f"the {_named(region)} loss suits {' and '.join(tasks)} data, and this data is {task}; "
                            f"pick {', '.join(suitable)} or auto")
    return name


def _named(region: str) -> str:
    """A region loss as people and API callers know it: "cross-entropy (ce)", "focal"."""
    label = REGION_LOSSES[region][0]
    return label if label == region else f"{label} ({region})"


def suited_tasks(name: str) -> tuple[str, ...]:
    """The tasks loss ``name`` suits (every task for ``auto``)."""
    check_loss(name)
    return TASKS if name == AUTO else REGION_LOSSES[name.removesuffix(BOUNDARY)][1]
