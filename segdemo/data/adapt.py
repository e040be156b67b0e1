"""Fitting a dataset's targets to a model trained on other labels, for fine-tuning.

The annotate → train loop needs this: annotations are saved as index masks with a background
class (e.g. "background" + the six shapes, multiclass), while the shipped shapes U-Net predicts
the six shapes as multi-label channels. Classes are matched by name, so such a dataset fine-tunes
that model directly.
"""

from __future__ import annotations

import torch

from ..tasks import BINARY, IGNORE_INDEX, MULTICLASS, MULTILABEL
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
    layouts already agree. Raises ``ValueError`` when the classes cannot be matched by name.
    """
    task, classes = meta["task"], tuple(meta["classes"])
    info = DatasetInfo(source.name, task, classes, tuple(tuple(c) for c in meta["colors"]))
    if source.task == task and source.classes == classes:
        return None, info
    lowered = [name.lower() for name in source.classes]
    missing = [name for name in classes if name.lower() not in lowered]
    mismatch = ValueError(
        f"the model predicts {len(classes)} {task} classes ({', '.join(classes[:6])}) but this data has "
        f"{len(source.classes)} {source.task} classes ({', '.join(source.classes[:6])}); fine-tuning needs "
        "the same classes (matched by name)")
    if missing or source.task != MULTICLASS:
        raise mismatch
    index = torch.tensor([lowered.index(name.lower()) for name in classes], dtype=torch.uint8)
    if task == MULTICLASS:
        table = torch.full((256,), IGNORE_INDEX, dtype=torch.uint8)
        table[index.long()] = torch.arange(len(classes), dtype=torch.uint8)
        if lowered[0] == "background" and classes[0].lower() != "background":
            raise mismatch

        def convert(target: torch.Tensor) -> torch.Tensor:
            return table[target.long()]
        return convert, info
    if lowered[0] != "background":
        raise mismatch

    def to_channels(target: torch.Tensor) -> torch.Tensor:
        channels = (target.unsqueeze(0) == index.view(-1, 1, 1)).to(torch.uint8)
        channels[:, target == IGNORE_INDEX] = IGNORE_INDEX
        return channels
    assert task in (MULTILABEL, BINARY)
    return to_channels, info
