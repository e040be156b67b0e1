"""Image files in and out: untrusted images and label masks read into numpy arrays, PNGs written.

Every loader and the app read pictures through :func:`read_image` and :func:`read_label_map`, so
that one place decides what is accepted: the checks happen on the header, before any pixel is
decoded, so a decompression bomb costs nothing. Every refusal raises :class:`~segdemo.errors.ImageError` with
a message fit to show a user.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

# 64 megapixels: an 8000×6000 (48 MP) photo is accepted, a 30000×30000 "bomb" is not.
MAX_PIXELS = 64_000_000
# Files larger than this are refused before they are read (a 64 MP RGB TIFF is 192 MB).
MAX_FILE_BYTES = 256 * 1024 * 1024


def _open_source(source: Any, max_bytes: int, name: str | None = None) -> tuple[Image.Image, str]:
    """Open ``source`` lazily with PIL (header only) and return it with a name for messages
    (``name`` if given: bytes and file objects have none of their own)."""
    given, name = name, name or "the image"
    if isinstance(source, dict) and "path" in source:  # a gradio FileData-like dict
        source = source["path"]
    if hasattr(source, "name") and not isinstance(source, (str, bytes, os.PathLike)) \
            and not hasattr(source, "read"):
        source = source.name  # tempfile wrappers handed over by web frameworks
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = path.name
        try:
            size = path.stat().st_size
        except OSError as error:
            raise ImageError(f"cannot read {name}: {error.strerror or error}") from error
        if size == 0:
            raise ImageError(f"{name} is empty (0 bytes)")
        if size > max_bytes:
            raise ImageError(f"{name} is {size / 2**20:.0f} MB; the limit is {max_bytes / 2**20:.0f} MB")
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        name = given or Path(str(getattr(source, "name", "") or "image")).name
        data = source.read(max_bytes + 1)
    else:
        raise ImageError(f"cannot read an image from a {type(source).__name__}")
    if len(data) == 0:
        raise ImageError(f"{name} is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageError(f"{name} is larger than the {max_bytes / 2**20:.0f} MB limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"{name} has too many pixels to open safely (over {MAX_PIXELS / 1e6:.0f} "
                         f"megapixels: {_reason(error)})") from error
    except UnidentifiedImageError as error:
        raise ImageError(f"{name} is not an image segdemo can read ({_reason(error)})") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageError(f"{name} could not be decoded ({_reason(error)})") from error
    return image, name


# PIL names the file object it read in its messages ("cannot identify image file <_io.BytesIO
# object at 0x7f…>"): a visitor should read the file's name instead.
_FILE_OBJECT = re.compile(r"\s*<_io\.\w+ object at 0x[0-9a-fA-F]+>|\s*<[\w.]+ name='[^']*'[^>]*>")


def _reason(error: Exception) -> str:
    text = _FILE_OBJECT.sub("", str(error).split("\n")[0]).strip()
    return text[:160] if text else type(error).__name__


def _checked_first_frame(image: Image.Image, name: str, max_pixels: int) -> Image.Image:
    """Check the size from the header, then decode only the first frame/page."""
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(f"{name} has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"{name} is {width}×{height} = {width * height / 1e6:.0f} megapixels; "
            f"the limit is {max_pixels / 1e6:.0f} megapixels"
        )
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # multi-page TIFF, animated GIF/PNG/WebP: the first frame
        image.load()
    except Image.DecompressionBombError as error:
        raise ImageError(f"{name} is too large to decode safely ({_reason(error)})") from error
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError(f"{name} could not be decoded; it may be truncated ({_reason(error)})") from error
    return image


def _high_depth_to_uint8(array: np.ndarray) -> np.ndarray:
    """Rescale a 16/32-bit or float image to 0..255 by its own range (what viewers show)."""
    array = array.astype(np.float64)
    finite = np.isfinite(array)
    if not finite.any():
        return np.zeros(array.shape, np.uint8)
    low, high = float(array[finite].min()), float(array[finite].max())
    if high <= low:
        return np.zeros(array.shape, np.uint8)
    scaled = (np.where(finite, array, low) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


_SWAPS_SIDES = (5, 6, 7, 8)   # EXIF orientations that turn the picture by 90°
_ORIENTATION = 0x0112


def _orientation_swaps(image: Image.Image) -> bool:
    try:
        return image.getexif().get(_ORIENTATION) in _SWAPS_SIDES
    except (OSError, ValueError, SyntaxError, TypeError, KeyError):
        return False


def image_size(source: Any, *, name: str | None = None, max_bytes: int = MAX_FILE_BYTES) -> tuple[int, int]:
    """``(height, width)`` of an image file as :func:`read_image` would return it (EXIF
    orientation applied), read from its header: no pixel is decoded, so the size of a
    decompression bomb costs nothing to learn. Undecodable data raises :class:`ImageError`."""
    image, name = _open_source(source, max_bytes, name)
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(f"{name} has no pixels ({width}×{height})")
    return (width, height) if _orientation_swaps(image) else (height, width)


def read_image(source: Any, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_FILE_BYTES,
               background: tuple[int, int, int] = (255, 255, 255), shrink_to: tuple[int, int] | None = None,
               name: str | None = None) -> np.ndarray:
    """Read any common image into an RGB array.

    Args:
        source: a path, the file's bytes, a binary file object, or a gradio upload (dict with
            ``path``). A numpy array is checked and converted as if it had been decoded.
        max_pixels: larger images are refused before they are decoded.
        background: the color that transparent pixels are composited onto.
        shrink_to: ``(height, width)`` to reduce the image to (area-averaged), for one larger than a
            request may process: JPEGs are decoded at a reduced scale by the codec itself, so a
            64-megapixel photo never exists whole in memory.
        name: what to call the image in messages (the file's name, for bytes read from a zip).

    Returns:
        ``(H, W, 3)`` uint8 array. EXIF orientation is applied; RGBA/LA/transparent palettes are
        composited onto ``background``; 16-bit and float images are rescaled by their range;
        CMYK is converted; multi-page files give their first page.

    Raises:
        ImageError: empty or undecodable data, a truncated file, a zero-sized image, or an
            image over ``max_pixels``.
    """
    if isinstance(source, np.ndarray):
        return _shrunk(_array_to_rgb(source, max_pixels), shrink_to, cv2.INTER_AREA)
    image, name = _open_source(source, max_bytes, name)
    if shrink_to is not None and image.format == "JPEG":
        height, width = shrink_to
        try:  # the codec decodes at 1/2, 1/4 or 1/8 scale, no smaller than asked
            image.draft("RGB", (height, width) if _orientation_swaps(image) else (width, height))
        except (OSError, ValueError):
            pass
    image = _checked_first_frame(image, name, max_pixels)
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, TypeError, KeyError):
        pass  # a broken EXIF block only loses the orientation, the pixels are still good
    return _shrunk(_pil_to_rgb(image, background), shrink_to, cv2.INTER_AREA)


def _shrunk(array: np.ndarray, size: tuple[int, int] | None, interpolation: int) -> np.ndarray:
    """``array`` resized to ``size`` = ``(height, width)`` if it is larger (never enlarged)."""
    if size is None or (array.shape[0] <= size[0] and array.shape[1] <= size[1]):
        return array
    height, width = min(size[0], array.shape[0]), min(size[1], array.shape[1])
    return cv2.resize(array, (width, height), interpolation=interpolation)


def _pil_to_rgb(image: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        gray = _high_depth_to_uint8(np.asarray(image))
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info
    ) or (mode in ("L", "RGB") and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return np.asarray(canvas.convert("RGB"))
    if mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


def _array_to_rgb(array: np.ndarray, max_pixels: int) -> np.ndarray:
    if array.ndim not in (2, 3) or array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"an image array must be H×W or H×W×C with pixels; got shape {array.shape}")
    if array.shape[0] * array.shape[1] > max_pixels:
        raise ImageError(f"the image has {array.shape[0] * array.shape[1] / 1e6:.0f} megapixels; "
                         f"the limit is {max_pixels / 1e6:.0f}")
    if array.dtype != np.uint8:
        array = _high_depth_to_uint8(array) if array.dtype != bool else array.astype(np.uint8) * 255
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    channels = array.shape[2]
    if channels == 1:
        return np.repeat(array, 3, axis=2)
    if channels == 3:
        return np.ascontiguousarray(array)
    if channels == 4:
        alpha = array[:, :, 3:4].astype(np.float32) / 255.0
        rgb = array[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    raise ImageError(f"an image array needs 1, 3 or 4 channels; got {channels}")


def read_label_map(source: Any, *, palette=None, max_pixels: int = MAX_PIXELS,
                   max_bytes: int = MAX_FILE_BYTES, shrink_to: tuple[int, int] | None = None,
                   name: str | None = None) -> np.ndarray:
    """Read a label mask: one class index per pixel.

    Palette ("P") images give their palette indices directly (VOC's way: no color lookup);
    grayscale images give their values; 1-bit images give 0/1. An RGB(A) mask is accepted when
    it is gray (R = G = B) or when ``palette`` (a sequence of ``(r, g, b)`` class colors) is given:
    each pixel then takes the index of the nearest palette color, which also undoes
    anti-aliasing.

    ``shrink_to`` = ``(height, width)`` reduces a larger mask by nearest neighbour (class indices
    stay class indices); ``name`` is what messages call it (see :func:`read_image`).

    Returns:
        ``(H, W)`` uint8 array.
    """
    return _shrunk(_read_label_map(source, palette, max_pixels, max_bytes, name), shrink_to, cv2.INTER_NEAREST)


def _read_label_map(source: Any, palette, max_pixels: int, max_bytes: int, name: str | None) -> np.ndarray:
    pixels = read_mask_pixels(source, max_pixels=max_pixels, max_bytes=max_bytes, name=name)
    if pixels.values.ndim == 2:
        return pixels.values
    if palette is not None:
        return nearest_palette_index(pixels.values, palette)
    raise ImageError(f"{'this mask' if name is None else name} is a color (RGB) image; save it as a palette "
                     "or grayscale PNG of class indices")


@dataclass(frozen=True)
class MaskPixels:
    """A mask file's pixels as stored, decoded once: ``values`` is ``(H, W)`` uint8 for an index
    mask (palette, grayscale, 1-bit, 16-bit within 0–255, or an RGB image whose R = G = B) and
    ``(H, W, 3)`` uint8 for a color mask; ``palette`` is a palette PNG's ``(256, 3)`` colors
    (None for any other kind); ``name`` is what messages call the file."""

    values: np.ndarray
    palette: np.ndarray | None
    name: str


def read_mask_pixels(source: Any, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_FILE_BYTES,
                     name: str | None = None) -> MaskPixels:
    """Decode a mask file (or check an array) without interpreting its colors: what
    :func:`read_label_map` and :mod:`segdemo.mask_doctor` both start from. The same header
    checks as :func:`read_image` come first."""
    if isinstance(source, np.ndarray):
        return MaskPixels(_index_or_color(source, name), None, name or "the mask")
    image, name = _open_source(source, max_bytes, name)
    image = _checked_first_frame(image, name, max_pixels)
    if image.mode == "P":
        flat = np.asarray(image.getpalette("RGB") or [], dtype=np.uint8)[:768]
        return MaskPixels(np.array(image, dtype=np.uint8), flat[:len(flat) // 3 * 3].reshape(-1, 3), name)
    if image.mode in ("L", "1"):
        return MaskPixels(np.array(image, dtype=np.uint8), None, name)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image)
        if array.min() < 0 or array.max() > 255:
            raise ImageError(f"{name} holds label values up to {array.max()}; class indices must be 0–255")
        return MaskPixels(array.astype(np.uint8), None, name)
    if image.mode == "LA":
        return MaskPixels(np.array(image.getchannel("L"), dtype=np.uint8), None, name)
    return MaskPixels(_index_or_color(np.asarray(image.convert("RGB")), name), None, name)


def _index_or_color(array: np.ndarray, name: str | None) -> np.ndarray:
    """An array mask as ``(H, W)`` indices, or ``(H, W, 3)`` colors when it is not gray."""
    if array.ndim == 2:
        if array.dtype != np.uint8:
            if array.size and (array.min() < 0 or array.max() > 255):
                raise ImageError("label values must be 0–255")
            array = array.astype(np.uint8)
        return array
    if array.ndim != 3 or array.shape[2] < 3:
        raise ImageError(f"a label mask must be H×W or H×W×3; got shape {array.shape}")
    rgb = np.ascontiguousarray(array[:, :, :3], dtype=np.uint8)
    if np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2]):
        return rgb[:, :, 0].copy()
    return rgb


def nearest_palette_index(rgb: np.ndarray, palette) -> np.ndarray:
    """Map each RGB pixel ``(H, W, 3)`` to the index of the nearest color in ``palette``."""
    colors = np.asarray(palette, dtype=np.int32).reshape(-1, 3)
    if len(colors) == 0 or len(colors) > 256:
        raise ValueError("a palette needs 1 to 256 colors")
    flat = rgb.reshape(-1, 3).astype(np.int32)
    # Only distinct colors need a distance: painted masks have few of them.
    unique, inverse = np.unique(flat, axis=0, return_inverse=True)
    distances = ((unique[:, None, :] - colors[None, :, :]) ** 2).sum(axis=2)
    return distances.argmin(axis=1).astype(np.uint8)[inverse.reshape(-1)].reshape(rgb.shape[:2])


def check_same_size(image: np.ndarray, mask: np.ndarray, what: str = "mask") -> None:
    """Raise :class:`ImageError` naming both sizes when an ``(H, W[, 3])`` mask does not fit
    an ``(H, W, 3)`` image."""
    check_sizes_match(image.shape[:2], mask.shape[:2], what)


def check_sizes_match(image_size: tuple[int, int], mask_size: tuple[int, int], what: str = "mask") -> None:
    """Raise :class:`ImageError` naming both sizes when a mask of ``(H, W)`` ``mask_size`` does not
    fit an image of ``image_size`` (sizes read from the files' headers: nothing decoded yet)."""
    (image_h, image_w), (mask_h, mask_w) = image_size, mask_size
    if (image_h, image_w) != (mask_h, mask_w):
        raise ImageError(
            f"the {what} is {mask_w}×{mask_h} pixels but the image is {image_w}×{image_h}; "
            "they must be the same size"
        )


def save_png(path: str | os.PathLike, array: np.ndarray, palette=None) -> None:
    """Write ``array`` as PNG; with ``palette`` an ``(H, W)`` index array becomes a palette PNG."""
    if palette is not None:
        image = Image.fromarray(np.asarray(array, dtype=np.uint8), mode="P")
        flat = [int(v) for color in palette for v in color]
        image.putpalette(flat + [0] * (768 - len(flat)))
    else:
        image = Image.fromarray(np.asarray(array))
    image.save(path, format="PNG")


def png_bytes(array: np.ndarray, palette=None) -> bytes:
    """Encode ``array`` as PNG bytes (see :func:`save_png`)."""
    buffer = io.BytesIO()
    save_png(buffer, array, palette)
    return buffer.getvalue()
