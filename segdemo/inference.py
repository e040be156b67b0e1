"""Turning an image into a :class:`~segdemo.prediction.Prediction` with a trained model.

:class:`Segmenter` wraps a model and its checkpoint metadata; :func:`load_segmenter` makes one from a
checkpoint file, :func:`pretrained_segmenter` from torchvision's VOC-label weights.
:meth:`Segmenter.predict` takes an ``(H, W, 3)`` uint8 image and returns its prediction, using the
fastest path that is exact enough on this device, and overlapping tiles for large images so memory
stays bounded.

The fast path is measured, not assumed: it autocasts where :func:`segdemo.runtime.autocast_dtype`
says so (bf16 only where the CPU has it natively: emulated, it is many times *slower* than fp32),
with batch norms folded into their convolutions and ``channels_last`` memory. Before its first
prediction a segmenter runs a fixed internal image (a shapes image, :func:`probe_image`) through
both the fast and the plain fp32 path and keeps the fast one only if ≥ 99.5 % of the label map
agrees: the path is the same for every visitor, whatever the first one sends (a noise image as
U²-Net(P)'s first input agreed on only 99.47 % and would have put everybody on fp32, 3× slower).
Where the fast path autocasts, the probe image is then timed with and without the autocast (still
folded and channels_last), and the faster is kept (:attr:`Segmenter.probe_seconds`).

The same probe counts the model's work per pixel (the multiply-adds of its convolutions), so that
:meth:`Segmenter.work` says what an image will cost before anything runs: the app refuses or
downscales what is over a request's budget (:mod:`segdemo.limits`). A :class:`~segdemo.limits.Deadline`
given to :meth:`Segmenter.predict` is checked before every convolution, so a request past its time,
or one whose visitor has gone, stops within a fraction of a second.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from . import checkpoints
from .domain import DOMAIN_TEXT, model_domain
from .labels import probabilities_to_labels
from .limits import Deadline
from .models import count_parameters
from .prediction import Prediction
from .predictor import Predictor
from .runtime import (
    IMAGENET,
    DeviceClock,
    autocast_dtype,
    normalize,
    resolve_device,
    use_threads,
)
from .tasks import MULTICLASS, check_task, probabilities_from_logits

log = logging.getLogger(__name__)

AGREEMENT_REQUIRED = 0.995
TILE_SIZE = 768          # a multiple of every model's stride (32)
TILE_MARGIN = 64         # context on each side of a tile that is predicted but not kept
TILE_ABOVE_PIXELS = 1024 * 1024
PROBE_SIDE = 192         # the fixed image that decides the fast path and measures the work per pixel

_request = threading.local()   # the deadline of the prediction running in this thread


def probe_image() -> np.ndarray:
    """The fixed ``(192, 192, 3)`` image every segmenter is checked and measured on (shapes, seed 0)."""
    from .data import shapes

    return shapes.generate(1, PROBE_SIDE, seed=0)[0][0]


def _check_deadline(_module, _inputs) -> None:
    """A forward pre-hook on every convolution: stop the prediction of this thread past its deadline."""
    deadline = getattr(_request, "deadline", None)
    if deadline is not None:
        deadline.check()


def _watch_convolutions(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            module.register_forward_pre_hook(_check_deadline)
    return model


@contextlib.contextmanager
def _counting_flops(model: nn.Module):
    """Count, while inside, the floating-point operations of ``model``'s convolutions and linear
    layers (2 per multiply-add) into the one-element list it yields; the rest (activations,
    norms, resizing) is comparatively cheap."""
    total = [0.0]

    def conv(module, _inputs, output):
        total[0] += 2.0 * output.numel() * math.prod(module.kernel_size) * module.in_channels // module.groups

    def transposed(module, inputs, _output):
        total[0] += 2.0 * inputs[0].numel() * math.prod(module.kernel_size) * module.out_channels // module.groups

    def linear(module, _inputs, output):
        total[0] += 2.0 * output.numel() * module.in_features

    kinds = ((nn.Conv2d, conv), (nn.ConvTranspose2d, transposed), (nn.Linear, linear))
    hooks = [module.register_forward_hook(count) for module in model.modules()
             for kind, count in kinds if isinstance(module, kind)]
    try:
        yield total
    finally:
        for hook in hooks:
            hook.remove()


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


class Segmenter(Predictor):
    """A model ready to segment images, with what it knows about its classes (``label_names`` and
    ``label_colors`` name the values of its label maps).

    Args:
        model: a segdemo model (its weights are copied; the original is never touched, so a model
            that a thread is training can be snapshotted safely).
        meta: checkpoint metadata (task, classes, colors, normalization, ...).
        device: where to run; default CUDA when available.
        precision: ``"auto"`` (fast path, checked against fp32 on the probe image, its autocast kept
            only if it runs faster there), ``"fast"``
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
        self._precision = precision
        self._probed = False
        self.agreement: float | None = None
        self.probe_seconds: dict[str, float] = {}   # inference path → its time on the probe image
        self._flop_per_pixel: float | None = None
        self._lock = threading.Lock()
        if precision in ("auto", "fast"):
            self.path = fast_path_for(self.device)
            fast = copy.deepcopy(self.reference)
            if self.path.folded:
                fast = fold_batch_norms(fast)
            if self.path.channels_last:
                fast = fast.to(memory_format=torch.channels_last)
            self._fast_model = _watch_convolutions(fast)
        _watch_convolutions(self.reference)

    # --- description --------------------------------------------------------------------------
    def card(self) -> dict:
        """What the app shows about this model: architecture, size, domain (what images it knows), data,
        metrics."""
        spec = self.meta["model"]
        return {
            "name": self.name,
            "architecture": spec["name"],
            "options": spec.get("options", {}),
            "parameters": self.parameter_count,
            "task": self.task,
            "classes": list(self.classes),
            "domain": DOMAIN_TEXT[model_domain(self.meta)],
            "input channels": spec.get("in_channels", 3),
            "data": self.meta.get("data"),
            "metrics": self.meta.get("metrics"),
            "recipe": self.meta.get("recipe"),
            "inference path": self.path.describe(),
            "work per megapixel": f"{self.flop_per_pixel / 1e3:.0f} GFLOP",
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

    @staticmethod
    def tiles(height: int, width: int):
        """The tiles of an image of ``height × width``: ``(tile box, kept box)`` per tile, each box
        ``(top, left, bottom, right)``; one whole-image tile up to ``TILE_ABOVE_PIXELS``.

        Each tile extends ``TILE_MARGIN`` before and after the block it keeps, clipped to the
        image, so every kept pixel saw at least that much context on each side (except at the
        image's edge)."""
        if height * width <= TILE_ABOVE_PIXELS:
            yield (0, 0, height, width), (0, 0, height, width)
            return
        step = TILE_SIZE - 2 * TILE_MARGIN
        for top in range(0, height, step):
            for left in range(0, width, step):
                tile = (max(top - TILE_MARGIN, 0), max(left - TILE_MARGIN, 0),
                        min(top + step + TILE_MARGIN, height), min(left + step + TILE_MARGIN, width))
                yield tile, (top, left, min(top + step, height), min(left + step, width))

    def _tiled(self, model: nn.Module, path: InferencePath, x: torch.Tensor) -> torch.Tensor:
        """Predict overlapping tiles and keep each tile's center (see :meth:`tiles`)."""
        height, width = x.shape[-2:]
        out = torch.empty((len(self.classes), height, width), dtype=torch.float32, device=self.device)
        for (tile_top, tile_left, tile_bottom, tile_right), (top, left, bottom, right) in self.tiles(height, width):
            probabilities = self._forward(model, path, x[..., tile_top:tile_bottom, tile_left:tile_right])[0]
            out[:, top:bottom, left:right] = probabilities[
                :, top - tile_top:bottom - tile_top, left - tile_left:right - tile_left]
        return out

    # --- cost -------------------------------------------------------------------------------------
    @property
    def flop_per_pixel(self) -> float:
        """The model's work per input pixel (floating-point operations of its convolutions),
        measured once on the probe image: 22 k for the 8-wide shipped U-Net, 394 k for U²-Net(P)."""
        self._probe()
        return self._flop_per_pixel

    def work(self, height: int, width: int) -> tuple[float, int]:
        """``(floating-point operations, bytes)`` that predicting a ``height × width`` image takes:
        the model's work over every tile (margins predicted twice included), and the memory that
        grows with the image (its probabilities, the input, a label map and pictures; the model's
        own activations are bounded by the tile size)."""
        pixels = sum((bottom - top) * (right - left) for (top, left, bottom, right), _ in self.tiles(height, width))
        return self.flop_per_pixel * pixels, self.answer_bytes(height, width)

    # --- prediction -------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, image: np.ndarray, *, deadline: Deadline | None = None, threads: int | None = None) -> Prediction:
        """The model's prediction for an ``(H, W, 3)`` uint8 image, with its wall time. With a
        ``deadline``, it stops with :class:`~segdemo.errors.LimitError` once that has passed; with
        ``threads``, the calling thread predicts with that many torch threads (and keeps them:
        :func:`~segdemo.runtime.use_threads`)."""
        x = self._to_input(image)
        if threads is not None:
            use_threads(threads)
        self._probe()
        start = time.perf_counter()
        _request.deadline = deadline
        try:
            if deadline is not None:
                deadline.check()
            model, path = (self._fast_model, self.path) if self._fast_model is not None else (self.reference, FP32_EAGER)
            probabilities = self._probabilities(model, path, x).cpu().numpy()
        finally:
            _request.deadline = None
        return Prediction(probabilities, self.task, self.classes, self.colors, model=self.name,
                          seconds=time.perf_counter() - start, path=self.path.describe())

    @torch.inference_mode()
    def _probe(self) -> None:
        """Once: measure the work per pixel on :func:`probe_image` and, for ``precision="auto"``,
        keep the fast path only if it agrees with fp32 there."""
        if self._probed:
            return
        with self._lock:
            if self._probed:
                return
            x = self._to_input(probe_image())
            with _counting_flops(self.reference) as flop:
                exact = self._forward(self.reference, FP32_EAGER, x).cpu().numpy()
            self._flop_per_pixel = flop[0] / (PROBE_SIDE * PROBE_SIDE)
            if self._precision == "auto" and self._fast_model is not None:
                fast = self._forward(self._fast_model, self.path, x).cpu().numpy()
                self.agreement = float((probabilities_to_labels(fast, self.task) ==
                                        probabilities_to_labels(exact, self.task)).mean())
                if self.agreement < AGREEMENT_REQUIRED:
                    log.warning("%s: the fast path (%s) agreed with fp32 on only %.2f %% of the probe image's "
                                "pixels; using fp32", self.name, self.path.describe(), 100 * self.agreement)
                    self._fast_model, self.path = None, FP32_EAGER
                elif self.path.autocast_dtype is not None:
                    self.path = self._faster_of([self.path, replace(self.path, autocast_dtype=None)], x)
            self._probed = True

    def _faster_of(self, paths: list[InferencePath], x: torch.Tensor) -> InferencePath:
        """Of the fast model's ``paths``, the one that runs the probe input ``x`` faster here, timed
        (median of 3 after a warm-up): autocast was measured slower than fp32 for the small models
        at 192×192 on an H200 (0.81–0.93×) and faster on larger images, so it is timed rather than
        assumed. ``probe_seconds`` keeps the times."""
        self.probe_seconds = {}
        for path in paths:
            clock, times = DeviceClock(self.device), []
            for _ in range(4):
                clock.start()
                self._forward(self._fast_model, path, x)
                times.append(clock.stop())
            self.probe_seconds[path.describe()] = sorted(times[1:])[1]
        return min(paths, key=lambda path: self.probe_seconds[path.describe()])

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
    from .models import create

    model = create(f"{name}_voc", weights_path=weights_path)
    return Segmenter(model, pretrained_meta(name), device=device)


def pretrained_meta(name: str) -> dict:
    """The metadata of one of torchvision's VOC-label models, as a checkpoint would carry it."""
    from .data.voc import CLASSES, COLORS
    from .models.pretrained import PRETRAINED

    return {"model": {"name": f"{name}_voc", "in_channels": 3, "num_classes": 21, "options": {}},
            "task": MULTICLASS, "classes": list(CLASSES), "colors": [list(c) for c in COLORS],
            "normalization": IMAGENET, "title": f"{name} (VOC, pretrained)",
            "data": {"name": "COCO with VOC labels", "source": "torchvision"},
            "description": PRETRAINED[name].description}
