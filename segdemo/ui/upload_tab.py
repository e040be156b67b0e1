"""The Upload tab: segment your own image, optionally against its ground truth.

The network runs once per image; threshold and opacity re-render from the stored prediction.
Also the ``/segment`` API endpoint: image file + model name → overlay, label-map PNG, class
fractions. An image plainly outside the model's domain (a photo given to the shapes model,
measured by :mod:`segdemo.domain`) is segmented all the same, with a warning that points to the
models that fit: a toast and a line of the summary on the page, a ``warning`` in ``/segment``'s
info.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import cv2
import gradio as gr
import numpy as np

from .. import viz
from ..domain import describe_image, image_kind
from ..image_files import check_sizes_match, image_size, read_label_map
from ..labels import fit_ground_truth
from ..prediction import Prediction
from ..tasks import BINARY, IGNORE_INDEX
from .budget import read_within_budget, refuse_over_budget, shrunk_note
from .context import INFERENCE, AppContext
from .files import checked_upload, png_file, required_upload
from .messages import handler, refuse
from .widgets import DISPLAY_SIDE, format_dice, hex_color, live_dropdown

log = logging.getLogger(__name__)

# What /segment logs at DEBUG for each call, in milliseconds (bench/bench_load.py reads it).
SEGMENT_PHASES = ("read", "model", "overlay", "png")

EXPLAIN = """
**Reading the results.** The overlay colors each pixel by the class the model gives it; the label
map shows the same without the photo. Each output channel is one class's probability (dark = 0,
bright = 1): the network's last 1×1 convolution turns its features into one such map per class,
and the overlay is just these maps thresholded (multi-label, binary) or compared (multiclass).
With a ground truth, the error map shows hits in green, false alarms in red, misses in blue and
wrong classes in orange. DRIVE images (`.tif`) with their `.gif` manual annotation and Pascal VOC
photos (`.jpg`) with their palette `.png` labels are read as they come. A DRIVE field-of-view mask
(`*_mask.gif`) tells the classical vessel filter where the retina is, and its metrics then count
only the retina, as DRIVE's benchmark does. For a binary task, Dice is the F1 score.
"""


@dataclass
class Shown:
    """One segmented upload at display size, kept per visitor to re-render without the network."""

    image: np.ndarray                 # (h, w, 3)
    prediction: Prediction            # at the same size, float16 (half the memory a visitor holds)
    truth: np.ndarray | None          # ground-truth label map at the same size (255 = ignored)
    info: str


def segment_upload(context: AppContext, image, ground_truth, model, threshold, opacity, field_of_view=None,
                   request: gr.Request = None):
    """Run ``model`` on an uploaded ``image`` (and score it against its ``ground_truth`` mask, if
    any); the pictures, the metrics and what is kept for re-rendering. A ``field_of_view`` mask (a
    DRIVE ``*_mask.gif``) is used by the models that take one (the classical vessel filter): they
    look only inside it, and their metrics count only its pixels; other models ignore it."""
    image_path = required_upload(image, "image", "upload an image first")
    catalog = context.workspace(request).catalog
    segmenter = catalog.get(model)
    mask_path = checked_upload(ground_truth, "mask")
    if mask_path:
        check_sizes_match(image_size(image_path), image_size(mask_path), "ground-truth mask")
    fov_path = checked_upload(field_of_view, "field-of-view mask")
    used_fov = bool(fov_path) and segmenter.uses_field_of_view
    if used_fov:
        check_sizes_match(image_size(image_path), image_size(fov_path), "field-of-view mask")
    picture, sent = read_within_budget(image_path, [segmenter])
    truth, options = None, {}
    if mask_path:  # read before predicting: a mask that does not fit is reported at once
        truth = read_label_map(mask_path, palette=segmenter.label_colors, shrink_to=picture.shape[:2])
        truth = fit_ground_truth(truth, segmenter.task, segmenter.label_names, model=segmenter.name)
    kind = describe_image(picture)
    warning = catalog.domain_warning(model or catalog.default, kind.kind)
    if used_fov:
        options["field_of_view"] = fov = read_label_map(fov_path, shrink_to=picture.shape[:2]) > 0
        if truth is not None:  # scored on the retina only, as DRIVE's benchmark is
            truth = np.where(fov, truth, IGNORE_INDEX).astype(np.uint8)
    prediction = segmenter.predict(picture, deadline=context.deadline(request), threads=context.request_threads(),
                                   **options)
    shown = viz.downscale(picture, DISPLAY_SIDE)
    height, width = shown.shape[:2]
    info = (f"**{prediction.model}** on a {picture.shape[1]}×{picture.shape[0]} image: "
            f"{1000 * prediction.seconds:.0f} ms ({prediction.path}, {segmenter.device})")
    if shown is not picture:
        info += f"; shown at {width}×{height}"
        truth = None if truth is None else cv2.resize(truth, (width, height), interpolation=cv2.INTER_NEAREST)
    note = shrunk_note(picture, sent)
    info += f".{note}" if note else ""
    if fov_path and not used_fov:
        info += f" The field-of-view mask was not used: {segmenter.name} looks at the whole image."
    if warning:
        gr.Warning(warning)
        info += f"\n\n**Outside this model's domain.** {warning} (Measured: {kind.reason}.)"
    kept = Shown(shown, prediction.resized(height, width, dtype=np.float16), truth, info)
    return (*render(kept, threshold, opacity), kept)


def render(shown: Shown | None, threshold, opacity):
    """Pictures and metrics from a kept prediction (no network): annotated overlay, label map,
    channel maps, metrics table, error map, info."""
    from ..metrics import score  # imports torch: not before the app has served its page

    if shown is None:
        raise refuse("segment an image first")
    prediction = shown.prediction
    # The classes viz.overlay draws, blended by the page at ``opacity``, so that a click on the
    # legend can highlight one class.
    regions = viz.class_masks(prediction, threshold=threshold)
    annotated = gr.AnnotatedImage(value=(shown.image, [(mask * np.float32(opacity), name) for name, _, mask in regions]),
                                  color_map={name: hex_color(color) for name, color, _ in regions})
    label_map = viz.colorize_labels(prediction.labels(threshold), prediction.label_colors)
    channels = [(picture, f"channel {i}: {name}") for i, (picture, name) in
                enumerate(zip(viz.channel_maps(prediction), prediction.classes))]
    table = {"headers": ["class", "Dice (F1)" if prediction.task == BINARY else "Dice", "IoU"], "data": []}
    errors = None
    if shown.truth is not None:
        metrics = score(prediction, shown.truth, threshold)
        rows = [[name, format_dice(d), format_dice(i)] for name, d, i in
                zip(prediction.classes, metrics["dice"], metrics["iou"])]
        rows.append(["mean", format_dice(metrics["mean_dice"]), format_dice(metrics["miou"])])
        rows.append(["pixel accuracy", format_dice(metrics["pixel_accuracy"]), ""])
        rows += [[key, format_dice(metrics[key]), ""] for key in ("sensitivity", "specificity", "auc") if key in metrics]
        table["data"] = rows
        errors = viz.error_map(prediction, shown.truth, threshold=threshold)
    return annotated, label_map, channels, table, errors, shown.info


def segment_image(context: AppContext, image, model, request: gr.Request):
    """``/segment``: overlay image (at most 1600 px a side), full-size label-map PNG (palette;
    pixel value = label index) and an info dict: the model, the fraction of pixels of each label
    and, only for an image plainly outside the model's domain, a ``warning`` naming the models that
    fit. An image larger than one request may ask of the model (in a shared app) is refused with
    what would fit."""
    laps = [time.perf_counter()]
    image_path = required_upload(image, "image", "send an image file")
    catalog = context.workspace(request).catalog
    segmenter = catalog.get(model or None)
    picture = refuse_over_budget(image_path, segmenter)  # the label map is data: never downscaled
    warning = catalog.domain_warning(model or catalog.default, image_kind(picture))
    laps.append(time.perf_counter())
    prediction = segmenter.predict(picture, deadline=context.deadline(request), threads=context.request_threads())
    laps.append(time.perf_counter())
    shown = viz.downscale(picture, DISPLAY_SIDE)
    overlay = viz.overlay(shown, prediction if shown is picture else prediction.resized(*shown.shape[:2]))
    laps.append(time.perf_counter())
    files = (png_file(overlay, "overlay.png"), png_file(prediction.labels(), "labels.png", palette=prediction.label_colors))
    laps.append(time.perf_counter())
    log.debug("segment timing %s", json.dumps({"images": 1, **{phase: round(1e3 * (end - begin), 2) for phase, begin, end
                                                               in zip(SEGMENT_PHASES, laps, laps[1:])}}))
    info = {"model": prediction.model, "fractions": prediction.fractions()}
    if warning:
        info["warning"] = warning
    return (*files, info)


def build(context: AppContext, model_choices: list[str]) -> dict:
    gr.Markdown("Segment your own image: any common format, DRIVE `.tif` retina images, Pascal VOC `.jpg` photos.")
    kept = gr.State(None)
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            image_file = gr.File(label="image", file_types=["image", ".tif", ".tiff", ".gif"], elem_id="upload-image")
            mask_file = gr.File(label="ground-truth mask (optional: DRIVE .gif, VOC palette .png, index PNG)",
                                file_types=["image", ".gif", ".png", ".tif"], elem_id="upload-mask")
            fov_file = gr.File(label="field-of-view mask (optional: DRIVE *_mask.gif)",
                               file_types=["image", ".gif", ".png", ".tif"], elem_id="upload-fov")
            model = live_dropdown(model_choices, value=model_choices[0] if model_choices else None, label="model",
                                  elem_id="upload-model")
            run = gr.Button("Segment", variant="primary", elem_id="upload-run")
            threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="threshold (multi-label and binary)")
            opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="opacity")
        with gr.Column(scale=3):
            info = gr.Markdown(label="summary", elem_id="upload-info")
            annotated = gr.AnnotatedImage(label="overlay (click a class in the legend to highlight it)",
                                          format="png", elem_id="upload-overlay")
            with gr.Row():
                label_map = gr.Image(label="label map", format="png", type="numpy", elem_id="upload-labels")
                errors = gr.Image(label="error map (with a ground truth)", format="png", type="numpy",
                                  elem_id="upload-errors")
            metrics = gr.Dataframe(label="metrics (with a ground truth)", interactive=False, elem_id="upload-metrics")
            channels = gr.Gallery(label="output channels", columns=6, height="auto", object_fit="contain", format="png",
                                  elem_id="upload-channels")
            gr.Markdown(EXPLAIN, elem_classes="segdemo-explain")
    outputs = [annotated, label_map, channels, metrics, errors, info]
    run.click(handler(segment_upload, context, heavy=True), [image_file, mask_file, model, threshold, opacity, fov_file],
              [*outputs, kept], api_name="segment_upload", concurrency_id=INFERENCE)
    for slider in (threshold, opacity):
        slider.release(handler(render), [kept, threshold, opacity], outputs, api_visibility="private")

    # The /segment API endpoint (no visible widgets of its own).
    with gr.Group(visible=False):
        api_image = gr.File(label="image file")
        api_model = gr.Textbox(label="model name (empty: the default)")
        api_overlay = gr.Image(label="overlay", format="png", type="numpy")
        api_labels = gr.File(label="label map PNG")
        api_fractions = gr.JSON(label="class fractions")
        api_button = gr.Button("segment (API)")
    api_button.click(handler(segment_image, context, heavy=True), [api_image, api_model],
                     [api_overlay, api_labels, api_fractions], api_name="segment", concurrency_id=INFERENCE)
    return {"model": model}
