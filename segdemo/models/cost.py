"""What a model costs before it exists: its parameters, the bytes of its weights, and the bytes of
the activations of one forward pass for an input size, read from its
:func:`~segdemo.models.registry.skeleton` on the ``meta`` device, where every tensor has a shape
and a dtype but no memory. Nothing is allocated, so a model that would not fit is measured in
milliseconds and refused before it is built (:func:`~segdemo.models.registry.create` refuses
past the parameter limit; training and inference compare :class:`ModelCost` with
``segdemo.limits.memory_budget()``).

Activations are measured, not derived from a formula per architecture: the skeleton runs a
forward pass on meta tensors while :class:`_ActivationMeter` watches every operation, adds up the
tensors it creates (views and in-place results share their input's memory and are not counted),
and notes when each is freed. So a new model is measured without new code, with its padding,
concatenations and side outputs as they really are.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .registry import count_parameters, skeleton

# The batch the forward passes are measured with (and the figures divided by): batch norm refuses
# to train on one value per channel, which a batch of one at a small size gives the deepest stage.
_MEASURED_BATCH = 2


@dataclass(frozen=True)
class ModelCost:
    """What one model costs, in float32 (mixed precision needs less for activations).

    Attributes:
        parameters: learnable parameters (what the parameter limit counts).
        parameter_bytes: one copy of its weights: parameters and buffers (batch-norm statistics).
        input_hw: the ``(height, width)`` the activations were measured for, or None.
        activation_bytes_per_image: training: the most bytes of activations alive at once in a
            forward pass with autograd (what a step keeps for its backward pass), per image; a
            batch of N takes about N times as much. The backward pass, the gradients (one more
            ``parameter_bytes``) and the optimizer's state (Adam: two more) come on top.
        inference_bytes_per_image: inference: the most bytes of activations alive at once in a
            forward pass without autograd, per image.

    Activations grow with the pixels: for another size, scale by the ratio of the pixel counts
    (each model pads its input to a multiple of its stride first, so small sizes cost a little more).
    They count the tensors the operations create; the process's real peak also holds convolution
    workspaces and what the allocator keeps: on a CPU, U-Nets at 384² and 512² peaked 2–10 % above
    the training figure and 20–30 % above the inference one.
    """

    parameters: int
    parameter_bytes: int
    input_hw: tuple[int, int] | None = None
    activation_bytes_per_image: int | None = None
    inference_bytes_per_image: int | None = None


class _ActivationMeter(TorchDispatchMode):
    """Counts the bytes of every tensor an operation creates, and the most alive at once.

    A result that aliases an input (a view such as a crop, an in-place ReLU) has ``alias_info`` in
    the operation's schema and takes no memory of its own. Meta tensors are freed as real ones
    would be (when the last reference goes), which ``weakref.finalize`` reports."""

    def __init__(self):
        super().__init__()
        self.alive = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        results = result if isinstance(result, (tuple, list)) else (result,)
        for declared, tensor in zip(func._schema.returns, results):
            if isinstance(tensor, torch.Tensor) and declared.alias_info is None:
                size = tensor.numel() * tensor.element_size()
                self.alive += size
                self.peak = max(self.peak, self.alive)
                weakref.finalize(tensor, self._free, size)
        return result

    def _free(self, size: int) -> None:
        self.alive -= size


def _activation_peak(model: torch.nn.Module, in_channels: int, input_hw: tuple[int, int], training: bool) -> int:
    """Peak bytes of activations of one forward pass of ``model`` (a skeleton, or a real model:
    the meter counts the same either way) for one image."""
    model.train(training)
    meter = _ActivationMeter()
    x = torch.empty(_MEASURED_BATCH, in_channels, *input_hw, device=next(model.parameters()).device)
    with torch.inference_mode(not training), meter:
        output = model(x)
    del output
    return meter.peak // _MEASURED_BATCH


_cache: OrderedDict[str, ModelCost] = OrderedDict()  # the latest estimates (API callers choose the keys)
_cache_lock = threading.Lock()
_CACHE_SIZE = 256


def estimate(name: str, in_channels: int = 3, num_classes: int | None = None, *,
             input_hw: tuple[int, int] | None = None, **options) -> ModelCost:
    """What the model ``create(name, in_channels, num_classes, **options)`` would cost, without
    building it.

    Args:
        name, in_channels, num_classes, options: as for :func:`~segdemo.models.create`.
        input_hw: ``(height, width)`` of one input image, to measure the activations for (None:
            the weights only, in milliseconds; with a size it takes a forward pass on meta tensors,
            from 0.1 s for a U-Net to about 1 s for a U²-Net; results are remembered).

    Returns:
        A :class:`ModelCost`. It is not checked against any limit: :func:`~segdemo.models.create`
        refuses a model past the parameter limit, and callers compare the bytes with
        ``segdemo.limits.memory_budget()``.

    Raises:
        SettingsError: (a ``ValueError``) for an unknown model or option, or a value out of its range.
    """
    if input_hw is not None:
        input_hw = (int(input_hw[0]), int(input_hw[1]))
        if min(input_hw) < 1:
            raise ValueError(f"input_hw must be positive, got {input_hw}")
    key = json.dumps([name, in_channels, num_classes, input_hw, sorted(options.items())], default=repr)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    model = skeleton(name, in_channels, num_classes, **options)
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    cost = ModelCost(count_parameters(model), weights, input_hw)
    if input_hw is not None:
        cost = ModelCost(cost.parameters, cost.parameter_bytes, input_hw,
                         activation_bytes_per_image=_activation_peak(model, in_channels, input_hw, training=True),
                         inference_bytes_per_image=_activation_peak(model, in_channels, input_hw, training=False))
    with _cache_lock:
        _cache[key] = cost
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return cost
