"""Animated GIFs of pictures over time: a run's probe frames, for a slide or a chat.

GIF because every browser, slide program and chat shows it without a player; each frame gets a
caption band (``step 120 · Dice 0.61``) so the animation explains itself when shared alone.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CAPTION_HEIGHT = 26
FRAME_MILLISECONDS = 250     # 4 frames a second: 70 frames of a live run play in about 18 s
LAST_FRAME_MILLISECONDS = 2000   # the end result stays a moment before the loop starts again


def captioned(picture: np.ndarray, caption: str) -> Image.Image:
    """``picture`` ``(H, W, 3)`` uint8 under a white band with ``caption`` in it."""
    height, width = picture.shape[:2]
    frame = Image.new("RGB", (width, height + CAPTION_HEIGHT), "white")
    frame.paste(Image.fromarray(np.ascontiguousarray(picture)), (0, CAPTION_HEIGHT))
    try:
        font = ImageFont.load_default(size=15)
    except (TypeError, OSError):  # a Pillow without FreeType
        font = ImageFont.load_default()
    ImageDraw.Draw(frame).text((6, 4), caption, fill=(20, 20, 20), font=font)
    return frame


def animated_gif(pictures: list[np.ndarray], captions: list[str], *,
                 milliseconds: int = FRAME_MILLISECONDS) -> bytes:
    """An endlessly looping GIF of ``pictures`` (``(H, W, 3)`` uint8, all the same size), each
    under its caption, ``milliseconds`` apart (the last held longer). Raises ``ValueError`` for no
    pictures or a caption count that differs."""
    if not pictures:
        raise ValueError("an animation needs at least one picture")
    if len(captions) != len(pictures):
        raise ValueError(f"{len(pictures)} pictures but {len(captions)} captions")
    frames = [captioned(picture, caption).quantize(colors=255, method=Image.Quantize.MEDIANCUT)
              for picture, caption in zip(pictures, captions)]
    durations = [milliseconds] * (len(frames) - 1) + [LAST_FRAME_MILLISECONDS]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                   disposal=1)
    return buffer.getvalue()


def frame_caption(step: int, dice: float | None) -> str:
    """``step 120 · Dice 0.61``: how a probe frame is labelled on the page and in the GIF."""
    return f"step {step} · Dice {dice:.2f}" if dice is not None else f"step {step} · Dice –"


def timeline_gif(frames) -> bytes:
    """An animated GIF of a run's probe frames (:class:`~segdemo.engine.events.ProbeFrame`: PNG
    pictures of input | truth | prediction), each captioned with its step and Dice."""
    pictures = [np.asarray(Image.open(io.BytesIO(frame.image)).convert("RGB")) for frame in frames]
    return animated_gif(pictures, [f"{frame_caption(frame.step, frame.dice)}   (input | truth | prediction)"
                                   for frame in frames])
