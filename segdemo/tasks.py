"""The three kinds of segmentation task and how their targets are laid out.

Every part of segdemo (data, losses, metrics, inference, pictures) agrees on these layouts:

- ``multilabel``: one output channel per class, classes may overlap; target ``(C, H, W)`` of 0/1.
- ``binary``: one output channel (the foreground class); target ``(1, H, W)`` of 0/1.
- ``multiclass``: one output channel per class, exactly one class per pixel (class 0 is usually
  the background); target ``(H, W)`` of class indices.

In every layout the value :data:`IGNORE_INDEX` (255) marks pixels that count for nothing: VOC's
object borders, the outside of DRIVE's field of view, padding added by random crops.
"""

from __future__ import annotations

MULTILABEL = "multilabel"
MULTICLASS = "multiclass"
BINARY = "binary"
TASKS = (MULTILABEL, MULTICLASS, BINARY)

IGNORE_INDEX = 255

# A label map is uint8 and 255 is IGNORE_INDEX, so it names at most 255 labels (values 0..254): a
# multiclass model has that many classes at most, a multi-label or binary one (whose value 0 is
# "no class") one fewer. More could never be shown, scored or saved as a mask.
MAX_LABELS = 255
MAX_CLASS_NAME = 64   # characters of one class name: legends, pickers and class lists show it whole

BACKGROUND_NAME = "background"
BACKGROUND_COLOR = (0, 0, 0)


class LabelSpace:
    """For objects with a ``task``, ``classes`` and ``colors`` (a model, a prediction): the names and
    colors of the values of their label maps (:func:`label_space`)."""

    @property
    def label_names(self) -> tuple[str, ...]:
        return label_space(self.task, self.classes, self.colors)[0]

    @property
    def label_colors(self) -> tuple[tuple[int, int, int], ...]:
        return label_space(self.task, self.classes, self.colors)[1]


def check_task(task: str) -> str:
    """Return ``task`` if it is one of :data:`TASKS`, else raise a ``ValueError`` naming them."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return task


def max_classes(task: str) -> int:
    """The most classes a model of ``task`` may have, so that its label maps fit :data:`MAX_LABELS`."""
    return MAX_LABELS if check_task(task) == MULTICLASS else MAX_LABELS - 1


def label_space(task: str, classes, colors):
    """Names and colors of the values of a label map (one class index per pixel).

    A multiclass model's label map uses its class indices directly. Multi-label and binary models
    have no background channel, so their label maps use 0 for "no class" and ``k + 1`` for
    class ``k``. Returns ``(names, colors)`` as tuples.
    """
    check_task(task)
    classes = tuple(classes)
    colors = tuple(tuple(int(v) for v in c) for c in colors)
    if task == MULTICLASS:
        return classes, colors
    return (BACKGROUND_NAME, *classes), (BACKGROUND_COLOR, *colors)



def probabilities_from_logits(logits, task: str):
    """A model's logits ``(N, C, H, W)`` as probabilities: a softmax over the classes for
    multiclass tasks, an independent sigmoid per class otherwise (tensor methods only, so this
    module imports no torch)."""
    return logits.softmax(dim=1) if check_task(task) == MULTICLASS else logits.sigmoid()
