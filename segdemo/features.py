"""Inside the U: what one image looks like at every stage of a network.

:func:`feature_maps` runs one image through a model with a forward hook on each of its named
``stages()`` (the U-Net's encoder, bottleneck, decoder and head; the FCN's backbone layers;
U²-Net's RSU blocks) and keeps, per stage, its output shape and a picture of its strongest channels.
:func:`u_picture` lays those pictures out as the figure in the U-Net paper: the encoder going down
on the left, the decoder coming up on the right, and the skip connections drawn across, each
stage labelled with its shape (channels × height × width). Models without named stages (the
pretrained torchvision ones) are refused with a :class:`FeaturesUnavailable` that says so.

The live run (:mod:`segdemo.engine.probes`) and the Models tab both call these, so a student sees
the same pictures while a model trains and after.
"""

from __future__ import annotations

import functools
import itertools
import re
import threading
from contextlib import nullcontext
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from . import viz
from .errors import UserError
from .runtime import normalize

CHANNELS_SHOWN = 4     # the strongest channels drawn per stage
CHANNEL_SIDE = 56      # pixels a side of each channel's picture
INPUT_NAME = "input"
ENCODER, DECODER, OTHER = "encoder", "decoder", "other"
CAPTION_ROOM = 34     # pixels under a stage card, where a gallery's caption goes
SKIP_COLOR = (235, 120, 20)
ARROW_COLOR = (90, 90, 90)


class FeaturesUnavailable(UserError):
    """A model whose stages segdemo cannot name (it has no ``stages()``)."""


@dataclass(frozen=True)
class StageMaps:
    """One stage's output for one image.

    Attributes:
        name: the stage as ``stages()`` names it ("encoder 1 (down)").
        shape: ``(C, H, W)`` of its output.
        channels: the indices of the channels drawn, strongest first.
        picture: ``(h, w, 3)`` uint8: those channels, each scaled from its own minimum (dark) to
            its maximum (bright), in a 2 × 2 grid, upscaled without smoothing (a coarse stage
            looks coarse).
    """

    name: str
    shape: tuple[int, int, int]
    channels: tuple[int, ...]
    picture: np.ndarray

    @property
    def caption(self) -> str:
        """The stage and its shape: ``encoder 1 (down) · 16×96×96``."""
        return f"{self.name} · {shape_text(self.shape)}"


def shape_text(shape) -> str:
    return "×".join(str(v) for v in shape)


def named_stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``model.stages()``, or a :class:`FeaturesUnavailable` for a model without them."""
    if not hasattr(model, "stages"):
        raise FeaturesUnavailable(f"feature maps are not available for {type(model).__name__}: it does not name "
                                  "its stages (the U-Net, the FCN and U²-Net do)")
    return model.stages()


def channel_grid(feature: torch.Tensor, count: int = CHANNELS_SHOWN, side: int = CHANNEL_SIDE
                 ) -> tuple[tuple[int, ...], np.ndarray]:
    """The ``count`` channels of a ``(C, H, W)`` feature with the largest mean magnitude, drawn in a
    2-column grid of ``side``-pixel pictures: ``(channel indices, (h, w, 3) uint8)``."""
    feature = feature.float()
    strength = feature.abs().mean(dim=(1, 2))
    chosen = tuple(int(i) for i in strength.argsort(descending=True)[:count])
    tiles = []
    for index in chosen:
        values = feature[index].cpu().numpy()
        interpolation = cv2.INTER_NEAREST if values.shape[0] <= side else cv2.INTER_AREA
        tiles.append(cv2.resize(viz.heat_picture(values), (side, side), interpolation=interpolation))
    while len(tiles) % 2 or len(tiles) < 2:
        tiles.append(np.full((side, side, 3), 255, dtype=np.uint8))
    rows = [viz.side_by_side(*tiles[i:i + 2], gap=2) for i in range(0, len(tiles), 2)]
    gap = np.full((2, rows[0].shape[1], 3), 255, dtype=np.uint8)
    stacked = [part for row in rows for part in (gap, row)][1:]
    return chosen, np.concatenate(stacked, axis=0)


@torch.inference_mode()
def feature_maps(model: nn.Module, image: torch.Tensor | np.ndarray, normalization: dict | None, *,
                 device: torch.device | str | None = None, autocast=None) -> list[StageMaps]:
    """The output of every named stage of ``model`` for one image, in the order data flows.

    Args:
        model: a segdemo model with ``stages()``; left in the train/eval mode it was in.
        image: uint8, ``(3, H, W)`` tensor or ``(H, W, 3)`` array.
        normalization: the model's input normalization (``{"mean", "std"}``, None: none).
        device: where the model is (default: where its first parameter is).
        autocast: a callable giving the autocast context to run in (a training run's precision);
            None runs in fp32.

    Returns one :class:`StageMaps` per stage (a stage called twice keeps its first output). The
    hooks record only this thread's forward pass, so a model that other threads predict with
    meanwhile (the app's loaded models) needs no copy.
    Raises :class:`FeaturesUnavailable` for a model without ``stages()``.
    """
    stages = named_stages(model)
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    device = device or next(model.parameters()).device
    outputs: dict[str, torch.Tensor] = {}
    hooks = []
    caller = threading.get_ident()
    for name, module in stages:
        def record(_module, _inputs, output, name=name):
            if threading.get_ident() != caller:  # another request predicting with the same (shared) model
                return
            first = output[0] if isinstance(output, (list, tuple)) else output
            outputs.setdefault(name, first[0].detach())
        hooks.append(module.register_forward_hook(record))
    was_training = model.training
    model.eval()
    try:
        x = normalize(image[None].to(device), normalization)
        with autocast() if autocast is not None else nullcontext():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    maps = []
    for name, _ in stages:
        if name in outputs:
            feature = outputs[name]
            chosen, picture = channel_grid(feature)
            maps.append(StageMaps(name, tuple(feature.shape), chosen, picture))
    return maps


def stage_place(name: str) -> tuple[str, int | None]:
    """``(role, number)`` of a stage from its name: ``("encoder", 2)`` for "encoder 2 (down)",
    ``("other", None)`` for a head or a backbone layer."""
    match = re.match(r"(encoder|decoder) (\d+)", name)
    return (match.group(1), int(match.group(2))) if match else (OTHER, None)


def font_for_labels():
    """The labels' font, loaded once (the first load reads the font file)."""
    return _font(13)


@functools.lru_cache(maxsize=8)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # a Pillow without FreeType: its fixed bitmap font
        return ImageFont.load_default()


def u_layout(names: list[str]) -> dict[str, tuple[int, int]]:
    """``name → (column, row)`` of each stage in a U: the input at column 0; encoder stages down
    the left, one row per level; the deepest (the bottleneck) at the bottom; decoder stage ``k`` on
    the right, in encoder ``k``'s row; other stages (a head) after the last decoder, on the top row.
    Without encoder stages (the FCN), everything in one row, in order."""
    places = {name: stage_place(name) for name in names}
    encoders = sorted(number for role, number in places.values() if role == ENCODER)
    layout = {INPUT_NAME: (0, 0)}
    if not encoders:
        for index, name in enumerate(names):
            layout[name] = (index + 1, 0)
        return layout
    row_of = {number: row for row, number in enumerate(encoders)}
    deepest = len(encoders) - 1
    for name in names:
        role, number = places[name]
        if role == ENCODER:
            layout[name] = (row_of[number] + 1, row_of[number])
        elif role == DECODER:
            row = row_of.get(number, 0)
            layout[name] = (2 * deepest + 1 - row, row)
    column = max(c for c, _ in layout.values())
    for name in names:
        if places[name][0] == OTHER:
            column += 1
            layout[name] = (column, 0)
    return layout


def u_picture(stages: list[StageMaps], image: np.ndarray | None = None, *, skips: bool = True,
              title: str | None = None) -> np.ndarray:
    """The stages laid out as a U (:func:`u_layout`), labelled with their names and shapes, with
    arrows along the data's path and the skip connections (encoder ``k`` → decoder ``k``) drawn
    across in orange when ``skips``. ``image`` (``(H, W, 3)`` uint8) is drawn as the input.
    Returns ``(H, W, 3)`` uint8."""
    names = [stage.name for stage in stages]
    layout = u_layout(names)
    by_name = {stage.name: stage for stage in stages}
    tile = max((stage.picture.shape[0] for stage in stages), default=2 * CHANNEL_SIDE + 2)
    font, small = _font(13), _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widest = max((probe.textlength(name.replace("×", "x"), font=font) for name in names), default=0)
    label_height, cell_width, row_height, margin = 34, int(max(150, tile + 24, widest + 12)), tile + 34 + 26, 16
    top = 44   # room for a title, or for the image widget's own label, which covers the top left
    columns = max(c for c, _ in layout.values()) + 1
    rows = max(r for _, r in layout.values()) + 1
    canvas = Image.new("RGB", (2 * margin + columns * cell_width, top + 2 * margin + rows * row_height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((margin, 22), title, fill=(20, 20, 20), font=_font(15))

    def box(name):  # the tile's (left, top, right, bottom)
        column, row = layout[name]
        left = margin + column * cell_width + (cell_width - tile) // 2
        upper = top + margin + row * row_height + label_height
        return left, upper, left + tile, upper + tile

    def arrow(start, end, color, width=2):
        draw.line([start, end], fill=color, width=width)
        direction = np.subtract(end, start).astype(float)
        direction /= max(np.linalg.norm(direction), 1e-6)
        normal = np.array([-direction[1], direction[0]])
        tip = np.array(end, dtype=float)
        head = [tuple(tip), tuple(tip - 9 * direction + 5 * normal), tuple(tip - 9 * direction - 5 * normal)]
        draw.polygon(head, fill=color)

    for before, after in itertools.pairwise([INPUT_NAME, *names]):   # the data's path
        (l0, t0, r0, b0), (l1, t1, r1, b1) = box(before), box(after)
        row0, row1 = layout[before][1], layout[after][1]
        if row1 > row0:
            arrow(((l0 + r0) // 2, b0 + 2), (l1 - 2, (t1 + b1) // 2), ARROW_COLOR)
        elif row1 < row0:
            arrow((r0 + 2, (t0 + b0) // 2), ((l1 + r1) // 2, b1 + 2), ARROW_COLOR)
        else:
            arrow((r0 + 2, (t0 + b0) // 2), (l1 - 2, (t1 + b1) // 2), ARROW_COLOR)
    if skips:
        encoders = {stage_place(n)[1]: n for n in names if stage_place(n)[0] == ENCODER}
        for name in names:
            role, number = stage_place(name)
            if role == DECODER and number in encoders and layout[encoders[number]][1] == layout[name][1]:
                (_, t0, r0, b0), (l1, t1, _, b1) = box(encoders[number]), box(name)
                y = t0 + tile // 3
                arrow((r0 + 2, y), (l1 - 2, y), SKIP_COLOR, width=3)
                draw.text(((r0 + l1) // 2 - 12, y - 16), "skip", fill=SKIP_COLOR, font=small)
    if image is not None:
        left, upper, right, _ = box(INPUT_NAME)
        thumbnail = cv2.resize(np.ascontiguousarray(image), (tile, tile), interpolation=cv2.INTER_AREA)
        canvas.paste(Image.fromarray(thumbnail), (left, upper))
        height, width = image.shape[:2]
        _label(draw, (left + right) // 2, upper - label_height, INPUT_NAME, f"3×{height}×{width}", font, small)
    for name in names:
        left, upper, right, _ = box(name)
        picture = by_name[name].picture
        canvas.paste(Image.fromarray(np.ascontiguousarray(picture)), (left, upper))
        _label(draw, (left + right) // 2, upper - label_height, name, shape_text(by_name[name].shape), font, small)
    return np.asarray(canvas)


def stage_card(stage: StageMaps) -> np.ndarray:
    """One stage's picture under its name and shape, ``(H, W, 3)`` uint8: what a gallery shows
    (its captions are cut short on a narrow picture). A white band at the bottom leaves room for
    the caption a gallery lays over the picture."""
    font, small = _font(13), _font(12)
    tile_height, tile_width = stage.picture.shape[:2]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = int(max(tile_width, probe.textlength(stage.name.replace("×", "x"), font=font))) + 12
    card = Image.new("RGB", (width, tile_height + 38 + CAPTION_ROOM), "white")
    draw = ImageDraw.Draw(card)
    _label(draw, width // 2, 2, stage.name, shape_text(stage.shape), font, small)
    card.paste(Image.fromarray(np.ascontiguousarray(stage.picture)), ((width - tile_width) // 2, 36))
    return np.asarray(card)


def _label(draw: ImageDraw.ImageDraw, centre: int, upper: int, name: str, shape: str, font, small) -> None:
    """A stage's name and shape, centred above its tile (Pillow's built-in font has no "×")."""
    for text, used, color, offset in ((name, font, (20, 20, 20), 0), (shape, small, (70, 70, 160), 16)):
        text = text.replace("×", "x")
        width = draw.textlength(text, font=used)
        draw.text((centre - width / 2, upper + offset), text, fill=color, font=used)
