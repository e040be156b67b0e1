"""Segmentation networks, one registry: ``create(name, in_channels, num_classes, **options)``.

Every model returns logits of exactly the input's H×W (sigmoid/softmax live in the losses and
in inference). ``names()`` lists them; the app, the CLI and the tests are generated from it.
What a model would cost (parameters, weight and activation bytes) is ``estimate(name, ...)``,
read without building it; ``create`` refuses a model past the parameter limit before building it.
Importing this package does not import torch: the registry imports the model modules on first use,
and ``estimate``/``ModelCost`` come from :mod:`.cost` when first asked for.
"""

from .registry import ModelEntry, count_parameters, create, entry, names, register_model, skeleton
from .weights import WeightsUnavailable


def __getattr__(name: str):
    """``estimate`` and ``ModelCost`` (:mod:`.cost` imports torch, so only when first used)."""
    if name in ("estimate", "ModelCost"):
        from . import cost

        return getattr(cost, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ModelCost", "ModelEntry", "WeightsUnavailable", "count_parameters", "create", "entry", "estimate",
           "names", "register_model", "skeleton"]
