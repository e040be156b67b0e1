"""Probes: a few fixed validation images predicted as the run trains, so a student can scrub back
through what the network saw at each moment.

A run with ``TrainConfig.probe_images`` > 0 picks that many validation images once
(:func:`probe_items`), and at the steps :func:`probe_due` names it predicts them in one batch
(:func:`probe_frame`): a :class:`~.events.ProbeFrame` holds the step, the time, the Dice over the
probes and a small picture (input | truth | prediction for each probe, PNG bytes). The steps are
dense early, where the prediction changes most, and spread out later: every step up to
``2 · FRAMES_PER_DOUBLING``, then ``FRAMES_PER_DOUBLING`` frames for each doubling of the step count
(about 70 frames over the 1800 steps of a 3-minute live run, 15 more for ten times as many steps).
At some frames (at most one each :data:`FEATURE_SECONDS`) the run also shows what is inside the
network: a :class:`~.events.FeatureMaps` of the first probe (:mod:`segdemo.features`).

Cost: the issue allows watching to slow a run by 5 %. One frame of 4 probes took 32 ms (median) on
2 cores of an AVX-512 EPYC and one feature-map picture 74 ms; with a 4 % budget they took 4.5 % of
60 s runs, whose steps also ran about 2 % slower (``bench/bench_probes.py``, BENCHMARKS.md), so the
budget is 2.5 %; frames get rarer as the run goes. A budget makes it a bound on any machine: a due frame
is skipped while frames and feature maps have taken more than :data:`COST_SHARE` of the training
time so far (counted as at least :data:`COST_HORIZON` seconds, so the dense early frames fit), so
that frames keep coming to the end of the run; the frames made while the precision trial runs are
not counted (:meth:`Probes.after_step`), and the run's last step always gets one (:meth:`Probes.at_end`).
``bench/bench_probes.py`` measures runs with and without.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from .. import viz
from ..features import FeaturesUnavailable, feature_maps, font_for_labels, named_stages, stage_card, u_picture
from ..files import json_safe
from ..image_files import png_bytes
from ..metrics import SegmentationMetrics
from ..prediction import Prediction
from ..tasks import MULTICLASS, probabilities_from_logits
from .events import FeatureMaps, ProbeFrame
from .setup import Progress, TrainingSetup

FRAMES_PER_DOUBLING = 8     # probe frames per doubling of the step count (after every one of the first 16)
PROBE_SIDE = 256            # probe images are cut to their centre, at most this many pixels a side
THUMBNAIL_SIDE = 96         # pixels a side of each picture in a frame's strip
FEATURE_SECONDS = 10.0      # at most one FeatureMaps event this often (each costs a forward with hooks)
COST_SHARE = 0.025          # frames and feature maps may take at most this share of the training time …
COST_HORIZON = 60.0         # … counted as at least this many seconds (the dense first frames fit in it)


def probe_gap(step: int) -> int:
    """Steps between probe frames around ``step``: 1 up to ``2 · FRAMES_PER_DOUBLING``, then
    doubling with each doubling of the step (a power of two, so frames fall on round steps)."""
    if step < 2 * FRAMES_PER_DOUBLING:
        return 1
    return 2 ** int(math.log2(step / FRAMES_PER_DOUBLING))


def probe_due(step: int) -> bool:
    """Whether step ``step`` (counted from 1) gets a probe frame. Stateless, so a resumed run
    keeps the same schedule."""
    return step >= 1 and step % probe_gap(step) == 0


def probe_items(val_set, count: int, side: int = PROBE_SIDE) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` validation items spread over ``val_set`` (fixed for the run) as one batch:
    uint8 images ``(N, 3, H, W)`` and their targets. Each is cut to its centre, at most ``side``
    pixels a side (a frame's cost stays that of the shapes' 192×192 images or near it, whatever the
    data: DRIVE's are 565×584), and to the smallest of them, so that they stack."""
    count = min(count, len(val_set))
    indices = np.linspace(0, len(val_set) - 1, count).round().astype(int)
    items = [val_set[int(index)] for index in indices]
    height = min(side, *(image.shape[-2] for image, _ in items))
    width = min(side, *(image.shape[-1] for image, _ in items))

    def centred(tensor):
        top, left = (tensor.shape[-2] - height) // 2, (tensor.shape[-1] - width) // 2
        return tensor[..., top:top + height, left:left + width]

    return (torch.stack([centred(image) for image, _ in items]),
            torch.stack([centred(target) for _, target in items]))


def truth_picture(image: np.ndarray, target: np.ndarray, task: str, colors) -> np.ndarray:
    """A ground truth drawn over its ``(H, W, 3)`` image as predictions are drawn: a multiclass
    ``(H, W)`` label map, or ``(C, H, W)`` 0/1 masks (255 ignored)."""
    if task == MULTICLASS:
        return viz.overlay_labels(image, target, colors)
    return viz.overlay_masks(image, target == 1, colors)


def frame_strip(images: np.ndarray, truths: list[np.ndarray], predictions: list[np.ndarray],
                side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """One picture of the probes, two per row, each as input | truth | prediction thumbnails of
    at most ``side`` pixels: ``(H, W, 3)`` uint8."""
    triples = [viz.side_by_side(*(viz.downscale(np.ascontiguousarray(p), side) for p in triple), gap=2)
               for triple in zip(images, truths, predictions)]
    if len(triples) % 2:
        triples.append(np.full_like(triples[0], 255))
    rows = [viz.side_by_side(*triples[index:index + 2], gap=8) for index in range(0, len(triples), 2)]
    gap = np.full((8, rows[0].shape[1], 3), 255, dtype=np.uint8)
    parts = []
    for index, row in enumerate(rows):
        parts += [gap, row] if index else [row]
    return np.concatenate(parts, axis=0)


class Probes:
    """A run's probe images, and the frames and feature maps made of them.

    Args:
        setup: the run's objects (model, precision, labels).
        count: how many validation images to probe (the first ``count`` spread over the set).
    """

    def __init__(self, setup: TrainingSetup, count: int):
        self.setup = setup
        self.images, self.targets = probe_items(setup.val_set, count)
        pictures = self.images.permute(0, 2, 3, 1).numpy()
        info = setup.info
        self._inputs = [np.ascontiguousarray(p) for p in pictures]
        self._truths = [truth_picture(p, t.numpy(), info.task, info.colors) for p, t in zip(pictures, self.targets)]
        self._features_at: float | None = None
        self.spent = 0.0                     # seconds of frames and feature maps so far
        self.last_step: int | None = None    # of the latest frame
        viz.heat_picture(np.zeros((2, 2), np.float32))   # builds its color table (imports matplotlib) now,
        font_for_labels()                                # and loads the font: not in the first frame's time
        try:
            named_stages(setup.model)
            self.has_stages = True
        except FeaturesUnavailable:
            self.has_stages = False

    @torch.inference_mode()
    def frame(self, progress: Progress) -> ProbeFrame:
        """Predict the probes with the weights as they are now (eval mode, the run's precision;
        train mode again after) and draw them."""
        setup, info = self.setup, self.setup.info
        started = time.perf_counter()
        setup.model.eval()
        try:
            images, target = setup.prepare(self.images, self.targets)
            with setup.autocast():
                logits = setup.model(images)
            logits = (logits[0] if isinstance(logits, (list, tuple)) else logits).float()
        finally:
            setup.model.train()
        metrics = SegmentationMetrics(info.task, info.num_classes, roc=False)
        metrics.update(logits, target)
        probabilities = probabilities_from_logits(logits, info.task).cpu().numpy()
        predictions = [viz.overlay(picture, Prediction(p, info.task, info.classes, info.colors))
                       for picture, p in zip(self._inputs, probabilities)]
        strip = frame_strip(self._inputs, self._truths, predictions)
        return ProbeFrame(step=progress.step, dice=json_safe(metrics.compute()["mean_dice"]),
                          image=png_bytes(strip), probe_seconds=time.perf_counter() - started,
                          elapsed=progress.elapsed())

    def features_due(self) -> bool:
        """Whether a frame now should also show the feature maps (the first, then at most one
        each :data:`FEATURE_SECONDS`; never for a model without named stages)."""
        if not self.has_stages:
            return False
        return self._features_at is None or time.perf_counter() - self._features_at >= FEATURE_SECONDS

    def features(self, progress: Progress) -> FeatureMaps:
        """The first probe's feature maps at every stage of the model as it is now."""
        self._features_at = started = time.perf_counter()
        setup = self.setup
        stages = feature_maps(setup.model, self.images[0], setup.normalization, device=setup.device,
                              autocast=setup.autocast)
        return FeatureMaps(step=progress.step, stages=[(s.name, s.shape) for s in stages],
                           pictures=[png_bytes(stage_card(s)) for s in stages],
                           image=png_bytes(u_picture(stages, self._inputs[0], skips=getattr(setup.model, "skips", True))),
                           feature_seconds=time.perf_counter() - started, elapsed=progress.elapsed())

    def within_budget(self, progress: Progress) -> bool:
        """Whether frames and feature maps have taken at most :data:`COST_SHARE` of the training
        time so far (at least :data:`COST_HORIZON` seconds of it)."""
        return self.spent <= COST_SHARE * max(progress.elapsed(), COST_HORIZON)

    def _emit_frame(self, progress: Progress, emit, counted: bool = True) -> None:
        frame = self.frame(progress)
        self.spent += frame.probe_seconds if counted else 0.0
        self.last_step = progress.step
        emit(frame)

    def at_end(self, progress: Progress, emit) -> None:
        """The run has ended (its limit, its last epoch, a Stop): a last frame of the weights it
        ends with, whatever the budget, unless its latest frame shows them already. Without it a
        timeline whose budget ran out showed a run "at the end" as it was long before (a 30 s lesson
        run at step 96 of 241): one frame, 20-45 ms, once a run."""
        if progress.step >= 1 and self.last_step != progress.step:
            self._emit_frame(progress, emit)

    def after_step(self, progress: Progress, emit) -> None:
        """At a step :func:`probe_due` names, emit a frame (and now and then the feature maps),
        unless they have used up their share of the run's time.

        While the run's precision trial alternates fp32 and bf16 (its first steps), the frames are
        made but not counted: the first frame in each precision builds that precision's kernels for
        the probes' batch (0.3-0.85 s on 2 EPYC cores, against 20-30 ms for a frame after), a cost
        of the trial's, once a run. Counted, it used up the budget of a 30 s lesson run by its step
        16, and of a 300 s run on a busy machine until its step 104. The log still has every frame's
        time (``probe_seconds``), which bench_probes adds up."""
        if not probe_due(progress.step):
            return
        warming_up = self.setup.precision_trial is not None
        if not warming_up and not self.within_budget(progress):
            return
        self._emit_frame(progress, emit, counted=not warming_up)
        if self.features_due() and (warming_up or self.within_budget(progress)):
            features = self.features(progress)
            self.spent += 0.0 if warming_up else features.feature_seconds
            emit(features)
