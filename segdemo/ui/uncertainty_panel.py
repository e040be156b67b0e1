"""The Annotate tab's "label next" panel: where the chosen model is unsure, and which of a dataset's
images to label next (as ilastik shows).

Images can be added to a dataset without a mask, to be labelled later (the store keeps them in
``unlabelled/``). **Show uncertainty** draws the model's per-pixel uncertainty over the open image
beside the editor; **Rank by uncertainty** predicts the dataset's images to label (or, when there
are none, its saved pairs, to review) and lists them most uncertain first; **Label next** opens the
most uncertain image to label in the editor, where saving it under its name takes it off the list.
The library is :mod:`segdemo.uncertainty`; this module only wires it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ..annotations import DatasetStore
from ..uncertainty import (
    TOP_SHARE,
    entropy_map,
    image_uncertainty,
    rank_by_uncertainty,
    uncertainty_picture,
)
from ..viz import downscale
from .budget import predict_within_budget
from .context import INFERENCE, AppContext
from .files import checked_upload
from .messages import handler, refuse
from .widgets import DISPLAY_SIDE

HEADERS = ["rank", "image", "uncertainty", "kind"]
# Images one ranking predicts. They share one request's budget (request_gflop: each is predicted at
# its share, smaller where the whole would not fit) and its time (request_seconds). A dataset with
# more is ranked in turns: the first by name, and labelling takes images off the list.
RANK_IMAGES = 32
TO_LABEL, SAVED = "to label", "saved pair"

EXPLAIN = f"""
**What to label next.** Add the images you mean to label (they wait in the dataset without a mask).
**Rank by uncertainty** lets the chosen model predict each one and lists them most uncertain first;
an image's uncertainty is the mean of its {TOP_SHARE:.0%} most uncertain pixels (0: sure of every
pixel, 1: no idea), so one small unsure object counts. **Label next** opens the top one: labelling
what the model gets wrong teaches it the most. Save it under its name and it leaves the list.
**Show uncertainty** draws where the model is unsure of the open image (bright: unsure), the
borders and objects worth a closer look. With no images to label, Rank lists the saved pairs, to
review the ones the model finds hardest.
"""


@dataclass
class Panel:
    """The panel's components that the tab wires to its own events."""

    waiting: gr.Markdown          # how many images wait to be labelled
    refresh: Callable             # handler: dataset → that line

    def follow(self, event, dataset) -> None:
        """After ``event`` (a save: it may take an image off the list), say again how many wait."""
        event.then(self.refresh, [dataset], [self.waiting], api_visibility="private")


def waiting_line(store: DatasetStore, dataset: str) -> str:
    """A line saying how many of ``dataset``'s images wait to be labelled."""
    count = len(store.unlabelled(dataset))
    if not count:
        return f"No image waits to be labelled in **{dataset}**: add some above."
    return f"**{count}** image{'s' if count != 1 else ''} of **{dataset}** wait{'s' if count == 1 else ''} to be labelled."


def show_waiting(context: AppContext, dataset, request: gr.Request):
    """The line saying how many images wait to be labelled (empty while no dataset is picked)."""
    return waiting_line(context.workspace(request).store, dataset) if dataset else ""


def dataset_changed(context: AppContext, dataset, request: gr.Request):
    """A new dataset: its waiting line; the previous dataset's ranking goes."""
    return show_waiting(context, dataset, request), None, None


def add_images(context: AppContext, picked: Callable, dataset, images, request: gr.Request):
    """Add ``images`` (one or more image files) to ``dataset`` as images to label later, each
    named after its file (with a suffix where the name is taken). They are not pairs yet: exports
    and training leave them out until they are saved with a mask."""
    store, dataset = context.workspace(request).store, picked(dataset)
    files = images if isinstance(images, (list, tuple)) else [images] if images else []
    paths = [path for path in (checked_upload(file, "image") for file in files) if path]
    if not paths:
        raise refuse("choose one or more images to add")
    names = store.add_images(dataset, [(Path(path).stem, path) for path in paths])
    shown = ", ".join(names[:5]) + (" …" if len(names) > 5 else "")
    message = (f"Added {len(names)} image{'s' if len(names) != 1 else ''} to label to **{dataset}** ({shown}). "
               "Press **Rank by uncertainty** to see which to label first.")
    return message, waiting_line(store, dataset), None, None, None


def show_uncertainty(context: AppContext, image, model, request: gr.Request):
    """The chosen ``model``'s uncertainty over the open image (bright: unsure), and its score."""
    if image is None:
        raise refuse("open an image first")
    space = context.workspace(request)
    prediction, note = predict_within_budget(space.catalog.get(model), image, context.deadline(request),
                                             context.request_threads())
    entropy = entropy_map(prediction)
    picture = downscale(uncertainty_picture(image, entropy), DISPLAY_SIDE)
    message = (f"Uncertainty of **{prediction.model}**: {image_uncertainty(entropy):.3f} (the mean of the "
               f"{TOP_SHARE:.0%} most uncertain pixels; 0 is sure, 1 is no idea). Bright is unsure.{note}")
    return gr.Image(value=picture, visible=True), message


def _rank(context: AppContext, store: DatasetStore, dataset: str, model, request) -> tuple[dict, str, dict]:
    """Rank ``dataset``'s images to label (else its saved pairs) by ``model``'s uncertainty: the
    table, a message and the ranking kept for Label next."""
    names, kind = store.unlabelled(dataset), TO_LABEL
    if not names:
        names, kind = [item.name for item in store.items(dataset)], SAVED
    if not names:
        raise refuse(f"{dataset} has no image to rank: add images to label (or save some pairs to review)")
    ranked = names[:RANK_IMAGES]
    segmenter = context.workspace(request).catalog.get(model)
    deadline, threads = context.deadline(request), context.request_threads()
    shrunk = 0

    def predictions():
        nonlocal shrunk
        for name in ranked:
            image = store.load_unlabelled(dataset, name) if kind == TO_LABEL else store.load(dataset, name)[0]
            prediction, note = predict_within_budget(segmenter, image, deadline, threads, len(ranked))
            shrunk += bool(note)
            yield name, prediction

    ranking = rank_by_uncertainty(predictions())
    table = {"headers": HEADERS, "data": [[place, name, round(score, 4), kind]
                                          for place, (name, score) in enumerate(ranking, 1)]}
    what = "images to label" if kind == TO_LABEL else "saved pairs (no image waits to be labelled: these are to review)"
    message = f"Ranked {len(ranked)} {what} of **{dataset}** by **{segmenter.name}**'s uncertainty, most uncertain first."
    if len(names) > len(ranked):
        message += (f" Only the first {len(ranked)} of {len(names)} by name were ranked, the most one ranking "
                    "predicts: label some, then rank again to reach the others.")
    if shrunk:
        message += (f" {shrunk} of them were predicted smaller than they are, to share one request's budget "
                    "between them.")
    return table, message, {"dataset": dataset, "model": segmenter.name, "kind": kind, "names": [n for n, _ in ranking]}


def rank(context: AppContext, picked: Callable, dataset, model, request: gr.Request):
    """``dataset``'s images to label (or, when there are none, its saved pairs) ranked by ``model``'s
    uncertainty, most uncertain first: a table of rank, image, score (0 sure … 1 no idea) and kind.
    At most 32 images are predicted (the first by name), each at its share of one request's budget."""
    store, dataset = context.workspace(request).store, picked(dataset)
    return _rank(context, store, dataset, model, request)


def label_next(context: AppContext, picked: Callable, opener: Callable, dataset, model, ranking,
               request: gr.Request):
    """Open the image to label of ``dataset`` that ``model`` is least sure of in the editor (from
    the last ranking by that model, else ranked now); save it under its name to take it off the list."""
    store, dataset = context.workspace(request).store, picked(dataset)
    waiting = set(store.unlabelled(dataset))
    if not waiting:
        raise refuse(f"no image waits to be labelled in {dataset}: add images to label first")
    table = gr.skip()
    usable = (ranking and ranking.get("dataset") == dataset and ranking.get("kind") == TO_LABEL
              and ranking.get("model") == context.workspace(request).catalog.get(model).name)
    candidates = [name for name in ranking["names"] if name in waiting] if usable else []
    if not candidates:
        table, _, ranking = _rank(context, store, dataset, model, request)
        candidates = [name for name in ranking["names"] if name in waiting]
    name = candidates[0]
    image = store.load_unlabelled(dataset, name)
    message = (f"Opened **{name}**, the image to label that **{ranking['model']}** is least sure of "
               f"({len(waiting)} wait{'s' if len(waiting) == 1 else ''}). Paint it (or pre-fill and correct), then "
               "save it under this name.")
    return opener(image, None, store.info(dataset).colors), None, image, name, message, table, ranking


def open_ranked(context: AppContext, picked: Callable, opener: Callable, dataset, event: gr.SelectData,
                request: gr.Request):
    """Open the image of the ranking's row that was clicked (an image to label, or a saved pair)."""
    store, dataset = context.workspace(request).store, picked(dataset)
    row = event.row_value or []
    if len(row) < 4:
        return [gr.skip()] * 5
    name, kind = str(row[1]), row[3]
    if kind == TO_LABEL:
        image, labels = store.load_unlabelled(dataset, name), None
    else:
        image, labels = store.load(dataset, name)
    return opener(image, labels, store.info(dataset).colors), labels, image, name, f"Opened **{name}** from the ranking."


def hidden_picture() -> gr.Image:
    """The uncertainty picture put away: another image was opened, which it is not of."""
    return gr.Image(value=None, visible=False)


def picture() -> gr.Image:
    """Where the open image's uncertainty is drawn, beside the editor (hidden until asked for)."""
    return gr.Image(label="uncertainty (bright: unsure)", type="numpy", format="png", interactive=False,
                    visible=False, height=520, scale=2, elem_id="annotate-uncertainty",
                    elem_classes="segdemo-fill")


def build(context: AppContext, *, dataset, model, image, editor, item, message, uncertainty: gr.Image,
          picked: Callable, opener: Callable, committed: gr.State) -> Panel:
    """The panel, under the tab's model picker.

    Args:
        dataset, model, image, editor, item, message: the tab's components (its dataset and model
            pickers, the open image's state, the editor, the "save as" name, the message line).
        uncertainty: the picture made by :func:`picture`, beside the editor.
        picked: the tab's check that a dataset is picked (returns its name).
        opener: the tab's ``editor_value(image, labels or None, colors)``, to open an image.
        committed: the tab's state of the open image's labels as the server last wrote the editor
            (an opening writes it).
    """
    ranking = gr.State(None)
    with gr.Accordion("label next: where the model is unsure", open=True, elem_id="annotate-label-next-panel"):
        with gr.Row():
            files = gr.File(label="add images to label", file_count="multiple", file_types=["image", ".tif", ".tiff"],
                            height=140, scale=2, elem_id="annotate-add-images")
            with gr.Column(scale=1, min_width=220):
                waiting = gr.Markdown(label="images to label", elem_id="annotate-waiting")
                show_button = gr.Button("Show uncertainty", size="sm", elem_id="annotate-show-uncertainty")
                rank_button = gr.Button("Rank by uncertainty", size="sm", elem_id="annotate-rank")
                next_button = gr.Button("Label next", size="sm", variant="primary", elem_id="annotate-label-next")
        table = gr.Dataframe(headers=HEADERS, interactive=False, label="most uncertain first (click a row to open it)",
                             max_height=300, elem_id="annotate-ranking")
        gr.Markdown(EXPLAIN, elem_classes="segdemo-explain")

    opened = [editor, committed, image, item, message]
    # Every open puts a new array in the image's state (gradio tracks a state by its object), so
    # this fires on each open, from any of the tab's ways to open one.
    image.change(hidden_picture, None, [uncertainty], api_visibility="private", queue=False, show_progress="hidden")
    dataset.change(handler(dataset_changed, context), [dataset], [waiting, table, ranking], api_visibility="private")
    files.upload(handler(add_images, context, picked, heavy=True), [dataset, files],
                 [message, waiting, files, table, ranking], api_name="annotate_add_images")
    show_button.click(handler(show_uncertainty, context, heavy=True), [image, model], [uncertainty, message],
                      api_name="annotate_uncertainty", concurrency_id=INFERENCE)
    rank_button.click(handler(rank, context, picked, heavy=True), [dataset, model], [table, message, ranking],
                      api_name="annotate_rank", concurrency_id=INFERENCE)
    next_button.click(handler(label_next, context, picked, opener, heavy=True), [dataset, model, ranking],
                      [*opened, table, ranking], api_name="annotate_label_next", concurrency_id=INFERENCE)
    table.select(handler(open_ranked, context, picked, opener, heavy=True), [dataset], opened, api_visibility="private")
    return Panel(waiting, handler(show_waiting, context))


__all__ = ["Panel", "build", "picture"]
