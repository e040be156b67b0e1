"""What a model costs before it exists: its parameters, the bytes of its weights, and the bytes of
the activations of one forward pass for an input size, read from its
:func:`~segdemo.models.registry.skeleton` on the ``meta`` device, where every tensor has a shape
and a dtype but no memory. Nothing is allocated, so a model that would not fit is measured in
milliseconds and refused before it is built (:func:`~segdemo.models.registry.create` refuses
past the parameter limit; training and inference compare :class:`ModelCost` with
``segdemo.limits.memory_budget()``).

Activations are measured, not derived from a formula per architecture: the skeleton runs a
forward pass on meta tensors while an :class:`ActivationMeter` watches every operation, follows the
storage of each tensor it creates from creation to release (views and in-place results share their
input's storage and are not counted again) and keeps the peak of the live bytes. So a new model is
measured without new code, with its padding, concatenations and side outputs as they really are.
:func:`measure_peak` runs any callable under the meter: ``segdemo.engine.budget`` traces a whole
training step (forward, loss, backward) with it.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

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
    They count the storages the operations create; the process's real peak also holds convolution
    workspaces and what the allocator keeps: on a CPU, U-Nets at 384² and 512² peaked 20–30 % above
    the inference figure, and 2–10 % above a training figure that counted Python tensors rather than
    storages (and so about 2 % less for these U-Nets: the training figure is now 0–8 % under).
    """

    parameters: int
    parameter_bytes: int
    input_hw: tuple[int, int] | None = None
    activation_bytes_per_image: int | None = None
    inference_bytes_per_image: int | None = None


class ActivationMeter(TorchDispatchMode):
    """Follows the storage of every tensor the operations create while it is on, from creation to
    release, and keeps the most bytes live at once (``peak``).

    A storage is followed by a weak reference to it, not to a Python tensor: autograd keeps the
    tensors it saves for the backward pass in C++, so a storage counts until the last tensor on it
    is gone, wherever held (following Python tensors instead missed up to 12 % of a training
    forward pass, a U²-Net's). A view or an in-place result is on its input's storage and costs
    nothing more. Real tensors are counted as meta ones are; on meta tensors, which have no
    values, a data-dependent branch (``if mask.any()``) takes the branch that real data takes.

    Attributes:
        peak: the most bytes of the storages made under the meter alive at once.
        batch_norm_values: the fewest values per channel a BatchNorm layer saw (None: no BatchNorm).
    """

    def __init__(self):
        super().__init__()
        self.storages: dict[int, tuple] = {}  # address → (weak reference, bytes, its number in order made)
        self.live = self.peak = 0
        self.made = self.made_at_peak = 0     # storages made so far, and when the peak was reached
        self.batch_norm_values: int | None = None

    def _sweep(self) -> None:
        """Forget the storages freed since the last sweep."""
        for key, (ref, size, _) in list(self.storages.items()):
            if ref.expired():
                del self.storages[key]
                self.live -= size

    def _add(self, storage) -> None:
        key = storage._cdata
        known = self.storages.get(key)
        if known is not None and not known[0].expired():
            return  # a view, or an in-place result: the same storage
        if known is not None:
            self.live -= known[1]  # freed, and its address taken by a new one
        self.made += 1
        self.storages[key] = (StorageWeakRef(storage), storage.nbytes(), self.made)
        self.live += storage.nbytes()
        if self.live > self.peak:
            self._sweep()  # only when it might be a new peak: sweeping costs a pass over all
            if self.live > self.peak:
                self.peak, self.made_at_peak = self.live, self.made

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and args[0].is_meta:
            return True if args[0].dtype == torch.bool else 1
        name = func.__name__
        if "batch_norm" in name and "backward" not in name and args and isinstance(args[0], torch.Tensor) \
                and args[0].dim() >= 2:
            values = args[0].numel() // max(1, args[0].shape[1])
            self.batch_norm_values = values if self.batch_norm_values is None else min(self.batch_norm_values, values)
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._add(tensor.untyped_storage())
        return out

    def live_at_peak(self, tensors: Iterable[torch.Tensor]) -> int:
        """Bytes of ``tensors`` (alive now) whose storages were live at the peak: made under the
        meter no later than it (a storage alive now was alive all the time since it was made)."""
        total = 0
        for tensor in tensors:
            known = self.storages.get(tensor.untyped_storage()._cdata)
            if known is not None and not known[0].expired() and known[2] <= self.made_at_peak:
                total += known[1]
        return total


def measure_peak(run: Callable, *args, **kwargs) -> ActivationMeter:
    """Run ``run(*args, **kwargs)`` (on meta tensors: nothing is allocated) under a fresh
    :class:`ActivationMeter` and return the meter: its ``peak`` is the most bytes alive at once
    of what the call made (not of what existed before, such as its inputs and weights)."""
    meter = ActivationMeter()
    with meter:
        run(*args, **kwargs)
    return meter


def _activation_peak(model: torch.nn.Module, in_channels: int, input_hw: tuple[int, int], training: bool) -> int:
    """Peak bytes of activations of one forward pass of ``model`` (a skeleton, or a real model:
    the meter counts the same either way) for one image."""
    model.train(training)
    x = torch.empty(_MEASURED_BATCH, in_channels, *input_hw, device=next(model.parameters()).device)
    with torch.inference_mode(not training):
        return measure_peak(model, x).peak // _MEASURED_BATCH


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
