"""Turning an image into a :class:`~segdemo.prediction.Prediction` with a trained model.

:class:`Segmenter` wraps a model and its checkpoint metadata; :func:`load_segmenter` makes one from a
checkpoint file, :func:`pretrained_segmenter` from torchvision's VOC-label weights.
:meth:`Segmenter.predict` takes an ``(H, W, 3)`` uint8 image and returns its prediction, using the
fastest path that is exact enough on this device, and overlapping tiles for large images so memory
stays bounded.

The fast path is measured, not assumed: it autocasts where :func:`segdemo.runtime.autocast_dtype`
says so (bf16 only where the CPU has it natively: emulated, it is many times *slower* than fp32),
with batch norms folded into their convolutions and ``channels_last`` memory. The first prediction
runs both the fast and the plain fp32 path and keeps the fast one only if ≥ 99.5 % of the label
map agrees.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from . import checkpoints
from .labels import probabilities_to_labels
from .models import count_parameters
from .prediction import Prediction
from .runtime import IMAGENET, autocast_dtype, normalize, resolve_device
from .tasks import MULTICLASS, LabelSpace, check_task, probabilities_from_logits

log = logging.getLogger(__name__)

AGREEMENT_REQUIRED = 0.995
TILE_SIZE = 768          # a multiple of every model's stride (32)
TILE_MARGIN = 64         # context on each side of a tile that is predicted but not kept
TILE_ABOVE_PIXELS = 1024 * 1024


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold every ``Conv2d → BatchNorm2d`` pair inside ``nn.Sequential`` containers into one
    convolution (eval mode only; exact up to rounding). Saves a memory pass per layer."""
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = nn.Identity()
    return model


@dataclass(frozen=True)
class InferencePath:
    """How predictions are computed: dtype under autocast (None = fp32), memory format, folding."""

    autocast_dtype: torch.dtype | None
    channels_last: bool
    folded: bool

    def describe(self) -> str:
        parts = [str(self.autocast_dtype).replace("torch.", "") + " autocast" if self.autocast_dtype else "fp32"]
        if self.channels_last:
            parts.append("channels_last")
        if self.folded:
            parts.append("batch norms folded")
        return ", ".join(parts)


FP32_EAGER = InferencePath(None, False, False)


def fast_path_for(device: torch.device) -> InferencePath:
    """Autocast where it pays on ``device``, ``channels_last``, batch norms folded."""
    return InferencePath(autocast_dtype(device, "auto"), True, True)


class Segmenter(LabelSpace):
    """A model ready to segment images, with what it knows about its classes (``label_names`` and
    ``label_colors`` name the values of its label maps).

    Args:
        model: a segdemo model (its weights are copied; the original is never touched, so a model
            that a thread is training can be snapshotted safely).
        meta: checkpoint metadata (task, classes, colors, normalization, ...).
        device: where to run; default CUDA when available.
        precision: ``"auto"`` (fast path, checked against fp32 on the first image), ``"fast"``
            (fast path unchecked) or ``"fp32"``.
    """

    def __init__(self, model: nn.Module, meta: dict, *, device=None, precision: str = "auto",
                 source: str | None = None):
        if precision not in ("auto", "fast", "fp32"):
            raise ValueError(f"precision must be auto, fast or fp32; got {precision!r}")
        self.meta = meta
        self.task = check_task(meta["task"])
        self.classes = tuple(meta["classes"])
        self.colors = tuple(tuple(int(v) for v in c) for c in meta["colors"])
        self.name = meta.get("title") or meta["model"]["name"]
        self.source = source
        self.device = resolve_device("auto" if device is None else str(device))
        self.normalization = meta.get("normalization")
        with torch.no_grad():
            self.reference = copy.deepcopy(model).eval().to(self.device)
        for parameter in self.reference.parameters():
            parameter.requires_grad_(False)
        self.parameter_count = count_parameters(self.reference)
        self.path = FP32_EAGER
        self._fast_model = None
        self._checked = precision != "auto"
        self.agreement: float | None = None
        self._lock = threading.Lock()
        if precision in ("auto", "fast"):
            self.path = fast_path_for(self.device)
            fast = copy.deepcopy(self.reference)
            if self.path.folded:
                fast = fold_batch_norms(fast)
            if self.path.channels_last:
                fast = fast.to(memory_format=torch.channels_last)
            self._fast_model = fast

    # --- description --------------------------------------------------------------------------
    def card(self) -> dict:
        """What the app shows about this model: architecture, size, data, metrics."""
        spec = self.meta["model"]
        return {
            "name": self.name,
            "architecture": spec["name"],
            "options": spec.get("options", {}),
            "parameters": self.parameter_count,
            "task": self.task,
            "classes": list(self.classes),
            "input channels": spec.get("in_channels", 3),
            "data": self.meta.get("data"),
            "metrics": self.meta.get("metrics"),
            "recipe": self.meta.get("recipe"),
            "inference path": self.path.describe(),
            "device": str(self.device),
            "file": self.source,
            "date": self.meta.get("date"),
        }

    def weight_bytes(self) -> int:
        """Bytes of the weights this segmenter holds (its fp32 reference and, while it is used,
        its fast copy): what keeping it loaded costs."""
        models = [self.reference] + ([self._fast_model] if self._fast_model is not None else [])
        return sum(t.numel() * t.element_size() for model in models
                   for t in (*model.parameters(), *model.buffers()))

    # --- prediction -------------------------------------------------------------------------------
    def _to_input(self, image: np.ndarray) -> torch.Tensor:
        """The image as a ``(1, 3, H, W)`` uint8 tensor: it is normalized to float tile by tile in
        :meth:`_forward`, so a 4000×4000 photo never exists as a whole float copy."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"predict needs an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        image = np.ascontiguousarray(image)
        if not image.flags.writeable:  # gradio hands over read-only arrays; torch wants to own writable memory
            image = image.copy()
        return torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None]

    def _forward(self, model: nn.Module, path: InferencePath, x: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(1, C, h, w)`` of a uint8 ``(1, 3, h, w)`` image or tile."""
        x = normalize(x, self.normalization)
        if path.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if path.autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=path.autocast_dtype):
                logits = model(x)
        else:
            logits = model(x)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        return probabilities_from_logits(logits.float(), self.task)

    def _probabilities(self, model: nn.Module, path: InferencePath, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height * width <= TILE_ABOVE_PIXELS:
            return self._forward(model, path, x)[0]
        return self._tiled(model, path, x)

    def _tiled(self, model: nn.Module, path: InferencePath, x: torch.Tensor) -> torch.Tensor:
        """Predict overlapping tiles and keep each tile's center, so every kept pixel saw at
        least ``TILE_MARGIN`` pixels of context on each side (except at the image edge)."""
        height, width = x.shape[-2:]
        step = TILE_SIZE - 2 * TILE_MARGIN
        out = torch.empty((len(self.classes), height, width), dtype=torch.float32, device=self.device)
        for top in range(0, height, step):
            for left in range(0, width, step):
                # The tile extends TILE_MARGIN before and after the kept block, clipped to the image.
                tile_top, tile_left = max(top - TILE_MARGIN, 0), max(left - TILE_MARGIN, 0)
                tile_bottom = min(top + step + TILE_MARGIN, height)
                tile_right = min(left + step + TILE_MARGIN, width)
                probabilities = self._forward(model, path, x[..., tile_top:tile_bottom, tile_left:tile_right])[0]
                keep_bottom, keep_right = min(top + step, height), min(left + step, width)
                out[:, top:keep_bottom, left:keep_right] = probabilities[
                    :, top - tile_top:keep_bottom - tile_top, left - tile_left:keep_right - tile_left]
        return out

    @torch.inference_mode()
    def predict(self, image: np.ndarray) -> Prediction:
        """The model's prediction for an ``(H, W, 3)`` uint8 image, with its wall time."""
        start = time.perf_counter()
        probabilities = self._predict_probabilities(self._to_input(image))
        return Prediction(probabilities, self.task, self.classes, self.colors, model=self.name,
                          seconds=time.perf_counter() - start, path=self.path.describe())

    def _predict_probabilities(self, x: torch.Tensor) -> np.ndarray:
        if self._fast_model is None:
            return self._probabilities(self.reference, FP32_EAGER, x).cpu().numpy()
        if not self._checked:
            with self._lock:
                if not self._checked:
                    return self._check_fast_path(x)
        return self._probabilities(self._fast_model, self.path, x).cpu().numpy()

    def _check_fast_path(self, x: torch.Tensor) -> np.ndarray:
        fast = self._probabilities(self._fast_model, self.path, x).cpu().numpy()
        exact = self._probabilities(self.reference, FP32_EAGER, x).cpu().numpy()
        agreement = float((probabilities_to_labels(fast, self.task) ==
                           probabilities_to_labels(exact, self.task)).mean())
        self.agreement = agreement
        self._checked = True
        if agreement < AGREEMENT_REQUIRED:
            log.warning("%s: the fast path (%s) agreed with fp32 on only %.2f %% of pixels; using fp32",
                        self.name, self.path.describe(), 100 * agreement)
            self._fast_model, self.path = None, FP32_EAGER
            return exact
        return fast

    # --- teaching -------------------------------------------------------------------------------
    @torch.inference_mode()
    def feature_shapes(self, height: int = 192, width: int = 192) -> list[dict]:
        """Output shape of each stage for one ``height × width`` input, in the order data flows
        (what the tutorials print by hand), from the model's ``stages()`` or top-level children."""
        model = self.reference
        named = model.stages() if hasattr(model, "stages") else list(model.named_children())
        rows: list[dict] = []
        hooks = []
        for label, module in named:
            def record(_module, _inputs, output, label=label, module=module):
                first = output[0] if isinstance(output, (list, tuple)) else output
                rows.append({"stage": label, "output shape": tuple(first.shape),
                             "parameters": count_parameters(module)})
            hooks.append(module.register_forward_hook(record))
        try:
            x = torch.zeros(1, self.meta["model"].get("in_channels", 3), height, width, device=self.device)
            model(x)
        finally:
            for hook in hooks:
                hook.remove()
        return [{"stage": "input", "output shape": (1, x.shape[1], height, width), "parameters": 0}, *rows]


def load_segmenter(path: str | os.PathLike, *, device: str | torch.device | None = None,
                   precision: str = "auto") -> Segmenter:
    """A ready-to-use :class:`Segmenter` from a segdemo checkpoint file (see :mod:`segdemo.checkpoints`
    for what is refused, always with a :class:`~segdemo.errors.CheckpointError`)."""
    payload = checkpoints.read(path)
    model = checkpoints.build_model(payload["meta"], payload["state_dict"], Path(path).name)
    return Segmenter(model, payload["meta"], device=device, precision=precision, source=str(path))


def pretrained_segmenter(name: str, *, weights_path: str | None = None, device=None) -> Segmenter:
    """A Segmenter for one of torchvision's VOC-label models (``lraspp_mobilenet_v3_large`` …)."""
    from .data.voc import CLASSES, COLORS
    from .models import create
    from .models.pretrained import PRETRAINED

    spec = PRETRAINED[name]
    model = create(f"{name}_voc", weights_path=weights_path)
    meta = {"model": {"name": f"{name}_voc", "in_channels": 3, "num_classes": 21, "options": {}},
            "task": MULTICLASS, "classes": list(CLASSES), "colors": [list(c) for c in COLORS],
            "normalization": IMAGENET, "title": f"{name} (VOC, pretrained)",
            "data": {"name": "COCO with VOC labels", "source": "torchvision"},
            "description": spec.description}
    return Segmenter(model, meta, device=device)
