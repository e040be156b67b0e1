"""The Annotate tab's assist panel: a box (and ± clicks) turned into a mask by GrabCut, a flood fill
by colour, and a class lock so that painting one class never erases another.

Gradio's ImageEditor has no box tool, so the box and the clicks are marked on a picture of the
open image (a ``gr.Image`` whose ``.select`` event gives the pixel clicked) and kept as text
(``x0,y0,x1,y1``; ``x,y; x,y``), which a person may also type and an API client sends. The
results are painted into the editor for the chosen class through :func:`segdemo.assist.paint`;
the rest of the painting is kept. The picture also shows the painting as the server last read or
wrote it (gradio 6.31's editor, in Chromium at least, does not draw the layers it is sent).

The lock also holds for the brush and the eraser: while it is set, the panel keeps the labels as
they were when it was set (or a tool or an opening last wrote the editor) in a
:class:`~segdemo.assist.ClassLock`, and gives the other classes back what a stroke took from them
when the painting is next read (a box, a fill, a save, another class picked).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import gradio as gr
import numpy as np

from .. import assist, viz
from ..assist import ClassLock
from ..errors import ImageError
from .context import AppContext
from .messages import handler, refuse

BOX, POSITIVE, NEGATIVE, FILL = "box corner", "+ object", "− background", "flood fill"
MODES = (BOX, POSITIVE, NEGATIVE, FILL)
PICTURE_SIDE = 384        # small images are enlarged on the picture to at most this side
TOLERANCE = 32            # flood fill's default colour tolerance (0–255 per channel)
MARK_COLORS = {"box": (255, 0, 255), POSITIVE: (0, 220, 0), NEGATIVE: (255, 40, 40)}

EXPLAIN = """
**Box → mask.** Pick the class, choose *box corner* and click two opposite corners of the object on
the picture, then press **Box → mask**: GrabCut finds the object in the box (starting from what is
already painted of that class there). Wrong? Add *+ object* or *− background* clicks and press it
again. *Flood fill* paints the connected region of similar colour around a click. With **lock
other classes**, painting (with these tools or the brush) never erases another class.
"""


@dataclass(frozen=True)
class Tab:
    """The Annotate tab's helpers that the panel works with (handed in: the tab imports the panel)."""

    picked: Callable        # the dataset's name, refused when none is picked
    painted: Callable       # (store, dataset, painting, image) → the painting's labels (H, W)
    opener: Callable        # (image, labels, colors) → the editor's value


@dataclass
class AssistPanel:
    """What the Annotate tab wires to the panel: ``locked`` (the class lock, a ``gr.State``; the
    tab's save applies it) and :meth:`follow`."""

    locked: gr.State
    follow_open: object
    follow_edit: object
    follow_save: object

    def follow(self, *, opened=(), edited=(), saved=()) -> None:
        """After the tab's events that open an image (``opened``; a change of the open image is
        followed anyway, but reopening the same one is not a change), rewrite the painting
        (``edited``: pre-fill, clean-up) or save it (``saved``), bring the picture and the lock
        up to date."""
        for events, follower in ((opened, self.follow_open), (edited, self.follow_edit), (saved, self.follow_save)):
            for event in events:
                follower(event)


def class_choices(context: AppContext, dataset, request: gr.Request):
    """The class picker for ``dataset``: its classes but the background (the current pick kept
    when it is still one of them)."""
    if not dataset:
        return gr.skip()
    classes = list(context.workspace(request).store.info(dataset).classes[1:])
    return gr.Dropdown(choices=classes, value=classes[0] if classes else None)


def _class_index(classes, class_name) -> int:
    if not class_name:
        raise refuse("pick the class to paint first")
    if class_name == classes[0]:
        raise refuse(f"pick a class to paint: {class_name!r} is the background (the eraser paints it)")
    if class_name not in classes[1:]:
        raise refuse(f"{class_name!r} is not a class of this dataset (its classes: {', '.join(classes[1:])})")
    return classes.index(class_name)


def display_factor(image) -> int:
    """How many times a small image is enlarged on the picture (nearest neighbour), so that each
    pixel is a target a click can hit: the largest whole factor that keeps it within
    ``PICTURE_SIDE`` pixels a side (1 for larger images)."""
    return max(1, PICTURE_SIDE // max(image.shape[:2]))


def marks_picture(image, box=None, corner=None, positive=None, negative=None) -> np.ndarray | None:
    """The open image (enlarged by :func:`display_factor`) with the marks drawn on it: the box as
    a rectangle, a first corner as a cross, + clicks green, − clicks red (each as large as the area
    it marks)."""
    if image is None:
        return None
    factor = display_factor(image)
    picture = np.ascontiguousarray(np.repeat(np.repeat(image[:, :, :3], factor, axis=0), factor, axis=1))
    thick = max(1, round(max(picture.shape[:2]) / 300))
    radius = max(assist.CLICK_RADIUS * factor, 3 * thick)

    def at(point) -> list[int]:
        """Image coordinates ``(x, y, …)`` on the picture, held to it (a typed number may be anything)."""
        return [int(np.clip(value, -1, image.shape[1 - i % 2] + 1)) * factor for i, value in enumerate(point)]

    def outlined(draw):
        draw((0, 0, 0), thick + 2)   # a dark rim keeps each mark visible on light and dark images
        draw(None, thick)

    def rectangle(color, width):
        x0, y0, x1, y1 = at(box)
        cv2.rectangle(picture, (x0, y0), (x1 - 1, y1 - 1), color or MARK_COLORS["box"], width)

    def cross(color, width):
        x, y = (value + factor // 2 for value in at(corner))
        cv2.drawMarker(picture, (x, y), color or MARK_COLORS["box"], cv2.MARKER_CROSS, 4 * radius, width)

    if box is not None:
        outlined(rectangle)
    if corner is not None:
        outlined(cross)
    for points, mode in ((positive, POSITIVE), (negative, NEGATIVE)):
        for x, y in (at(point) for point in points or ()):
            center = (x + factor // 2, y + factor // 2)
            cv2.circle(picture, center, radius + 1, (0, 0, 0), -1)
            cv2.circle(picture, center, radius, MARK_COLORS[mode], -1)
    return picture


def _typed(text, parse):
    """``text`` parsed by ``parse``, or None when it does not parse (only for drawing it)."""
    try:
        return parse(text) if text else None
    except ImageError:
        return None


def _picture(base, box_text, positive_text, negative_text, corner=None):
    return marks_picture(base, _typed(box_text, assist.parse_box), corner,
                         _typed(positive_text, assist.parse_points), _typed(negative_text, assist.parse_points))


def _shown(image, labels, colors) -> np.ndarray | None:
    """What the picture shows under the marks: the image with the painting over it (None: the
    bare image). The picture mirrors the painting as the server last read or wrote it."""
    return viz.overlay_labels(image, labels, colors, opacity=0.6) if labels.any() else None


def _open_image(image):
    if image is None:
        raise refuse("open an image first (upload one or open a shapes image)")
    return image


def _locked_labels(tab: Tab, store, dataset, painting, image, locked: ClassLock | None) -> np.ndarray:
    """The painting's labels, with the lock's classes given back what the brush took."""
    labels = tab.painted(store, dataset, painting, image)
    return locked.apply(labels) if locked is not None else labels


def _painted(tab: Tab, info, image, before, after, index, lock, what: str):
    """The editor, a message, the lock and the picture's painting after painting ``after`` over ``before``."""
    changed = int((after != before).sum())
    kept = " Other classes are locked: they kept their pixels." if lock else ""
    message = f"{what}: {changed} pixels changed to **{info.classes[index]}**.{kept}"
    return (tab.opener(image, after, info.colors), message, ClassLock(after, index) if lock else None,
            _shown(image, after, info.colors))


def box_to_mask(context: AppContext, tab: Tab, dataset, painting, image, box, class_name, positive="", negative="",
                lock=False, request: gr.Request = None):
    """``/annotate_box``: the object in ``box`` (``"x0,y0,x1,y1"`` in pixels, or a JSON list) of
    the open image, found by GrabCut and painted as ``class_name`` into ``painting``: the class's
    pixels in the box are replaced, the rest of the painting is kept. GrabCut starts from what is
    painted of that class in the box; ``positive`` and ``negative`` clicks (``"x,y; x,y"``) say
    "object here" and "background here". With ``lock``, other classes' pixels are never painted
    over."""
    return box_on_page(context, tab, dataset, painting, image, box, class_name, positive, negative, lock, None,
                       request)[:2]


def box_on_page(context: AppContext, tab: Tab, dataset, painting, image, box, class_name, positive, negative, lock,
                locked: ClassLock | None, request: gr.Request):
    """Box → mask on the page: ``/annotate_box`` with the page's class lock (``locked``), which
    also gives the other classes back what the brush took from them; the lock after it and the
    picture's painting are returned too."""
    store, dataset = context.workspace(request).store, tab.picked(dataset)
    info = store.info(dataset)
    image = _open_image(image)
    index = _class_index(info.classes, class_name)
    if not str(box or "").strip():
        raise refuse("mark a box first: choose 'box corner' and click two opposite corners of the object on the "
                     "picture (or type x0,y0,x1,y1)")
    height, width = image.shape[:2]
    x0, y0, x1, y1 = assist.check_box(assist.parse_box(box), height, width)
    labels = _locked_labels(tab, store, dataset, painting, image, locked)
    found = assist.box_mask(image, (x0, y0, x1, y1), mask=labels == index, positive=assist.parse_points(positive),
                            negative=assist.parse_points(negative))
    if not found.any():
        raise refuse("GrabCut found no object in the box: add '+ object' clicks on it, or draw the box closer "
                     "around it")
    inside = np.zeros(labels.shape, bool)
    inside[y0:y1, x0:x1] = True
    cleared = np.where(inside & (labels == index), 0, labels).astype(labels.dtype)
    result = assist.paint(cleared, found, index, lock=bool(lock))
    return _painted(tab, info, image, labels, result, index, lock, f"Box → mask ({x1 - x0}×{y1 - y0} box)")


def fill(context: AppContext, tab: Tab, dataset, painting, image, point, class_name, tolerance=TOLERANCE, lock=False,
         request: gr.Request = None):
    """``/annotate_flood_fill``: paint the connected region around ``point`` (``"x,y"`` in pixels)
    of the open image whose colours are within ``tolerance`` (0–255 per channel) of the clicked
    pixel's as ``class_name`` into ``painting`` (the rest is kept). With ``lock``, other classes'
    pixels are never painted over."""
    return fill_on_page(context, tab, dataset, painting, image, point, class_name, tolerance, lock, None, request)[:2]


def fill_on_page(context: AppContext, tab: Tab, dataset, painting, image, point, class_name, tolerance, lock,
                 locked: ClassLock | None, request: gr.Request):
    """A flood fill on the page: ``/annotate_flood_fill`` with the page's class lock (``locked``);
    the lock after it and the picture's painting are returned too."""
    store, dataset = context.workspace(request).store, tab.picked(dataset)
    info = store.info(dataset)
    image = _open_image(image)
    index = _class_index(info.classes, class_name)
    points = assist.parse_points(point)
    if len(points) != 1:
        raise refuse(f"flood fill takes one point x,y; got {point!r}")
    labels = _locked_labels(tab, store, dataset, painting, image, locked)
    region = assist.flood_fill(image, points[0], tolerance)
    result = assist.paint(labels, region, index, lock=bool(lock))
    x, y = points[0]
    return _painted(tab, info, image, labels, result, index, lock, f"Flood fill at ({x:.0f}, {y:.0f})")


def click(context: AppContext, tab: Tab, mode, corner, box, positive, negative, dataset, painting, image, class_name,
          tolerance, lock, locked: ClassLock | None, shown, event: gr.SelectData, request: gr.Request):
    """A click on the picture: a box corner, a ± click, or a flood fill there (by ``mode``)."""
    image = _open_image(image)
    x, y = (int(v) // display_factor(image) for v in event.index[:2])
    editor = message = gr.skip()
    if mode == BOX and corner is None:
        corner, message = (x, y), f"First corner at ({x}, {y}): click the opposite corner."
    elif mode == BOX:
        (cx, cy), corner = corner, None
        box = f"{min(x, cx)},{min(y, cy)},{max(x, cx) + 1},{max(y, cy) + 1}"
        message = f"Box {box}: press **Box → mask** (or add ± clicks first)."
    elif mode in (POSITIVE, NEGATIVE):
        clicks = positive if mode == POSITIVE else negative
        clicks = f"{clicks}; {x},{y}" if str(clicks or "").strip() else f"{x},{y}"
        positive, negative = (clicks, negative) if mode == POSITIVE else (positive, clicks)
    elif mode == FILL:
        editor, message, locked, shown = fill_on_page(context, tab, dataset, painting, image, f"{x},{y}", class_name,
                                                      tolerance, lock, locked, request)
    picture = _picture(image if shown is None else shown, box, positive, negative, corner)
    return picture, corner, box, positive, negative, editor, message, locked, shown


def clear_marks(shown, image):
    """No box, corner or clicks: the picture shows the image and its painting only."""
    return marks_picture(image if shown is None else shown), None, "", "", ""


def redraw(shown, image, box, positive, negative, corner):
    """The picture: the image, its painting and the marks as they are typed."""
    return _picture(image if shown is None else shown, box, positive, negative, corner)


def remember(context: AppContext, tab: Tab, dataset, painting, image, lock, class_name, request: gr.Request):
    """The lock and the picture's painting after the editor was written (an image opened, a
    pre-fill, a clean-up): what it shows now is what the lock keeps."""
    if image is None or not dataset:
        return None, None
    store = context.workspace(request).store
    info = store.info(dataset)
    labels = tab.painted(store, dataset, painting, image)
    locked = ClassLock(labels, info.classes.index(class_name)) if lock and class_name in info.classes[1:] else None
    return locked, _shown(image, labels, info.colors)


def settle(context: AppContext, tab: Tab, dataset, painting, image, lock, class_name, locked: ClassLock | None,
           request: gr.Request):
    """The lock applied to the painting (the editor shows it when a stroke was undone), then set
    again for the class picked now (after a save, a new class, the lock ticked or unticked)."""
    if image is None or not dataset:
        return gr.skip(), None, None
    store = context.workspace(request).store
    info = store.info(dataset)
    labels = tab.painted(store, dataset, painting, image)
    kept = locked.apply(labels) if locked is not None else labels
    editor = tab.opener(image, kept, info.colors) if not np.array_equal(kept, labels) else gr.skip()
    index = info.classes.index(class_name) if class_name in info.classes[1:] else None
    return editor, ClassLock(kept, index) if lock and index is not None else None, _shown(image, kept, info.colors)


def build(context: AppContext, tab: Tab, dataset, legend, editor, image_state, message, classes) -> AssistPanel:
    """The panel (in the tab's layout where it is called); ``classes`` are the first dataset's."""
    locked = gr.State(None)
    corner = gr.State(None)
    shown = gr.State(None)   # the image with the painting over it, under the marks
    with gr.Row():
        picture = gr.Image(type="numpy", interactive=False, format="png", height=400, scale=3,
                           label="click to mark (box corners, ± clicks, flood fill)", elem_id="assist-picture")
        with gr.Column(scale=2, min_width=260):
            mode = gr.Radio(list(MODES), value=BOX, label="a click on the picture marks", elem_id="assist-mode")
            class_name = gr.Dropdown(list(classes[1:]), value=classes[1] if len(classes) > 1 else None,
                                     label="class", allow_custom_value=True, elem_id="assist-class")
            lock = gr.Checkbox(False, label="lock other classes (painting never erases them)", elem_id="assist-lock")
            tolerance = gr.Slider(0, 128, value=TOLERANCE, step=1, label="flood fill tolerance",
                                  elem_id="assist-tolerance")
            with gr.Row():
                box_button = gr.Button("Box → mask", variant="primary", elem_id="assist-box")
                clear_button = gr.Button("clear marks", elem_id="assist-clear")
            box = gr.Textbox(label="box (x0,y0,x1,y1)", elem_id="assist-box-text")
            positive = gr.Textbox(label="+ object clicks (x,y; x,y)", elem_id="assist-positive")
            negative = gr.Textbox(label="− background clicks", elem_id="assist-negative")
    gr.Markdown(EXPLAIN, elem_classes="segdemo-explain")

    marks = [corner, box, positive, negative]
    private = {"api_visibility": "private"}
    redrawing = (handler(redraw), [shown, image_state, box, positive, negative, corner], [picture])
    picture.select(handler(click, context, tab, heavy=True),
                   [mode, *marks, dataset, editor, image_state, class_name, tolerance, lock, locked, shown],
                   [picture, *marks, editor, message, locked, shown], **private)
    box_button.click(handler(box_on_page, context, tab, heavy=True),
                     [dataset, editor, image_state, box, class_name, positive, negative, lock, locked],
                     [editor, message, locked, shown], **private).success(*redrawing, **private)
    clearing = (handler(clear_marks), [shown, image_state], [picture, *marks])
    clear_button.click(*clearing, **private)
    for typed in (box, positive, negative):
        typed.blur(*redrawing, **private)
    legend.change(handler(class_choices, context), [dataset], [class_name], **private)
    settling = handler(settle, context, tab, heavy=True)
    lock_inputs = [dataset, editor, image_state, lock, class_name]
    for changed in (class_name.input, lock.input):
        changed(settling, [*lock_inputs, locked], [editor, locked, shown], **private).success(*redrawing, **private)
    # Over the API a painting goes in and comes out: the page's lock (kept between calls) stays out of it.
    with gr.Group(visible=False):
        point = gr.Textbox(label="point (x,y)")
        box_api = gr.Button("box → mask (API)")
        fill_api = gr.Button("flood fill (API)")
    box_api.click(handler(box_to_mask, context, tab, heavy=True),
                  [dataset, editor, image_state, box, class_name, positive, negative, lock], [editor, message],
                  api_name="annotate_box")
    fill_api.click(handler(fill, context, tab, heavy=True),
                   [dataset, editor, image_state, point, class_name, tolerance, lock], [editor, message],
                   api_name="annotate_flood_fill")

    remembering = handler(remember, context, tab, heavy=True)

    def follow_open(event):
        event.success(remembering, lock_inputs, [locked, shown], **private).success(*clearing, **private)

    # Any other way of opening an image (the label-next panel's) changes the open image: follow it too.
    image_state.change(remembering, lock_inputs, [locked, shown], **private).success(*clearing, **private)

    def follow_edit(event):
        event.success(remembering, lock_inputs, [locked, shown], **private).success(*redrawing, **private)

    def follow_save(event):
        event.success(settling, [*lock_inputs, locked], [editor, locked, shown], **private) \
             .success(*redrawing, **private)

    return AssistPanel(locked, follow_open, follow_edit, follow_save)


__all__ = ["AssistPanel", "Tab", "build"]
