"""The Shapes tab: generate synthetic shapes, segment them, compare with the ground truth."""

from __future__ import annotations

import gradio as gr
import numpy as np

from .. import viz
from ..data import shapes
from ..tasks import MULTILABEL
from .budget import check_images
from .context import INFERENCE, AppContext
from .messages import handler, refuse
from .widgets import format_dice, legend_html, live_dropdown

MAX_COUNT = 12
SIZES = (32, 512)

EXPLAIN = """
**What you see.** Each row shows the input (white shapes on black), the ground truth, and the
model's prediction, colored by class. The model sees only the input. The **ring** is hollow and the
**mesh square** is only dots, yet its target is the whole square: the network must use context,
which the U-Net gets from its encoder (it shrinks the image to see more at once) and its skip
connections (they hand fine detail back to the decoder).
**Dice** = 2·overlap / (predicted area + true area): 1 is perfect, 0 is no overlap. It counts
small shapes as much as large ones, which plain pixel accuracy does not (the background alone
would score 95 %).
"""

EXAMPLES = [
    ("4 images", 4, 0, 192),
    ("8 images, seed 42", 8, 42, 192),
    ("one large 384×384", 1, 7, 384),
    ("tiny 64×64", 6, 3, 64),
]


def truth_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A shapes image with its ground-truth masks ``(6, H, W)`` drawn over it."""
    return viz.overlay_masks(image, mask, shapes.COLORS, opacity=0.7)


def predicts_shapes(segmenter) -> bool:
    """Whether the model's outputs are the six shapes classes, so Dice against shapes masks means something."""
    return segmenter.task == MULTILABEL and tuple(segmenter.classes) == shapes.CLASSES


def generate_shapes(count, seed, size):
    """Generate ``count`` shapes images of ``size`` pixels from ``seed`` with their ground truth
    (what ``/generate_shapes`` returns)."""
    count, seed, size = int(count), int(seed or 0), int(size)
    if not 1 <= count <= MAX_COUNT:
        raise refuse(f"count must be between 1 and {MAX_COUNT}")
    if not SIZES[0] <= size <= SIZES[1]:
        raise refuse(f"size must be between {SIZES[0]} and {SIZES[1]} pixels")
    if not 0 <= seed < 2**32:
        raise refuse("seed must be between 0 and 4294967295")
    images, masks = shapes.generate(count, size, seed=seed)
    gallery = [(viz.side_by_side(image, truth_overlay(image, mask)), f"image {index + 1}: input | ground truth")
               for index, (image, mask) in enumerate(zip(images, masks))]
    return gallery, {"images": images, "masks": masks}


def segment_shapes(context: AppContext, shapes_images, model, threshold, request: gr.Request):
    """Predict every generated image with ``model``; pictures, per-class Dice and channel maps."""
    from ..metrics import score  # imports torch: not before the app has served its page

    if not shapes_images:
        raise refuse("generate some images first")
    segmenter = context.workspace(request).catalog.get(model)
    images = shapes_images["images"]
    check_images(segmenter, len(images), *images[0].shape[:2])
    deadline, threads = context.deadline(request), context.request_threads()
    comparable = predicts_shapes(segmenter)
    rows, gallery, predictions = [], [], []
    for index, (image, mask) in enumerate(zip(images, shapes_images["masks"])):
        prediction = segmenter.predict(image, deadline=deadline, threads=threads)
        predictions.append(prediction)
        pictures = (image, truth_overlay(image, mask), viz.overlay(image, prediction, threshold=threshold, opacity=0.7))
        caption = f"image {index + 1}: input | ground truth | prediction"
        if comparable:
            metrics = score(prediction, mask, threshold)
            rows.append([index + 1, *[format_dice(d) for d in metrics["dice"]], format_dice(metrics["mean_dice"])])
            caption += f" (mean Dice {metrics['mean_dice']:.3f})"
        gallery.append((viz.side_by_side(*pictures), caption))
    seconds = float(np.median([p.seconds for p in predictions]))
    info = (f"**{segmenter.name}** ({segmenter.parameter_count:,} parameters, {predictions[0].path}): "
            f"{1000 * seconds:.0f} ms per image.")
    if not comparable:
        info += " Its classes are not the shapes classes, so no Dice is computed."
    headers = ["image", *shapes.CLASSES, "mean"]
    table = {"headers": headers, "data": rows or [[None] * len(headers)]}
    return gallery, table, channel_gallery(predictions[0]), info, predictions


def channel_gallery(prediction) -> list:
    """One captioned picture per output channel of ``prediction``."""
    return [(picture, f"channel {index}: {name}")
            for index, (picture, name) in enumerate(zip(viz.channel_maps(prediction), prediction.classes))]


def select_channels(predictions, event: gr.SelectData):
    """Show the output channels of the image clicked in the gallery."""
    if not predictions:
        return gr.skip()
    return channel_gallery(predictions[min(int(event.index), len(predictions) - 1)])


def build(context: AppContext, model_choices: list[str]) -> dict:
    gr.Markdown("Generate the classic six-class synthetic shapes and watch a model segment them.")
    generated, predicted = gr.State(None), gr.State(None)
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            count = gr.Slider(1, MAX_COUNT, value=4, step=1, label="images")
            seed = gr.Number(value=0, precision=0, label="seed (same seed, same images)")
            size = gr.Slider(SIZES[0], SIZES[1], value=192, step=32, label="size (pixels)")
            model = live_dropdown(model_choices, value=model_choices[0] if model_choices else None,
                                label="model", elem_id="shapes-model")
            threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="threshold")
            run = gr.Button("Generate and segment", variant="primary", elem_id="shapes-run")
            gr.HTML(legend_html(shapes.CLASSES, shapes.COLORS))
            with gr.Row():
                example_buttons = [gr.Button(label, size="sm") for label, *_ in EXAMPLES]
        with gr.Column(scale=3):
            info = gr.Markdown(label="summary", elem_id="shapes-info")
            gallery = gr.Gallery(label="input | ground truth | prediction", columns=2, height="auto",
                                 object_fit="contain", preview=False, format="png", elem_id="shapes-gallery")
            dice = gr.Dataframe(label="Dice per class", interactive=False, elem_id="shapes-dice")
            channels = gr.Gallery(label="output channels of the selected image (one per class)",
                                  columns=6, height="auto", object_fit="contain", format="png",
                                  elem_id="shapes-channels")
            gr.Markdown(EXPLAIN, elem_classes="segdemo-explain")

    run_segment = handler(segment_shapes, context, heavy=True)
    generate_event = run.click(handler(generate_shapes), [count, seed, size], [gallery, generated],
                               api_name="generate_shapes", concurrency_id=INFERENCE)
    generate_event.success(run_segment, [generated, model, threshold], [gallery, dice, channels, info, predicted],
                           api_name="segment_shapes", concurrency_id=INFERENCE)
    threshold.release(run_segment, [generated, model, threshold], [gallery, dice, channels, info, predicted],
                      api_visibility="private", concurrency_id=INFERENCE)
    gallery.select(select_channels, [predicted], [channels], api_visibility="private")
    for button, (_, n, s, z) in zip(example_buttons, EXAMPLES):
        button.click(lambda n=n, s=s, z=z: (n, s, z), None, [count, seed, size], api_visibility="private",
                     queue=False).then(
            handler(generate_shapes), [count, seed, size], [gallery, generated], api_visibility="private",
            concurrency_id=INFERENCE).success(
            run_segment, [generated, model, threshold], [gallery, dice, channels, info, predicted],
            api_visibility="private", concurrency_id=INFERENCE)
    return {"model": model}
