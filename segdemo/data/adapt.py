"""Fitting a dataset's targets to a model trained on other labels, for fine-tuning.

The annotate → train loop needs this: annotations are saved as index masks with a background
class (e.g. "background" + the six shapes, multiclass), while the shipped shapes U-Net predicts
the six shapes as multi-label channels. Classes are matched by name, so such a dataset fine-tunes
that model directly.
"""

from __future__ import annotations

from ..errors import SettingsError
from ..labels import relabel_table
from ..tasks import BACKGROUND_NAME, IGNORE_INDEX, MULTICLASS, label_space
from .base import DatasetInfo


class AdaptedTargets:
    """A map-style dataset whose targets pass through ``convert`` (images unchanged)."""

    def __init__(self, dataset, convert):
        self.dataset = dataset
        self.convert = convert

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        image, target = self.dataset[index]
        return image, self.convert(target)


def target_adapter(source: DatasetInfo, meta: dict):
    """How to turn ``source``'s targets into those of the model that ``meta`` describes.

    Returns ``(convert or None, DatasetInfo of the model's labels)``; ``convert`` is None when the
    layouts already agree. Raises :class:`~segdemo.errors.SettingsError` when the classes cannot be
    matched by name.
    """
    import torch

    task, classes = meta["task"], tuple(meta["classes"])
    info = DatasetInfo(source.name, task, classes, tuple(tuple(c) for c in meta["colors"]))
    if source.task == task and source.classes == classes:
        return None, info
    mismatch = SettingsError(
        f"the model predicts {len(classes)} {task} classes ({', '.join(classes[:6])}) but this data has "
        f"{len(source.classes)} {source.task} classes ({', '.join(source.classes[:6])}); fine-tuning needs "
        "the same classes (matched by name)")
    _, missing = relabel_table(classes, source.classes)
    background_first = source.classes[0].lower() == BACKGROUND_NAME
    if missing or source.task != MULTICLASS:
        raise mismatch
    if task == MULTICLASS:
        if background_first and classes[0].lower() != BACKGROUND_NAME:
            raise mismatch
        table = torch.from_numpy(relabel_table(source.classes, classes, unmatched=IGNORE_INDEX)[0])

        def convert(target: torch.Tensor) -> torch.Tensor:
            return table[target.long()]
        return convert, info
    if not background_first:
        raise mismatch
    names = label_space(task, classes, info.colors)[0]  # "background" first, then the model's classes
    table = torch.from_numpy(relabel_table(source.classes, names)[0])
    values = torch.arange(1, len(classes) + 1, dtype=torch.uint8).view(-1, 1, 1)

    def to_channels(target: torch.Tensor) -> torch.Tensor:
        labels = table[target.long()]
        channels = (labels.unsqueeze(0) == values).to(torch.uint8)
        channels[:, labels == IGNORE_INDEX] = IGNORE_INDEX
        return channels
    return to_channels, info
