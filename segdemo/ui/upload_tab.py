"""The Upload tab: segment your own image, optionally against its ground truth.

The network runs once per image; threshold and opacity re-render from the stored prediction.
Also the ``/segment`` API endpoint: image file + model name → overlay, label-map PNG, class
fractions.
"""

from __future__ import annotations

import gradio as gr
import numpy as np

from .. import viz
from ..io import ImageError, check_same_size, read_image, read_label_map
from ..labels import labels_to_target, probabilities_to_labels
from ..tasks import BINARY, IGNORE_INDEX, MULTICLASS
from .common import AppContext, checked_upload, downscale, format_dice, hex_color, live_dropdown, png_file, user_errors

EXPLAIN = """
**Reading the results.** The overlay colors each pixel by the class the model gives it; the label
map shows the same without the photo. Each output channel is one class's probability (dark = 0,
bright = 1): the network's last 1×1 convolution turns its features into one such map per class,
and the overlay is just these maps thresholded (multi-label, binary) or compared (multiclass).
With a ground truth, the error map shows hits in green, false alarms in red, misses in blue and
wrong classes in orange. DRIVE images (`.tif`) with their `.gif` manual annotation and Pascal VOC
photos (`.jpg`) with their palette `.png` labels are read as they come.
"""


def truth_target(mask_path: str, image: np.ndarray, segmenter) -> np.ndarray:
    """Read a ground-truth mask as a target in the model's layout, or raise ``ImageError``."""
    labels = read_label_map(mask_path, palette=segmenter.label_colors)
    check_same_size(image, labels, "ground-truth mask")
    values = set(np.unique(labels).tolist())
    if segmenter.task == BINARY:
        if 1 not in values:
            # A 0/255 image (DRIVE's manual annotations): bright means vessel, not "ignore".
            labels = np.where(labels > 127, 1, 0).astype(np.uint8)
        elif values - {0, 1, IGNORE_INDEX}:
            raise ImageError(f"a binary mask holds 0 and 1 (or 0 and 255); this one holds {sorted(values)[:6]}")
        return labels_to_target(labels, BINARY, 1)
    values -= {IGNORE_INDEX}
    known = len(segmenter.label_names)
    unknown = sorted(v for v in values if v >= known)
    if unknown:
        raise ImageError(f"the mask holds class values {unknown[:6]} but {segmenter.name} knows values 0–{known - 1} "
                         f"({', '.join(segmenter.label_names[:6])}{'…' if known > 6 else ''}) and 255 for ignore")
    return labels_to_target(labels, segmenter.task, len(segmenter.classes))


def _display_truth(target: np.ndarray, task: str, shape) -> np.ndarray:
    """A target resized (nearest) to the display size."""
    import cv2

    height, width = shape
    if target.shape[-2:] == (height, width):
        return target
    if task == MULTICLASS:
        return cv2.resize(target, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.stack([cv2.resize(t, (width, height), interpolation=cv2.INTER_NEAREST) for t in target])


def segment(context: AppContext, image_file, mask_file, model_name, threshold, opacity):
    """Run the model on an uploaded image (and compare with its mask); returns the pictures and
    the stored prediction for re-rendering."""
    image_path = checked_upload(image_file, "image")
    if image_path is None:
        raise gr.Error("upload an image first", print_exception=False)
    image = read_image(image_path)
    segmenter = context.catalog.get(model_name)
    mask_path = checked_upload(mask_file, "mask")
    truth = truth_target(mask_path, image, segmenter) if mask_path else None
    probabilities, seconds = segmenter.timed_predict(image)
    full_size = image.shape[:2]
    shown = downscale(image)
    scale = shown.shape[0] / image.shape[0]
    if scale < 1:
        probabilities = np.stack([downscale(p) for p in probabilities])
        truth = _display_truth(truth, segmenter.task, shown.shape[:2]) if truth is not None else None
    state = {
        "image": shown, "probabilities": (probabilities * 255 + 0.5).astype(np.uint8), "truth": truth,
        "task": segmenter.task, "classes": list(segmenter.classes), "colors": [list(c) for c in segmenter.colors],
        "label_names": list(segmenter.label_names), "label_colors": [list(c) for c in segmenter.label_colors],
        "info": (f"**{segmenter.name}** on a {full_size[1]}×{full_size[0]} image: {1000 * seconds:.0f} ms "
                 f"({segmenter.path.describe()}, {segmenter.device})"
                 + (f"; shown at {shown.shape[1]}×{shown.shape[0]}" if scale < 1 else "")),
    }
    return (*render(state, threshold, opacity), state)


def render(state, threshold, opacity):
    """Pictures and metrics from a stored prediction (no network): annotated overlay, label map,
    channel maps, metrics table, error map, info."""
    from ..metrics import image_metrics  # imports torch: not before the app has served its page

    if not state:
        raise gr.Error("segment an image first", print_exception=False)
    image, task = state["image"], state["task"]
    probabilities = state["probabilities"].astype(np.float32) / 255.0
    labels = probabilities_to_labels(probabilities, task, threshold)
    names, colors = state["label_names"], state["label_colors"]
    present = [int(v) for v in np.unique(labels) if 0 < v < len(names)]  # label 0 is the background
    annotations = [((labels == value).astype(np.float32) * float(opacity), names[value]) for value in present]
    annotated = gr.AnnotatedImage(value=(image, annotations),
                                  color_map={name: hex_color(color) for name, color in zip(names, colors)})
    label_map = viz.colorize_labels(labels, colors)
    channels = [(picture, f"channel {i}: {name}") for i, (picture, name) in
                enumerate(zip(viz.channel_maps(probabilities), state["classes"]))]
    table = {"headers": ["class", "Dice", "IoU"], "data": []}
    errors = None
    truth = state["truth"]
    if truth is not None:
        metrics = image_metrics(probabilities, truth, task, threshold)
        rows = [[name, format_dice(d), format_dice(i)] for name, d, i in
                zip(state["classes"], metrics["dice"], metrics["iou"])]
        rows.append(["mean", format_dice(metrics["mean_dice"]), format_dice(metrics["miou"])])
        rows.append(["pixel accuracy", format_dice(metrics["pixel_accuracy"]), ""])
        for key in ("sensitivity", "specificity", "auc"):
            if key in metrics:
                rows.append([key, format_dice(metrics[key]), ""])
        table = {"headers": ["class", "Dice", "IoU"], "data": rows}
        truth_labels = _target_labels(truth, task)
        ignore = truth_labels == IGNORE_INDEX
        errors = viz.error_map(labels, np.where(ignore, 0, truth_labels).astype(np.uint8), ignore)
    return annotated, label_map, channels, table, errors, state["info"]


def _target_labels(target: np.ndarray, task: str) -> np.ndarray:
    from ..labels import target_to_labels

    return target_to_labels(target, task)


def segment_api(context: AppContext, image_file, model_name):
    """``/segment``: overlay image (at most 1600 px a side), full-size label-map PNG (palette;
    pixel value = label index) and the fraction of pixels of each label."""
    image_path = checked_upload(image_file, "image")
    if image_path is None:
        raise gr.Error("send an image file", print_exception=False)
    image = read_image(image_path)
    segmenter = context.catalog.get(model_name or None)
    probabilities = segmenter.predict(image)
    labels = segmenter.labels(probabilities)
    overlay = downscale(viz.overlay(image, probabilities, segmenter.task, segmenter.colors, labels=labels))
    counts = np.bincount(labels.ravel(), minlength=len(segmenter.label_names))
    fractions = {name: round(float(count) / labels.size, 6) for name, count in zip(segmenter.label_names, counts)}
    return (png_file(overlay, "overlay.png"), png_file(labels, "labels.png", palette=segmenter.label_colors),
            {"model": segmenter.name, "fractions": fractions})


def build(context: AppContext, model_choices: list[str]) -> dict:
    gr.Markdown("Segment your own image: any common format, DRIVE `.tif` retina images, Pascal VOC `.jpg` photos.")
    stored = gr.State(None)
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            image_file = gr.File(label="image", file_types=["image", ".tif", ".tiff", ".gif"], elem_id="upload-image")
            mask_file = gr.File(label="ground-truth mask (optional: DRIVE .gif, VOC palette .png, index PNG)",
                                file_types=["image", ".gif", ".png", ".tif"], elem_id="upload-mask")
            model = live_dropdown(model_choices, value=model_choices[0] if model_choices else None, label="model",
                                elem_id="upload-model")
            run = gr.Button("Segment", variant="primary", elem_id="upload-run")
            threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="threshold (multi-label and binary)")
            opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="opacity")
        with gr.Column(scale=3):
            info = gr.Markdown(elem_id="upload-info")
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
    run.click(user_errors(lambda i, m, n, t, o: segment(context, i, m, n, t, o)),
              [image_file, mask_file, model, threshold, opacity], [*outputs, stored],
              api_name="segment_upload", concurrency_id="inference")
    for slider in (threshold, opacity):
        slider.release(user_errors(render), [stored, threshold, opacity], outputs, api_visibility="private")

    # The /segment API endpoint (no visible widgets of its own).
    with gr.Group(visible=False):
        api_image = gr.File(label="image file")
        api_model = gr.Textbox(label="model name (empty: the default)")
        api_overlay = gr.Image(label="overlay", format="png", type="numpy")
        api_labels = gr.File(label="label map PNG")
        api_fractions = gr.JSON(label="class fractions")
        api_button = gr.Button("segment (API)")
    api_button.click(user_errors(lambda i, m: segment_api(context, i, m)), [api_image, api_model],
                     [api_overlay, api_labels, api_fractions], api_name="segment", concurrency_id="inference")
    return {"model": model}
