"""The annotation editor: gradio's ImageEditor, with the pictures it is sent checked before they are decoded.

Gradio writes a typing stub (``editor.pyi``) beside any module that defines a component class;
it is kept in the repository so that nothing is written at run time.
"""

from __future__ import annotations

import io
import warnings

import gradio as gr
from PIL import Image

from ..limits import current


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
