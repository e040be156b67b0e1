"""The Annotate tab's assist panel: a box (and ± clicks) turned into a mask by GrabCut, a flood fill
by colour, and a class lock so that painting one class never erases another.

Gradio's ImageEditor has no box tool, so the box and the clicks are marked on a picture of the
open image (a ``gr.Image`` whose ``.select`` event gives the pixel clicked) and kept as text
(``x0,y0,x1,y1``; ``x,y; x,y``), which a person may also type and an API client sends. The
results are painted over the tab's labels (the labels as the server last wrote the editor, with
the strokes made since) for the chosen class through :func:`segdemo.assist.paint`; the rest is
kept. The picture shows the tab's labels over the image, as the editor does.

The lock also holds for the brush: the tab reads strokes with it (see
:func:`segdemo.assist.paint_strokes`), so the panel keeps the checkbox's value in a state that
the tab's clean-up and save read (their API endpoints keep their parameters).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import gradio as gr
import numpy as np

from .. import assist
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
other classes**, painting a class (with these tools or the brush) never paints over another class;
painting the background colour still clears.
"""


@dataclass(frozen=True)
class Tab:
    """The Annotate tab's helpers that the panel works with (handed in: the tab imports the panel)."""

    picked: Callable        # the dataset's name, refused when none is picked
    painted: Callable       # (store, dataset, painting, image, committed, lock) → the painting's labels (H, W)
    opener: Callable        # (image, labels, colors) → the editor's value
    drawn: Callable         # (image, labels or None, colors) → the image with the labels drawn over it


@dataclass
class AssistPanel:
    """What the Annotate tab wires to the panel: ``lock_on`` (the class lock's checkbox, kept in a
    ``gr.State``) and :meth:`follow`."""

    lock_on: gr.State
    class_name: gr.Dropdown   # the class a box, a fill or a one-class model's pre-fill paints
    follow_open: Callable
    follow_write: Callable

    def follow(self, *, opened=(), written=()) -> None:
        """After the tab's events that open an image (``opened``: the marks are cleared; a change
        of the open image is followed anyway, but reopening the same one is not a change) or write
        its labels (``written``: pre-fill, clean-up, save), redraw the picture."""
        for events, follower in ((opened, self.follow_open), (written, self.follow_write)):
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
        raise refuse(f"pick a class to paint: {class_name!r} is the background (to clear pixels, paint them with "
                     "its colour, the editor's first brush colour)")
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


def _checked(box) -> bool:
    """A checkbox's value, kept in a state."""
    return bool(box)


def _base(context: AppContext, tab: Tab, dataset, image, committed, request: gr.Request):
    """What the picture shows under the marks: the open image with the tab's labels drawn over it."""
    if image is None or not dataset:
        return image
    return tab.drawn(image, committed, context.workspace(request).store.info(dataset).colors)


def _open_image(image):
    if image is None:
        raise refuse("open an image first (upload one or open a shapes image)")
    return image


def _painted(tab: Tab, info, image, before, after, index, lock, what: str):
    """The editor, a message and the labels written after painting ``after`` over ``before``."""
    changed = int((after != before).sum())
    kept = " Other classes are locked: they kept their pixels." if lock else ""
    message = f"{what}: {changed} pixels changed to **{info.classes[index]}**.{kept}"
    return tab.opener(image, after, info.colors), message, after


def box_to_mask(context: AppContext, tab: Tab, dataset, painting, image, box, class_name, positive="", negative="",
                lock=False, committed=None, request: gr.Request = None):
    """``/annotate_box``: the object in ``box`` (``"x0,y0,x1,y1"`` in pixels, or a JSON list) of
    the open image, found by GrabCut and painted as ``class_name`` into ``painting``: the class's
    pixels in the box are replaced, the rest of the painting is kept. GrabCut starts from what is
    painted of that class in the box; ``positive`` and ``negative`` clicks (``"x,y; x,y"``) say
    "object here" and "background here". With ``lock``, other classes' pixels are never painted
    over by the box (the painting sent is taken as painted)."""
    return box_on_page(context, tab, dataset, painting, image, box, class_name, positive, negative, lock, committed,
                       False, request)[:3]


def box_on_page(context: AppContext, tab: Tab, dataset, painting, image, box, class_name, positive, negative, lock,
                committed, lock_strokes, request: gr.Request):
    """Box → mask over the labels the server last wrote (``committed``) with the painting's
    strokes; with ``lock_strokes`` (on the page: the lock) the strokes keep the lock too. Returns
    the editor, a message and the labels written."""
    store, dataset = context.workspace(request).store, tab.picked(dataset)
    info = store.info(dataset)
    image = _open_image(image)
    index = _class_index(info.classes, class_name)
    if not str(box or "").strip():
        raise refuse("mark a box first: choose 'box corner' and click two opposite corners of the object on the "
                     "picture (or type x0,y0,x1,y1)")
    height, width = image.shape[:2]
    x0, y0, x1, y1 = assist.check_box(assist.parse_box(box), height, width)
    labels = tab.painted(store, dataset, painting, image, committed, bool(lock_strokes))
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
         committed=None, request: gr.Request = None):
    """``/annotate_flood_fill``: paint the connected region around ``point`` (``"x,y"`` in pixels)
    of the open image whose colours are within ``tolerance`` (0–255 per channel) of the clicked
    pixel's as ``class_name`` into ``painting`` (the rest is kept). With ``lock``, other classes'
    pixels are never painted over by the fill (the painting sent is taken as painted)."""
    return fill_on_page(context, tab, dataset, painting, image, point, class_name, tolerance, lock, committed, False,
                        request)[:3]


def fill_on_page(context: AppContext, tab: Tab, dataset, painting, image, point, class_name, tolerance, lock,
                 committed, lock_strokes, request: gr.Request):
    """A flood fill over ``committed`` and the painting's strokes (see :func:`box_on_page`)."""
    store, dataset = context.workspace(request).store, tab.picked(dataset)
    info = store.info(dataset)
    image = _open_image(image)
    index = _class_index(info.classes, class_name)
    points = assist.parse_points(point)
    if len(points) != 1:
        raise refuse(f"flood fill takes one point x,y; got {point!r}")
    labels = tab.painted(store, dataset, painting, image, committed, bool(lock_strokes))
    region = assist.flood_fill(image, points[0], tolerance)
    result = assist.paint(labels, region, index, lock=bool(lock))
    x, y = points[0]
    return _painted(tab, info, image, labels, result, index, lock, f"Flood fill at ({x:.0f}, {y:.0f})")


def click(context: AppContext, tab: Tab, mode, corner, box, positive, negative, dataset, painting, image, class_name,
          tolerance, lock, committed, event: gr.SelectData, request: gr.Request):
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
        editor, message, committed = fill_on_page(context, tab, dataset, painting, image, f"{x},{y}", class_name,
                                                  tolerance, lock, committed, lock, request)
    picture = _picture(_base(context, tab, dataset, image, committed, request), box, positive, negative, corner)
    return picture, corner, box, positive, negative, editor, message, committed


def clear_marks(context: AppContext, tab: Tab, dataset, image, committed, request: gr.Request):
    """No box, corner or clicks: the picture shows the image and its labels only."""
    return marks_picture(_base(context, tab, dataset, image, committed, request)), None, "", "", ""


def redraw(context: AppContext, tab: Tab, dataset, image, committed, box, positive, negative, corner,
           request: gr.Request):
    """The picture: the image, its labels and the marks as they are typed."""
    return _picture(_base(context, tab, dataset, image, committed, request), box, positive, negative, corner)


def build(context: AppContext, tab: Tab, dataset, legend, editor, image_state, committed, message,
          classes) -> AssistPanel:
    """The panel (in the tab's layout where it is called); ``committed`` is the tab's state of the
    labels as the server last wrote the editor; ``classes`` are the first dataset's."""
    corner = gr.State(None)
    lock_on = gr.State(False)
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
    labels = [dataset, image_state, committed]
    redrawing = (handler(redraw, context, tab), [*labels, box, positive, negative, corner], [picture])
    picture.select(handler(click, context, tab, heavy=True),
                   [mode, *marks, dataset, editor, image_state, class_name, tolerance, lock, committed],
                   [picture, *marks, editor, message, committed], **private)
    box_button.click(handler(box_on_page, context, tab, heavy=True),
                     [dataset, editor, image_state, box, class_name, positive, negative, lock, committed, lock],
                     [editor, message, committed], **private).success(*redrawing, **private)
    clearing = (handler(clear_marks, context, tab), labels, [picture, *marks])
    clear_button.click(*clearing, **private)
    for typed in (box, positive, negative):
        typed.blur(*redrawing, **private)
    legend.change(handler(class_choices, context), [dataset], [class_name], **private)
    lock.change(_checked, [lock], [lock_on], queue=False, show_progress="hidden", **private)
    with gr.Group(visible=False):
        point = gr.Textbox(label="point (x,y)")
        box_api = gr.Button("box → mask (API)")
        fill_api = gr.Button("flood fill (API)")
    box_api.click(handler(box_to_mask, context, tab, heavy=True),
                  [dataset, editor, image_state, box, class_name, positive, negative, lock, committed],
                  [editor, message, committed], api_name="annotate_box")
    fill_api.click(handler(fill, context, tab, heavy=True),
                   [dataset, editor, image_state, point, class_name, tolerance, lock, committed],
                   [editor, message, committed], api_name="annotate_flood_fill")

    def follow_open(event):
        event.success(*clearing, **private)

    # Any other way of opening an image (the label-next panel's) changes the open image: follow it too.
    image_state.change(*clearing, **private)

    def follow_write(event):
        event.success(*redrawing, **private)

    return AssistPanel(lock_on, class_name, follow_open, follow_write)


__all__ = ["AssistPanel", "Tab", "build"]
