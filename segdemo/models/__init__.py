"""Segmentation networks, one registry: ``create(name, in_channels, num_classes, **options)``.

Every model returns logits of exactly the input's H×W (sigmoid/softmax live in the losses and
in inference). ``names()`` lists them; the app, the CLI and the tests are generated from it.
Importing this package does not import torch: the registry imports the model modules on first use.
"""

from .registry import ModelEntry, create, entry, names, register_model
from .weights import WeightsUnavailable


def count_parameters(model) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["ModelEntry", "WeightsUnavailable", "count_parameters", "create", "entry", "names", "register_model"]
