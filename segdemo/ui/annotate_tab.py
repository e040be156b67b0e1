"""The Annotate tab: paint masks per class with a model's help, save them as a dataset, export it,
train on it."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np

from .. import viz
from ..annotations import CLASS_PRESETS, DatasetStore, class_lines, parse_class_lines
from ..assist import paint_strokes
from ..data import shapes
from ..filenames import check_name, safe_name
from ..image_files import image_size, read_image
from ..labels import clean_labels, relabel_table
from ..limits import current
from ..mask_doctor import FIXED, HEADERS, findings_table
from ..painting import strokes_from_layers
from . import assist_panel, sharing_panel, uncertainty_panel
from .budget import predict_within_budget
from .context import INFERENCE, AppContext
from .editor import CheckedImageEditor
from .files import png_file, required_upload, scratch_folder
from .messages import handler, refuse
from .widgets import hex_color, legend_html, live_dropdown

CUSTOM = "custom (edit the list)"
GALLERY_PAGE = 24   # saved pairs shown at a time, each at most THUMBNAIL_SIDE (256) pixels a side

EXPLAIN = """
**How to annotate.** Pick or create a dataset (its classes come from a preset or your own list; the
first class is the background). Open an image, then either paint each class with its color or press
**Pre-fill from model** and only correct what the model got wrong: that is much faster, and it gets
faster still once you train on what you saved. **Clean up** removes specks and fills small holes.
The editor shows the labels (a pre-fill, a box, a saved mask) tinted over the image; your strokes
paint over them, each in its class's color. To clear labelled pixels, paint them with the
**background** color (the first brush color); the eraser only takes back strokes not yet applied
(a pre-fill, clean-up, box, fill or save applies them). Painted colors are mapped back to exact
class indices when you save. Saving under an existing name keeps the earlier version in the
dataset's history.
"""


LABEL_OPACITY = 0.55   # how strongly the labels tint the image in the editor (the photo shows through)


def labels_drawn(image: np.ndarray, labels: np.ndarray | None, colors) -> np.ndarray:
    """The image with ``labels`` (None: none) tinted over it in their classes' colors."""
    return image if labels is None else viz.overlay_labels(image, labels, colors, opacity=LABEL_OPACITY)


def editor_value(image: np.ndarray, labels: np.ndarray | None, colors) -> dict:
    """The editor's value for ``image`` labelled ``labels`` (None: all background).

    Gradio 6.31's ImageEditor does not draw the layers the server sends it (not when it first gets
    them; sent later, it sometimes does), and once a person paints, the painting it sends back
    holds their strokes only. So the labels are drawn into the background and no layer is sent;
    the tab keeps the labels as the committed labels (a ``gr.State`` that every writer of the
    editor also writes), :func:`_painted_labels` paints the strokes over them, and an API client
    reads them from ``/annotate_labels``.
    """
    return {"background": labels_drawn(image, labels, colors), "layers": [], "composite": None}


def brush_for(colors) -> gr.Brush:
    """The brush: one color per class, the background's first (painting it clears labels)."""
    return gr.Brush(colors=[hex_color(c) for c in colors], default_color=hex_color(colors[1]),
                    color_mode="fixed", default_size=8)


def gallery_page(store: DatasetStore, dataset: str, page) -> tuple[list, str, int]:
    """One page of ``dataset``'s saved pairs as small overlays (from the store's thumbnails: a
    pair is never decoded whole to be shown), a line saying how many there are, and the page."""
    info = store.info(_dataset(dataset))
    items = store.items(dataset)
    pages = max(1, -(-len(items) // GALLERY_PAGE))
    page = min(max(int(page or 1), 1), pages)
    gallery = []
    for item in items[(page - 1) * GALLERY_PAGE:page * GALLERY_PAGE]:
        image, labels = store.thumbnail(item)
        gallery.append((viz.overlay_labels(image, labels, info.colors, opacity=0.6), item.name))
    progress = f"**{dataset}**: {len(items)} annotated image{'s' if len(items) != 1 else ''}."
    if pages > 1:
        progress += f" Gallery page {page} of {pages}."
    return gallery, progress, page


def dataset_view(store: DatasetStore, dataset: str, page=1):
    """Everything that depends on the chosen ``dataset``: class text, legend, brush, gallery
    (``page``), stats, and the page shown."""
    info = store.info(_dataset(dataset))
    gallery, progress, page = gallery_page(store, dataset, page)
    stats = store.stats(dataset)
    table = {"headers": ["class", "pixels"], "data": [[name, count] for name, count in stats["pixels"].items()]}
    editor = CheckedImageEditor(brush=brush_for(info.colors))
    return class_lines(info), legend_html(info.classes, info.colors), editor, gallery, table, progress, page


def show_dataset(context: AppContext, dataset, request: gr.Request):
    """``/annotate_dataset``: the view of ``dataset`` (nothing changes while none is picked)."""
    return dataset_view(context.workspace(request).store, dataset) if dataset else [gr.skip()] * 7


def show_page(context: AppContext, dataset, page, request: gr.Request):
    """``/annotate_gallery``: page ``page`` of ``dataset``'s saved pairs (24 to a page, each at most
    256 pixels a side), and the line saying how many there are."""
    return gallery_page(context.workspace(request).store, dataset, page)


def turn_page(context: AppContext, step: int, dataset, page, request: gr.Request):
    """The previous (``step`` -1) or next (+1) page of the gallery."""
    return gallery_page(context.workspace(request).store, dataset, int(page or 1) + step)


def list_datasets(context: AppContext, request: gr.Request):
    """The visitor's datasets in the picker (when their page loads)."""
    datasets = context.workspace(request).store.datasets()
    return gr.Dropdown(choices=datasets, value=datasets[0] if datasets else None)


def create_dataset(context: AppContext, name, classes_from, class_list, request: gr.Request):
    """A new dataset ``name`` with the classes of a preset (``classes_from``), or of ``class_list``
    (one ``name #rrggbb`` a line) when ``classes_from`` is the custom choice."""
    store = context.workspace(request).store
    info = CLASS_PRESETS[classes_from] if classes_from in CLASS_PRESETS else parse_class_lines(class_list)
    dataset = store.create(name, info)
    return gr.Dropdown(choices=store.datasets(), value=dataset), f"Created **{dataset}**."


def save_classes(context: AppContext, dataset, class_list, painting=None, image=None, committed=None, lock=False,
                 request: gr.Request = None):
    """Rename, recolor or add classes of ``dataset`` from ``class_list``. An open image's strokes
    are read in the colors they were painted in first, then its labels are drawn in the new ones."""
    store, dataset = context.workspace(request).store, _dataset(dataset)
    labels = _painted_labels(store, dataset, painting, image, committed, lock) if image is not None else None
    store.set_classes(dataset, parse_class_lines(class_list))
    view = list(dataset_view(store, dataset))
    if labels is None:
        return (*view, gr.skip())
    info = store.info(dataset)
    view[2] = CheckedImageEditor(value=editor_value(image, labels, info.colors), brush=brush_for(info.colors))
    return (*view, labels)


def _dataset(dataset) -> str:
    if not dataset:
        raise refuse("create or pick a dataset first")
    return dataset


def _checked_image(path: str) -> np.ndarray:
    """The image at ``path`` if the editor may open it (its size read from the header first)."""
    height, width = image_size(path)
    side = current().editor_side
    if max(height, width) > side:
        raise refuse(f"the image is {width}×{height}; images up to {side} pixels a side can be annotated here "
                     "(editor_side)")
    return read_image(path)


def open_upload(context: AppContext, dataset, image, request: gr.Request):
    """Open an uploaded ``image`` for annotating in ``dataset``."""
    info = context.workspace(request).store.info(_dataset(dataset))
    path = required_upload(image, "image", "upload an image first")
    picture = _checked_image(path)
    return (editor_value(picture, None, info.colors), None, picture, safe_name(Path(path).stem, "image"),
            "Opened the upload.")


def open_shapes(context: AppContext, dataset, seed, size, request: gr.Request):
    """Open a generated shapes image (``seed``, ``size`` pixels) for annotating in ``dataset``."""
    info = context.workspace(request).store.info(_dataset(dataset))
    seed = int(seed or 0)
    images, _ = shapes.generate(1, int(size), seed=seed)  # the size slider's range is enforced by gradio
    return editor_value(images[0], None, info.colors), None, images[0], f"shapes-{seed}", "Opened a shapes image."


def open_item(context: AppContext, dataset, item, request: gr.Request):
    """Reopen the saved ``item`` of ``dataset`` for editing."""
    return _opened(context.workspace(request).store, _dataset(dataset), item)


def _opened(store: DatasetStore, dataset: str, item: str):
    image, labels = store.load(dataset, check_name(item, "item name"))
    return editor_value(image, labels, store.info(dataset).colors), labels, image, item, f"Opened **{item}** for editing."


def open_clicked(context: AppContext, dataset, page, event: gr.SelectData, request: gr.Request):
    """Reopen the item clicked in the gallery's ``page`` (gradio passes the click and the request
    by these annotations)."""
    store, dataset = context.workspace(request).store, _dataset(dataset)
    return _opened(store, dataset, store.items(dataset)[(int(page or 1) - 1) * GALLERY_PAGE + int(event.index)].name)


def _painted_labels(store: DatasetStore, dataset, painting, image, committed=None, lock=False) -> np.ndarray:
    """The labels of the open ``image``: the ``committed`` labels (as the server last wrote the
    editor; None or another image's: none) with the painting's strokes over them (with ``lock``,
    the class lock holds for them; see :func:`editor_value` for why)."""
    info = store.info(dataset)  # an unknown dataset is the first thing to say
    if image is None:
        raise refuse("open an image first")
    layers = (painting or {}).get("layers") or []
    painted, classes = strokes_from_layers([_rgba(layer) for layer in layers], info.colors, image.shape)
    return paint_strokes(_committed(committed, image), painted, classes, lock=bool(lock))


def _committed(committed, image) -> np.ndarray:
    """The committed labels, or none (zeros) when there are none or they are another image's."""
    if committed is not None and np.shape(committed) == image.shape[:2]:
        return committed
    return np.zeros(image.shape[:2], np.uint8)


def _rgba(layer):
    if isinstance(layer, (str, Path, dict)):  # over the API a layer may arrive as a file
        from PIL import Image

        path = layer.get("path") if isinstance(layer, dict) else layer
        return np.asarray(Image.open(path).convert("RGBA"))
    return layer


def prefill(context: AppContext, dataset, image, model, threshold, class_name=None, request: gr.Request = None):
    """Put ``model``'s prediction of the open image, its classes matched to the dataset's by
    name, in the editor. A model of one class that the dataset does not have (GrabCut's "object",
    a vessel model's "vessel" in a dataset that calls it "artery") paints ``class_name`` (the
    assist panel's class; default: the dataset's first class after the background)."""
    dataset = _dataset(dataset)
    if image is None:
        raise refuse("open an image first")
    space = context.workspace(request)
    info = space.store.info(dataset)
    prediction, note = predict_within_budget(space.catalog.get(model), image, context.deadline(request),
                                             context.request_threads())
    table, unmatched = relabel_table(prediction.label_names, info.classes)
    unmatched = [name for name in unmatched if name != prediction.label_names[0]]  # its background is ours
    message = f"Pre-filled from **{prediction.model}**: correct what it got wrong, then save.{note}"
    if unmatched and len(prediction.label_names) == 2 and len(info.classes) > 1:
        target = class_name if class_name in info.classes[1:] else info.classes[1]
        table[1] = info.classes.index(target)
        message += f" Its class {unmatched[0]!r} is not in this dataset: it was painted as **{target}**."
    elif unmatched:
        message += f" Its classes {unmatched[:5]} are not in this dataset and were left as background."
        gr.Warning(f"{len(unmatched)} of the model's classes are not in this dataset")
    labels = table[prediction.labels(threshold)]
    return editor_value(image, labels, info.colors), labels, message


def cleanup(context: AppContext, dataset, painting, image, smallest_piece, committed=None, lock=False,
            request: gr.Request = None):
    """Remove painted specks and fill holes smaller than ``smallest_piece`` pixels."""
    store, dataset = context.workspace(request).store, _dataset(dataset)
    labels = clean_labels(_painted_labels(store, dataset, painting, image, committed, lock), min_area=int(smallest_piece))
    return editor_value(image, labels, store.info(dataset).colors), labels, "Removed specks and filled small holes."


def save(context: AppContext, dataset, painting, image, item, page=1, committed=None, lock=False,
         request: gr.Request = None):
    """Save the ``painting`` of the open image as ``item`` of ``dataset`` (an earlier version of
    ``item`` is kept in the dataset's history). The painting's layers paint over the labels the
    server last wrote for the open image (``/annotate_labels``): a transparent pixel leaves its
    label, the background's colour clears it. The labels saved are returned last (the new
    committed labels)."""
    store, dataset = context.workspace(request).store, _dataset(dataset)
    labels = _painted_labels(store, dataset, painting, image, committed, lock)
    result = store.save(dataset, item, image, labels)
    note = " The previous version is kept in the dataset's history." if result["replaced"] else ""
    return (f"Saved **{result['item']}**.{note}", *dataset_view(store, dataset, page)[3:], labels)


def current_labels(context: AppContext, dataset, image, committed, request: gr.Request):
    """``/annotate_labels``: the open image's labels as the server last wrote them (an opening,
    a pre-fill, a clean-up, a box, a fill, a save), as a PNG of class indices (palette: the
    dataset's class colors)."""
    info = context.workspace(request).store.info(_dataset(dataset))
    if image is None:
        raise refuse("open an image first")
    return png_file(_committed(committed, image), "labels.png", palette=info.colors)


def show_saved(context: AppContext, dataset, image, committed, request: gr.Request):
    """The editor after a save: the labels saved drawn in, no strokes left to apply."""
    return editor_value(image, committed, context.workspace(request).store.info(dataset).colors)


def delete(context: AppContext, dataset, item, page=1, request: gr.Request = None):
    """Delete ``item`` from ``dataset`` (it is kept in the dataset's history)."""
    store, dataset = context.workspace(request).store, _dataset(dataset)
    store.delete(dataset, item)
    return (f"Deleted **{item}** (kept in the dataset's history).", *dataset_view(store, dataset, page)[3:])


def export_folder(context: AppContext, dataset, request: gr.Request):
    """``dataset`` as a .zip in segdemo's folder format (classes.json, images/, masks/)."""
    dataset = _dataset(dataset)
    return str(context.workspace(request).store.export_zip(dataset, scratch_folder("export-") / f"{dataset}.zip"))


def export_voc(context: AppContext, dataset, request: gr.Request):
    """``dataset`` as a .zip in Pascal VOC's layout."""
    dataset = _dataset(dataset)
    return str(context.workspace(request).store.export_voc(dataset, scratch_folder("export-") / f"{dataset}-voc.zip"))


def export_coco(context: AppContext, dataset, request: gr.Request):
    """``dataset`` as a .zip in COCO's instance format (one RLE instance per connected region of a class)."""
    dataset = _dataset(dataset)
    return str(context.workspace(request).store.export_coco(dataset, scratch_folder("export-") / f"{dataset}-coco.zip"))


def import_dataset(context: AppContext, dataset_zip, name, request: gr.Request):
    """A new dataset ``name`` (default: the file's name) from a .zip in segdemo's folder format; its
    masks are checked first (the table: what the mask doctor found, fixed or noted)."""
    store = context.workspace(request).store
    path = required_upload(dataset_zip, "dataset zip", "choose a dataset .zip first", limit=1024 * 2**20)
    result = store.import_zip(path, name or safe_name(Path(path).stem, "imported"))
    findings = result["findings"]
    fixed = sum(finding.action == FIXED for finding in findings)
    note = f" The mask check fixed {fixed} problem{'s' if fixed != 1 else ''}: see the table." if fixed else \
        " The mask check found nothing to fix." if not findings else " The mask check noted a few things: see the table."
    return (gr.Dropdown(choices=store.datasets(), value=result["dataset"]),
            f"Imported **{result['dataset']}** with {result['items']} pairs.{note}",
            findings_table(findings))


def build(context: AppContext, model_choices: list[str]) -> dict:
    # A public app's page is built once for everybody: each visitor's datasets fill in when it loads.
    store = context.workspace().store if not context.public else None
    datasets = store.datasets() if store is not None else []
    first = datasets[0] if datasets else None
    first_info = store.info(first) if first else CLASS_PRESETS["shapes"]
    image_state = gr.State(None)
    committed = gr.State(None)   # the open image's labels as the server last wrote the editor (None: none)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            dataset = live_dropdown(datasets, value=first, label="dataset", elem_id="annotate-dataset")
            with gr.Accordion("new dataset", open=not datasets):
                new_name = gr.Textbox(label="name", placeholder="my-shapes", elem_id="annotate-new-name")
                preset = gr.Dropdown([*CLASS_PRESETS, CUSTOM], value="shapes", label="classes from")
                create_button = gr.Button("Create", elem_id="annotate-create")
            classes = gr.Textbox(class_lines(first_info), lines=6, label="classes (one per line: name #rrggbb; "
                                 "the first is the background)", elem_id="annotate-classes")
            save_classes_button = gr.Button("Save classes", size="sm")
            legend = gr.HTML(legend_html(first_info.classes, first_info.colors), label="legend")
            with gr.Accordion("open an image", open=True):
                upload = gr.File(label="upload", file_types=["image", ".tif", ".tiff"], elem_id="annotate-upload")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, label="shapes seed")
                    size = gr.Slider(64, 384, value=192, step=32, label="shapes size")
                shapes_button = gr.Button("Open a shapes image", size="sm", elem_id="annotate-open-shapes")
            with gr.Accordion("import / export", open=False):
                import_file = gr.File(label="import a dataset .zip", file_types=[".zip"], elem_id="annotate-import-file")
                import_name = gr.Textbox(label="name for the imported dataset")
                import_button = gr.Button("Import", size="sm", elem_id="annotate-import")
                import_check = gr.Dataframe(headers=list(HEADERS), label="mask check of the last import",
                                            interactive=False, wrap=True, column_widths=["28%", "48%", "24%"],
                                            elem_id="annotate-import-check")
                with gr.Row():
                    export_button = gr.Button("Export .zip", size="sm", elem_id="annotate-export")
                    export_voc_button = gr.Button("Export as VOC", size="sm")
                    export_coco_button = gr.Button("Export as COCO", size="sm", elem_id="annotate-export-coco")
                exported = gr.File(label="exported dataset", interactive=False, elem_id="annotate-exported")
            if context.public:
                sharing_panel.dataset_panel(context, dataset)
        with gr.Column(scale=3):
            message = gr.Markdown(label="message", elem_id="annotate-message")
            with gr.Row():
                editor = CheckedImageEditor(type="numpy", format="png", image_mode="RGBA", brush=brush_for(first_info.colors),
                                        eraser=gr.Eraser(default_size=10), transforms=(), layers=False, height=520, scale=3,
                                        label="paint the classes (first color = background)", elem_id="annotate-editor")
                uncertainty = uncertainty_panel.picture()
            with gr.Row():
                model = live_dropdown(model_choices, value=model_choices[0] if model_choices else None, label="model",
                                    scale=2, elem_id="annotate-model")
                threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="threshold", scale=1)
                prefill_button = gr.Button("Pre-fill from model", scale=1, elem_id="annotate-prefill")
            with gr.Accordion("assist: box → mask, flood fill, class lock", open=True):
                assist = assist_panel.build(context, assist_panel.Tab(_dataset, _painted_labels, editor_value, labels_drawn),
                                            dataset, legend, editor, image_state, committed, message, first_info.classes)
            with gr.Row():
                min_area = gr.Slider(2, 200, value=20, step=1, label="clean-up: smallest piece (pixels)", scale=2)
                cleanup_button = gr.Button("Clean up", scale=1, elem_id="annotate-cleanup")
            with gr.Row():
                item = gr.Textbox(label="save as", placeholder="image-name", scale=2, elem_id="annotate-item")
                save_button = gr.Button("Save", variant="primary", scale=1, elem_id="annotate-save")
                delete_button = gr.Button("Delete", variant="stop", scale=1, elem_id="annotate-delete")
            label_next = uncertainty_panel.build(context, dataset=dataset, model=model, image=image_state, editor=editor,
                                                 item=item, message=message, uncertainty=uncertainty, picked=_dataset,
                                                 opener=editor_value, committed=committed)
            progress = gr.Markdown(label="progress", elem_id="annotate-progress")
            gallery = gr.Gallery(label="saved pairs (click to reopen)", columns=6, height="auto", object_fit="contain", format="png",
                                 elem_id="annotate-gallery")
            with gr.Row():
                previous_page = gr.Button("◀ previous page", size="sm", elem_id="annotate-previous-page")
                next_page = gr.Button("next page ▶", size="sm", elem_id="annotate-next-page")
            page = gr.State(1)
            stats = gr.Dataframe(label="pixels per class", interactive=False, elem_id="annotate-stats")
            gr.Markdown(EXPLAIN, elem_classes="segdemo-explain")

    view_outputs = [classes, legend, editor, gallery, stats, progress, page]
    opened = [editor, committed, image_state, item, message]
    listing = [message, gallery, stats, progress, page]
    dataset.change(handler(show_dataset, context, heavy=True), [dataset], view_outputs, api_name="annotate_dataset")
    create_button.click(handler(create_dataset, context), [new_name, preset, classes], [dataset, message],
                        api_name="annotate_create")
    save_classes_button.click(handler(save_classes, context, heavy=True),
                              [dataset, classes, editor, image_state, committed, assist.lock_on], [*view_outputs, committed],
                              api_name="annotate_classes")
    from_upload = upload.upload(handler(open_upload, context, heavy=True), [dataset, upload], opened, api_name="annotate_open_upload")
    from_shapes = shapes_button.click(handler(open_shapes, context), [dataset, seed, size], opened, api_name="annotate_open_shapes")
    from_gallery = gallery.select(handler(open_clicked, context), [dataset, page], opened, api_visibility="private")
    for button, step in ((previous_page, -1), (next_page, 1)):
        button.click(handler(turn_page, context, step), [dataset, page], [gallery, progress, page],
                     api_visibility="private")
    with gr.Group(visible=False):  # the gallery's pages over the API
        api_page = gr.Number(value=1, precision=0, label="page")
        api_pairs = gr.Gallery(label="saved pairs", format="png")
        api_progress = gr.Markdown(label="progress")
        api_button = gr.Button("gallery page (API)")
    api_button.click(handler(show_page, context), [dataset, api_page], [api_pairs, api_progress, page],
                     api_name="annotate_gallery")
    with gr.Group(visible=False):  # the labels over the API
        api_labels = gr.File(label="labels (PNG of class indices)")
        labels_button = gr.Button("labels (API)")
    labels_button.click(handler(current_labels, context), [dataset, image_state, committed], [api_labels],
                        api_name="annotate_labels")
    open_hidden = gr.Button(visible=False)
    from_item = open_hidden.click(handler(open_item, context), [dataset, item], opened, api_name="annotate_open_item")
    prefilled = prefill_button.click(handler(prefill, context, heavy=True),
                                     [dataset, image_state, model, threshold, assist.class_name],
                                     [editor, committed, message], api_name="annotate_prefill", concurrency_id=INFERENCE)
    cleaned = cleanup_button.click(handler(cleanup, context, heavy=True),
                                   [dataset, editor, image_state, min_area, committed, assist.lock_on],
                                   [editor, committed, message], api_name="annotate_cleanup")
    saved = save_button.click(handler(save, context, heavy=True),
                              [dataset, editor, image_state, item, page, committed, assist.lock_on],
                              [*listing, committed], api_name="annotate_save")
    saved.success(handler(show_saved, context), [dataset, image_state, committed], [editor], api_visibility="private",
                  show_progress="hidden")
    label_next.follow(saved, dataset)
    assist.follow(opened=[from_upload, from_shapes, from_gallery, from_item], written=[prefilled, cleaned, saved])
    delete_button.click(handler(delete, context, heavy=True), [dataset, item, page], listing, api_name="annotate_delete")
    export_button.click(handler(export_folder, context), [dataset], [exported], api_name="annotate_export")
    export_voc_button.click(handler(export_voc, context), [dataset], [exported], api_name="annotate_export_voc")
    export_coco_button.click(handler(export_coco, context), [dataset], [exported], api_name="annotate_export_coco")
    import_button.click(handler(import_dataset, context, heavy=True), [import_file, import_name],
                        [dataset, message, import_check], api_name="annotate_import")
    return {"model": model, "dataset": dataset, "list_datasets": handler(list_datasets, context)}


__all__ = ["build"]
