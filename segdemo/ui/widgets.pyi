"""What the tabs show alike: legends, numbers, pickers that grow, and the page's style."""

from __future__ import annotations

import html
import io
import warnings

import gradio as gr
import numpy as np
from PIL import Image

from ..limits import current

# Largest side of pictures sent to the browser: bigger images are predicted at full size but
# shown downscaled (a 4000×4000 overlay would be a 48 MB PNG).
DISPLAY_SIDE = 1600

CSS = """
.segdemo-legend { display: flex; flex-wrap: wrap; gap: 6px 14px; margin: 4px 0; }
.segdemo-chip { display: inline-flex; align-items: center; gap: 6px; font-size: 0.9em; }
.segdemo-chip span { display: inline-block; width: 14px; height: 14px; border-radius: 3px;
                     border: 1px solid rgba(0,0,0,0.25); }
.segdemo-progress { height: 14px; background: #e5e7eb; border-radius: 7px; overflow: hidden; }
.segdemo-progress div { height: 100%; background: #4f46e5; transition: width 0.4s; }
.segdemo-explain { font-size: 0.92em; opacity: 0.85; }
"""


def hex_color(color) -> str:
    return "#{:02x}{:02x}{:02x}".format(*[int(v) for v in color[:3]])


def legend_html(names, colors) -> str:
    """Colored chips naming each class."""
    chips = "".join(
        f'<span class="segdemo-chip"><span style="background:{hex_color(c)}"></span>{html.escape(str(n))}</span>'
        for n, c in zip(names, colors))
    return f'<div class="segdemo-legend">{chips}</div>'


def format_dice(value) -> str:
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.3f}"


def live_dropdown(choices, **options) -> gr.Dropdown:
    """A picker whose choices grow while the app runs (trained models, new datasets). Gradio
    checks a value against the choices the session was built with, which would refuse a model
    trained after the page (or API client) connected; the handlers check names themselves, with
    a clear message, so the server accepts any value here."""
    return gr.Dropdown(choices, allow_custom_value=True, **options)

from gradio.events import Dependency

class CheckedImageEditor(gr.ImageEditor):
    """A ``gr.ImageEditor`` that checks the size of every picture it is sent (background, layers,
    composite) from the picture's header, and their number, before gradio decodes them.

    Gradio's own preprocessing decodes and converts each picture before any handler runs: one
    13000² RGBA layer sent nine times to ``/annotate_save`` took 7.6 GB first. Here each side is
    held to ``editor_side`` and the layers to ``editor_layers`` (segdemo.limits); what is over
    is refused with a message and nothing is decoded."""

    is_template = True   # the page draws it as gradio's ImageEditor

    def preprocess(self, payload):
        if payload is not None:
            _check_pictures(_pictures(self, payload))
        return super().preprocess(payload)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def _pictures(editor: gr.ImageEditor, payload) -> list[tuple[str, object]]:
    """``(what, file path or bytes)`` of each picture in an editor's payload (sent as files over
    the API, or as blobs the page uploaded beforehand)."""
    blobs = editor.blob_storage.get(payload.id) if payload.id is not None else None
    source = blobs if blobs is not None else payload
    pictures = [("background", source.background), *[(f"layer {i + 1}", layer) for i, layer in
                                                      enumerate(source.layers or [])], ("composite", source.composite)]
    return [(what, getattr(picture, "path", picture)) for what, picture in pictures if picture is not None]


def _check_pictures(pictures: list[tuple[str, object]]) -> None:
    limits = current()
    layers = sum(1 for what, _ in pictures if what.startswith("layer"))
    if layers > limits.editor_layers:
        raise gr.Error(f"the painting has {layers} layers; the editor takes at most {limits.editor_layers} "
                       "(editor_layers)", print_exception=False)
    for what, picture in pictures:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(picture) if isinstance(picture, (bytes, bytearray)) else picture) as image:
                    width, height = image.size
        except Image.DecompressionBombError:
            width = height = None
        except (OSError, ValueError, SyntaxError) as error:
            raise gr.Error(f"the painting's {what} is not an image the editor can read", print_exception=False) \
                from error
        if width is None or max(width, height) > limits.editor_side:
            size = "" if width is None else f" is {width}×{height}:"
            raise gr.Error(f"the painting's {what}{size} too large; the editor takes pictures up to "
                           f"{limits.editor_side} pixels a side (editor_side)", print_exception=False)