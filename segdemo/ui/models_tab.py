"""The Models tab: model cards, the feature-map shapes through the "U", uploads, comparisons."""

from __future__ import annotations

import json

import gradio as gr

from .. import viz
from ..data import shapes
from ..domain import KIND_TEXT, image_kind
from . import sharing_panel
from .budget import read_within_budget, shrunk_note
from .context import INFERENCE, AppContext
from .files import png_file, required_upload
from .messages import handler, refuse
from .shapes_tab import predicts_shapes, truth_overlay
from .widgets import DISPLAY_SIDE, format_dice, legend_html, live_dropdown

EXPLAIN = """
**The "U".** The table follows one image through the network. The encoder halves the size and
doubles the channels at each stage (more "what", less "where"); the decoder doubles the size back,
and each decoder stage also receives the encoder's output of the same size through a **skip
connection**, which is what keeps edges sharp. The FCN has no decoder and no skips: its 1/32-size
scores are blown up 32× at the end, so its masks are blobs. U²-Net nests a small U inside every stage.
The **classical** methods (`classical: …`) have no U and learn nothing: a rule written by hand (a
vesselness filter, GrabCut's colour models and graph cut). Compare one with a trained network on the
same image to see what learning from examples adds.
"""

MAX_COMPARE = 3
STAGE_HEADERS = ["stage", "output (channels×height×width)", "parameters"]
NO_LAYERS = "none: a classical method has no layers"


def model_card(context: AppContext, model, request: gr.Request):
    """Markdown card, stage table and legend of ``model``."""
    segmenter = context.workspace(request).catalog.get(model)
    info = segmenter.card()
    if not segmenter.learned:
        return classical_card(segmenter, info)
    metrics = info.get("metrics") or {}
    lines = [f"### {info['name']}",
             f"**Architecture:** `{info['architecture']}` {json.dumps(info['options']) if info['options'] else ''}  ",
             f"**Parameters:** {info['parameters']:,}  ",
             f"**Task:** {info['task']}, {len(info['classes'])} classes  ",
             f"**Domain:** {info['domain']}  ",
             f"**Inference:** {info['inference path']} on {info['device']}  "]
    data = info.get("data") or {}
    if data:
        lines.append(f"**Trained on:** {data.get('spec') or data.get('name')}  ")
    recipe = info.get("recipe") or {}
    if recipe:
        lines.append(f"**Recipe:** {recipe.get('epochs')} epochs × {recipe.get('steps_per_epoch') or '?'} steps, "
                     f"batch {recipe.get('batch_size')}, lr {recipe.get('lr')}, {recipe.get('optimizer')}, "
                     f"{recipe.get('schedule')}  ")
    if metrics:
        lines.append(f"**Validation:** mean Dice {format_dice(metrics.get('mean_dice'))}, "
                     f"mIoU {format_dice(metrics.get('miou'))}  ")
        dice = metrics.get("dice") or []
        lines.append("Dice per class: " + ", ".join(f"{c} {format_dice(d)}" for c, d in zip(info["classes"], dice)))
    description = segmenter.meta.get("description")
    if description:
        lines.append(f"\n{description}")
    height = width = 192
    rows = [[row["stage"], "×".join(str(v) for v in row["output shape"][1:]), f"{row['parameters']:,}"]
            for row in segmenter.feature_shapes(height, width)]
    table = {"headers": STAGE_HEADERS, "data": rows}
    legend = legend_html(segmenter.label_names, segmenter.label_colors)
    return "\n".join(lines), table, legend


def classical_card(segmenter, info: dict):
    """The card of a classical method (what it is, how it works, what its threshold means), a stage
    table that says it has none, and the legend."""
    lines = [f"### {info['name']}",
             "**Classical method** (not a neural network)  ",
             f"**Method:** {info['method']}  ",
             f"**Domain:** {info['domain']}  ",
             "**Parameters:** none: nothing is learned, every number in it is chosen by hand  ",
             f"**Task:** {info['task']}, class {', '.join(info['classes'])}  ",
             f"**Threshold:** {info['threshold']}  ",
             (f"**Work:** {info['work per megapixel']} per megapixel (its time, as the operations a network does "
              f"in that time), on the {info['device']}  "),
             "**Stages:** none: no layers, so no U to follow an image through, and nothing inside to look at  ",
             f"\n{info['how it works']}"]
    table = {"headers": STAGE_HEADERS, "data": [[NO_LAYERS, "", ""]]}
    return "\n".join(lines), table, legend_html(segmenter.label_names, segmenter.label_colors)


def upload_checkpoint(context: AppContext, checkpoint, request: gr.Request):
    """Add an uploaded segdemo ``checkpoint`` (.pt) to every model picker of this workspace and show it."""
    catalog = context.workspace(request).catalog
    path = required_upload(checkpoint, "checkpoint", "choose a .pt checkpoint file first")
    name = catalog.add_checkpoint(path)
    return gr.Dropdown(choices=catalog.names(), value=name), None, f"Added **{name}**."


def compare(context: AppContext, models, image_source, seed, image, threshold, request: gr.Request):
    """Segment one image (a shapes image from ``seed``, or an uploaded ``image``) with 2–3
    ``models``, side by side, with their inference times. A large upload is compared downscaled,
    so that all the models together stay within one request's budget."""
    from ..metrics import score  # imports torch: not before the app has served its page

    models = [name for name in (models or []) if name]
    if not models:
        raise refuse("pick at least one model to compare")
    if len(models) > MAX_COMPARE:
        raise refuse(f"compare at most {MAX_COMPARE} models at once")
    truth, note = None, ""
    catalog = context.workspace(request).catalog
    segmenters = [catalog.get(name) for name in models]
    if image_source == "uploaded image":
        path = required_upload(image, "image", "upload an image to compare on, or pick a shapes image")
        picture, sent = read_within_budget(path, segmenters)
        note = shrunk_note(picture, sent)
    else:
        images, masks = shapes.generate(1, 192, seed=int(seed or 0))
        picture, truth = images[0], masks[0]
    kind = image_kind(picture)
    outside = [name for name in models if catalog.domain_warning(name, kind)]
    gallery, rows = [], []
    deadline = context.deadline(request)
    for name, segmenter in zip(models, segmenters):
        # Each model has run once already (on its probe image, when first used), so this time is
        # close to the steady-state one without a second, warm-up prediction of the whole image.
        prediction = segmenter.predict(picture, deadline=deadline, threads=context.request_threads())
        overlay = viz.overlay(picture, prediction, threshold=threshold, opacity=0.7)
        dice = score(prediction, truth, threshold)["mean_dice"] if truth is not None and predicts_shapes(segmenter) \
            else None
        caption = f"{name}: {1000 * prediction.seconds:.0f} ms" + (f", mean Dice {dice:.3f}" if dice is not None else "")
        caption += " (outside its domain)" if name in outside else ""
        gallery.append((viz.downscale(overlay, DISPLAY_SIDE), caption))
        parameters = f"{segmenter.parameter_count:,}" if segmenter.learned else "none (classical)"
        rows.append([name, parameters, f"{1000 * prediction.seconds:.1f}", format_dice(dice)])
    if truth is not None:
        gallery.insert(0, (viz.side_by_side(picture, truth_overlay(picture, truth)), "input | ground truth"))
    table = {"headers": ["model", "parameters", "inference (ms)", "mean Dice"], "data": rows}
    if note:
        gr.Info(note.strip())
    if outside:
        gr.Warning(f"This looks like {KIND_TEXT[kind]}, outside what {', '.join(outside)} "
                   f"{'knows' if len(outside) == 1 else 'know'}: {'its mask says' if len(outside) == 1 else 'their masks say'} "
                   "little about it (see each card's Domain)")
    return gallery, table


def model_features(context: AppContext, model, image_source, seed, image, request: gr.Request):
    """``/model_features``: one image (a shapes image from ``seed``, or an uploaded ``image``) at every
    stage of ``model``: the stages laid out as a U with the skip connections, and one picture per
    stage (its 4 strongest channels) captioned with its shape."""
    from ..features import feature_maps, stage_card, u_picture
    from ..image_files import read_image

    segmenter = context.workspace(request).catalog.get(model)
    if not segmenter.learned:
        raise refuse(f"{segmenter.name} is a classical method: it has no layers, so there is nothing inside to "
                     "look at. Pick a trained model to look inside it.")
    if image_source == "uploaded image":
        picture = read_image(required_upload(image, "image", "upload an image, or pick a shapes image"))
        picture = viz.downscale(picture, FEATURE_IMAGE_SIDE)
    else:
        picture = shapes.generate(1, 192, seed=int(seed or 0))[0][0]
    stages = feature_maps(segmenter.reference, picture, segmenter.normalization, device=segmenter.device)
    model_skips = getattr(segmenter.reference, "skips", True)
    u = u_picture(stages, picture, skips=model_skips)
    gallery = [(png_file(stage_card(stage), f"stage-{index}.png"), stage.caption) for index, stage in enumerate(stages)]
    return png_file(u, "inside-the-u.png"), gallery


FEATURE_IMAGE_SIDE = 256   # an uploaded image is looked inside at most this large (every stage is kept)


def build_features(context: AppContext, model: gr.Dropdown) -> None:
    """The Models tab's "Inside the U": pick an image, see it at every stage of the picked model."""
    gr.Markdown("### Inside the U: one image at every stage")
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            source = gr.Radio(["shapes image", "uploaded image"], value="shapes image", label="image",
                              elem_id="features-source")
            seed = gr.Number(value=3, precision=0, label="shapes seed", elem_id="features-seed")
            image = gr.File(label="image (for 'uploaded image')", file_types=["image", ".tif", ".tiff"])
            run = gr.Button("Look inside", variant="primary", elem_id="features-run")
        with gr.Column(scale=2):
            u = gr.Image(label="inside the U", format="png", type="filepath", interactive=False,
                         elem_id="models-features-u")
            gallery = gr.Gallery(label="each stage", show_label=False, columns=4, height="auto", object_fit="contain",
                                 preview=False, format="png", elem_id="models-features-gallery")
    run.click(handler(model_features, context, heavy=True), [model, source, seed, image], [u, gallery],
              api_name="model_features", concurrency_id=INFERENCE)


def build(context: AppContext, model_choices: list[str]) -> dict:
    gr.Markdown("Pick a model to see its card and its shape, upload your own segdemo checkpoint, or compare models.")
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            model = live_dropdown(model_choices, value=model_choices[0] if model_choices else None, label="model",
                                elem_id="models-model")
            upload = gr.File(label="upload a segdemo checkpoint (.pt)", file_types=[".pt"], elem_id="models-upload")
            unavailable = context.page_catalog().unavailable()
            if unavailable:
                gr.Markdown("Unavailable here: " + "; ".join(f"{e.name} ({e.message})" for e in unavailable),
                            elem_classes="segdemo-explain")
        with gr.Column(scale=2):
            legend = gr.HTML(label="legend")
            details = gr.Markdown(label="model card", elem_id="models-card")
            stages = gr.Dataframe(label="feature maps for a 192×192 input", interactive=False, elem_id="models-stages")
            if context.public:
                sharing_panel.model_panel(context, model)
            gr.Markdown(EXPLAIN, elem_classes="segdemo-explain")
    build_features(context, model)
    gr.Markdown("### Compare models on the same image")
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            chosen = live_dropdown(model_choices, value=model_choices[:2], multiselect=True, max_choices=MAX_COMPARE,
                                 label=f"models (up to {MAX_COMPARE})", elem_id="compare-models")
            source = gr.Radio(["shapes image", "uploaded image"], value="shapes image", label="image")
            seed = gr.Number(value=1, precision=0, label="shapes seed")
            image_file = gr.File(label="image (for 'uploaded image')", file_types=["image", ".tif", ".tiff"])
            threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="threshold")
            run = gr.Button("Compare", variant="primary", elem_id="compare-run")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="side by side", columns=2, height="auto", object_fit="contain",
                                 preview=False, format="png", elem_id="compare-gallery")
            times = gr.Dataframe(label="inference times", interactive=False, elem_id="compare-times")

    show = handler(model_card, context)
    model.change(show, [model], [details, stages, legend], api_name="model_card", concurrency_id=INFERENCE)
    upload.upload(handler(upload_checkpoint, context, heavy=True), [upload], [model, upload, details],
                  api_name="upload_checkpoint")
    run.click(handler(compare, context, heavy=True), [chosen, source, seed, image_file, threshold], [gallery, times],
              api_name="compare", concurrency_id=INFERENCE)
    return {"model": model, "compare": chosen, "details": details, "stages": stages, "legend": legend, "show": show}
