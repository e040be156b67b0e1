"""The model registry: every network is registered once, by name, with its builder.

The app's model pickers, the CLI's ``--model`` choices and the tests are all generated from this
one table, so a newly registered model is listed, trainable and tested without further code.

The built-in models register themselves when their modules are imported, and those import
torch; :func:`names`, :func:`entry` and :func:`create` import them on first use, so that
``import segdemo.models`` stays cheap (the app serves its page before torch is loaded).

Sizes are checked before memory is spent: every model's options have ranges (checked before a
layer is built), and :func:`create` counts the parameters of the model's :func:`skeleton` on the
``meta`` device and refuses one past ``segdemo.limits.current().model_parameters``, so a checkpoint
or an API call that asks for a billion parameters costs milliseconds, not the server.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .. import limits
from ..errors import SettingsError
from ..tasks import MAX_LABELS

if TYPE_CHECKING:
    from torch import nn

# The modules of segdemo.models that register the built-in models, in the order they are listed.
BUILTIN_MODULES = ("unet", "fcn", "u2net", "pretrained")
MAX_IN_CHANNELS = 4  # images are gray, RGB or RGBA


@dataclass(frozen=True)
class ModelEntry:
    """A registered model.

    Attributes:
        name: the registry name.
        builder: ``builder(in_channels, num_classes, **options) -> nn.Module``.
        description: one line for pickers and ``--help``.
        restore_options: options forced when a model is rebuilt from a checkpoint (e.g. never
            fetch pretrained weights that the checkpoint's own weights replace).
        fixed: for pretrained models with a fixed head, the ``in_channels``/``num_classes``
            they require.
        trainable: False for models only meant for inference.
    """

    name: str
    builder: Callable[..., nn.Module]
    description: str
    restore_options: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    trainable: bool = True

    def option_names(self) -> list[str]:
        parameters = inspect.signature(self.builder).parameters
        return [p for p in parameters if p not in ("in_channels", "num_classes", "self")]

    def option_defaults(self) -> dict:
        parameters = inspect.signature(self.builder).parameters
        return {name: p.default for name, p in parameters.items()
                if name not in ("in_channels", "num_classes", "self") and p.default is not inspect.Parameter.empty}


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, *, description: str, restore_options: dict | None = None,
                   fixed: dict | None = None, trainable: bool = True):
    """Decorator registering a model class or builder function under ``name``."""

    def decorate(builder):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = ModelEntry(name, builder, description, restore_options or {}, fixed or {}, trainable)
        return builder

    return decorate


def _registered() -> dict[str, ModelEntry]:
    """The table, once every built-in model module has registered its models (importing a module
    twice does nothing; concurrent callers wait for the import in progress)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    return _MODELS


def _listing_order(name: str) -> int:
    """Built-in models in :data:`BUILTIN_MODULES` order, whichever module was imported first;
    others after them."""
    module = _MODELS[name].builder.__module__.rpartition(".")[2]
    return BUILTIN_MODULES.index(module) if module in BUILTIN_MODULES else len(BUILTIN_MODULES)


def names(*, trainable: bool | None = None) -> list[str]:
    """Registered model names (optionally only the trainable ones): the built-in ones in
    :data:`BUILTIN_MODULES` order, each module's in registration order."""
    listed = [n for n, e in _registered().items() if trainable is None or e.trainable == trainable]
    return sorted(listed, key=_listing_order)


def entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; an unknown name raises a
    :class:`~segdemo.errors.SettingsError` (a ``ValueError``) listing the valid ones."""
    try:
        return _registered()[name]
    except (KeyError, TypeError):
        raise SettingsError(f"unknown model {name!r}; available: {', '.join(names())}") from None


def _checked(name: str, in_channels, num_classes, options: dict) -> tuple[ModelEntry, int]:
    """``name``'s entry and the number of classes, once the arguments every model takes are in
    range and the options are the model's own (each model checks its options' values itself,
    before it builds a layer)."""
    from .common import check_range

    model_entry = entry(name)
    if num_classes is None:
        num_classes = model_entry.fixed.get("num_classes", 1)
    valid = model_entry.option_names()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise SettingsError(f"{name} has no option {', '.join(map(str, unknown))}; its options are: "
                            f"{', '.join(valid) or 'none'}")
    for key, required in model_entry.fixed.items():
        given = {"in_channels": in_channels, "num_classes": num_classes}[key]
        if given != required:
            raise SettingsError(f"{name} needs {key}={required} (its pretrained head is fixed), got {given}")
    check_range("in_channels", in_channels, 1, MAX_IN_CHANNELS, "gray, RGB or RGBA images")
    check_range("num_classes", num_classes, 1, MAX_LABELS,
                f"a label map names at most {MAX_LABELS} labels: it is 8-bit and 255 marks ignored pixels")
    return model_entry, num_classes


def skeleton(name: str, in_channels: int = 3, num_classes: int | None = None, **options) -> nn.Module:
    """The model :func:`create` would build, on the ``meta`` device: every parameter and buffer
    with its shape and dtype but no memory, no initialisation and no weights fetched (the entry's
    ``restore_options`` apply), in milliseconds whatever its size. What a model would cost, and
    which state dict fits it, are read from this before anything is allocated.

    Raises :class:`~segdemo.errors.SettingsError` (a ``ValueError``) for an unknown name or option,
    or a value out of its range."""
    import torch

    model_entry, num_classes = _checked(name, in_channels, num_classes, options)
    with torch.device("meta"):  # this thread's factories only: other threads keep allocating for real
        return model_entry.builder(in_channels=in_channels, num_classes=num_classes,
                                   **{**options, **model_entry.restore_options})


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model`` (a real one or a :func:`skeleton`)."""
    return sum(p.numel() for p in model.parameters())


def create(name: str, in_channels: int = 3, num_classes: int | None = None, **options) -> nn.Module:
    """Build a registered model.

    Args:
        name: one of :func:`names`.
        in_channels: input image channels (1 to :data:`MAX_IN_CHANNELS`).
        num_classes: output channels (logits; 1 to :data:`~segdemo.tasks.MAX_LABELS`); defaults
            to the model's fixed head, else 1.
        **options: the model's own options (e.g. ``base_channels=16`` for ``unet``); unknown
            options raise a ``ValueError`` naming the valid ones.

    Returns:
        An ``nn.Module`` mapping ``(N, in_channels, H, W)`` to logits ``(N, num_classes, H, W)``
        for any H×W. It carries ``segdemo_spec`` (name, channels, options) so that a checkpoint
        can rebuild it.

    Raises:
        SettingsError: (a ``ValueError``) for an unknown name or option, a value out of range, or
            a model of more parameters than ``segdemo.limits.current().model_parameters``; the
            size is read from the :func:`skeleton` first, so a refused model is never allocated.
    """
    model_entry, num_classes = _checked(name, in_channels, num_classes, options)
    size = count_parameters(skeleton(name, in_channels, num_classes, **options))
    limit = limits.current().model_parameters
    if size > limit:
        described = "".join(f", {key}={value}" for key, value in options.items())
        raise SettingsError(f"a {name} for {num_classes} classes{described} has {limits.count_text(size)} "
                            f"parameters; segdemo builds models of at most {limits.count_text(limit)} "
                            "(the server's limit, SEGDEMO_MODEL_PARAMETERS)")
    model = model_entry.builder(in_channels=in_channels, num_classes=num_classes, **options)
    model.segdemo_spec = {"name": name, "in_channels": in_channels, "num_classes": num_classes,
                          "options": dict(options)}
    return model
