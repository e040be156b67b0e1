"""The classic six-class synthetic shapes, generated with numpy broadcasting.

Each image holds one of each shape at a random position and size (about 6–12 % of the image
side, scaled per shape); shapes may overlap. The input is white on black; the target has one
binary mask per class, in the order of :data:`CLASSES`. Two classes teach something special:

- the **ring** is hollow (the annulus between 0.7 r and r), so the network must tell it from the
  **disk** by its inside;
- the **mesh square** is drawn as dots on odd rows and columns, but its target is the whole square,
  so the network must fill in the gaps from context.

This follows the data of the popular pytorch-unet tutorial, with every shape of a batch drawn at
once from separable row/column tests (no per-pixel loops, no full-image ``np.mgrid`` per shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import SettingsError
from ..runtime import IDENTITY
from ..tasks import MULTILABEL
from .base import DatasetInfo, DataSource, register_source

CLASSES = ("filled square", "disk", "triangle", "ring", "mesh square", "plus")
COLORS = ((201, 58, 64), (242, 207, 1), (0, 152, 75), (101, 172, 228), (56, 34, 132), (160, 194, 56))
INFO = DatasetInfo(name="shapes", task=MULTILABEL, classes=CLASSES, colors=COLORS)
# The best Dice any model can reach per class, where the data itself hides the answer: the mesh
# square's target is a filled box around dots on odd rows and columns, so whether the box has one
# more dot-free row or column is invisible in the input (about 0.94). The per-class curves mark it.
CEILINGS = {"mesh square": 0.94}

DEFAULT_SIZE = (192, 192)
# Per-class size factors of the classic data: the disk is small, the plus large.
SIZE_FACTOR = {"filled square": 0.8, "disk": 0.5, "triangle": 1.0, "ring": 0.7,
               "mesh square": 1.0, "plus": 1.2}
RING_INNER = 0.7


@dataclass(frozen=True)
class _Placement:
    """Where each of N shapes of one class sits: center row/column and size in pixels, each (N,)."""

    row: np.ndarray
    col: np.ndarray
    size: np.ndarray


def _place(rng: np.random.Generator, count: int, height: int, width: int, factor: float) -> _Placement:
    row = (height * rng.uniform(0.1, 0.9, count)).astype(np.int64)
    col = (width * rng.uniform(0.1, 0.9, count)).astype(np.int64)
    size = (min(height, width) * rng.uniform(0.06, 0.12, count) * factor).astype(np.int64)
    return _Placement(row, col, np.maximum(size, 2))


def _outer_and(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(N, H) and (N, W) boolean tests → the (N, H, W) pixels that pass both."""
    return rows[:, :, None] & cols[:, None, :]


def _box_tests(p: _Placement, r: np.ndarray, c: np.ndarray):
    half = (p.size // 2)[:, None]
    rows = (r > p.row[:, None] - half) & (r < p.row[:, None] + half)
    cols = (c > p.col[:, None] - half) & (c < p.col[:, None] + half)
    return rows, cols


def _filled_square(p: _Placement, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    return _outer_and(*_box_tests(p, r, c))


def _mesh_dots(p: _Placement, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    rows, cols = _box_tests(p, r, c)
    return _outer_and(rows & (r % 2 == 1), cols & (c % 2 == 1))


def _disk(p: _Placement, r: np.ndarray, c: np.ndarray, radius_factor: float = 1.0) -> np.ndarray:
    # Squared distances are separable: (r - r0)² + (c - c0)², one broadcast add.
    distance2 = ((r - p.row[:, None]) ** 2)[:, :, None] + ((c - p.col[:, None]) ** 2)[:, None, :]
    radius = (p.size * radius_factor)[:, None, None]
    return distance2 < radius * radius


def _ring(p: _Placement, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    return _disk(p, r, c) & ~_disk(p, r, c, RING_INNER)


def _triangle(p: _Placement, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    # The lower triangle of a size×size box whose corner is (row - size//2, col - size//2).
    top = (p.row - p.size // 2)[:, None]
    left = (p.col - p.size // 2)[:, None]
    size = p.size[:, None]
    local_r, local_c = r - top, c - left
    rows = (local_r >= 0) & (local_r < size)
    cols = (local_c >= 0) & (local_c < size)
    return _outer_and(rows, cols) & (local_r[:, :, None] >= local_c[:, None, :])


def _plus(p: _Placement, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    half = (p.size // 2)[:, None]
    row0, col0 = p.row[:, None], p.col[:, None]
    long_rows = (r >= row0 - half) & (r < row0 + half)
    long_cols = (c >= col0 - half) & (c < col0 + half)
    bar_rows = (r >= row0 - 1) & (r < row0 + 1)
    bar_cols = (c >= col0 - 1) & (c < col0 + 1)
    return _outer_and(bar_rows, long_cols) | _outer_and(long_rows, bar_cols)


# class name → (what the target marks, what the input shows); one table drives everything.
_DRAWERS = {
    "filled square": (_filled_square, _filled_square),
    "disk": (_disk, _disk),
    "triangle": (_triangle, _triangle),
    "ring": (_ring, _ring),
    "mesh square": (_filled_square, _mesh_dots),
    "plus": (_plus, _plus),
}


def generate(count: int, size: Sequence[int] | int = DEFAULT_SIZE, seed=None) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``count`` shapes images with their masks.

    Args:
        count: number of images.
        size: ``(height, width)`` or one int for square images; any size of at least 8 pixels.
        seed: an int, a sequence of ints, a ``numpy.random.Generator`` or None (fresh entropy).
            The same seed always gives the same images.

    Returns:
        ``images`` ``(N, H, W, 3)`` uint8, white shapes on black, and ``masks`` ``(N, 6, H, W)``
        uint8 of 0/1, channels in the order of :data:`CLASSES`.
    """
    height, width = _pair(size)
    if count < 0:
        raise SettingsError(f"count must be >= 0, got {count}")
    if height < 8 or width < 8:
        raise SettingsError(f"size must be at least 8×8 pixels, got {height}×{width}")
    if isinstance(seed, (int, np.integer)) and seed < 0:
        raise SettingsError(f"the seed must be 0 or more, got {seed}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    masks = np.zeros((count, len(CLASSES), height, width), dtype=np.uint8)
    visible = np.zeros((count, height, width), dtype=np.uint8)
    # Each shape is drawn only inside a window × window square around it, clamped to the image:
    # a shape hanging over the edge keeps the part that is inside.
    reach = int(min(height, width) * 0.12 * max(SIZE_FACTOR.values())) + 2
    window = min(2 * reach, height, width)
    steps = np.arange(window)
    images_index = np.arange(count)
    # mask_windows[n, k, r, c] is the window × window view of masks[n, k] with corner (r, c).
    mask_windows = np.lib.stride_tricks.sliding_window_view(masks, (window, window), axis=(2, 3),
                                                            writeable=True)
    visible_windows = np.lib.stride_tricks.sliding_window_view(visible, (window, window), axis=(1, 2),
                                                               writeable=True)
    for channel, name in enumerate(CLASSES):
        placement = _place(rng, count, height, width, SIZE_FACTOR[name])
        top = np.clip(placement.row - reach, 0, height - window)
        left = np.clip(placement.col - reach, 0, width - window)
        # Absolute coordinates of each window's rows and columns, (N, window) each.
        rows, cols = top[:, None] + steps, left[:, None] + steps
        draw_target, draw_input = _DRAWERS[name]
        target = draw_target(placement, rows, cols)
        mask_windows[images_index, channel, top, left] = target
        shown = target if draw_input is draw_target else draw_input(placement, rows, cols)
        # One window per image in each assignment, so the read-modify-write never collides.
        visible_windows[images_index, top, left] |= shown.view(np.uint8)
    gray = visible * np.uint8(255)
    return np.stack([gray, gray, gray], axis=-1), masks


class ShapesDataset:
    """Map-style dataset of shapes images, generated on demand in seeded blocks.

    Items are generated ``block`` at a time (vectorized) from ``(seed, epoch, block index)``:
    32 images up to 512×512, fewer for larger ones, so that a block stays under
    :data:`BLOCK_PIXELS` (the newest :data:`CACHED_BLOCKS` blocks are kept).
    With ``fresh=True`` (training), :meth:`set_epoch` gives new images every epoch: an endless
    stream that never repeats. With ``fresh=False`` (validation) the set is fixed. With a
    ``crop`` smaller than ``size``, each item is a random crop of a full-size image, so shapes
    keep their scale while a training step costs less; a crop as large as the images (or larger)
    gives whole images.

    Items are ``(image uint8 (3, H, W), target uint8 (6, H, W))`` tensors.
    """

    info = INFO

    def __init__(self, length: int, size: Sequence[int] | int = DEFAULT_SIZE, seed: int = 0,
                 fresh: bool = True, crop: Sequence[int] | int | None = None):
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.length = int(length)
        self.size = _pair(size)
        # A crop as large as the images (or larger) is no crop: every item is a whole image.
        covers = crop is not None and all(c >= s for c, s in zip(_pair(crop), self.size))
        self.crop = None if crop is None or covers else tuple(min(c, s) for c, s in zip(_pair(crop), self.size))
        self.seed = int(seed)
        self.block = block_images(self.size)
        self.fresh = fresh
        self.epoch = 0
        self._blocks: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _key(self, block_index: int) -> tuple:
        return (self.seed, self.epoch, block_index) if self.fresh else (self.seed, block_index)

    def _arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        block_index, offset = divmod(index, self.block)
        key = self._key(block_index)
        if key not in self._blocks:
            count = min(self.block, self.length - block_index * self.block)
            if len(self._blocks) >= CACHED_BLOCKS:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[key] = generate(count, self.size, seed=list(key))
        images, masks = self._blocks[key]
        image, mask = images[offset], masks[offset]
        if self.crop is not None:
            rng = np.random.default_rng([*key, offset, 1])
            top = int(rng.integers(0, self.size[0] - self.crop[0] + 1))
            left = int(rng.integers(0, self.size[1] - self.crop[1] + 1))
            image = image[top:top + self.crop[0], left:left + self.crop[1]]
            mask = mask[:, top:top + self.crop[0], left:left + self.crop[1]]
        return image, mask

    def __getitem__(self, index: int):
        import torch  # only datasets in use need it (see PairsDataset)

        image, mask = self._arrays(index)
        return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(mask)))

    def arrays(self, indices: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Items as numpy arrays ``(N, H, W, 3)`` and ``(N, 6, H, W)`` (for pictures and tests)."""
        indices = range(self.length) if indices is None else indices
        pairs = [self._arrays(i) for i in indices]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


BLOCK_PIXELS = 32 * 512 * 512   # pixels generated at once: 32 images of 512×512, 2 of 2048×2048
CACHED_BLOCKS = 4
BYTES_PER_PIXEL = 3 + len(CLASSES)   # an RGB image and one mask per class, uint8


def block_images(size) -> int:
    """How many images of ``size`` a :class:`ShapesDataset` generates at once (1 to 32)."""
    height, width = _pair(size)
    return max(1, min(32, BLOCK_PIXELS // (height * width)))


def _pair(size) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


@register_source("shapes", needs_path=False,
                 help="synthetic six-class shapes, fresh images every epoch")
class ShapesSource(DataSource):
    """The shapes as a data source: a fresh training stream and a fixed, seeded validation set."""

    normalization = IDENTITY  # white on black: 0..1 as is

    def __init__(self, path: str | None = None, *, size: Sequence[int] | int = DEFAULT_SIZE,
                 train_length: int = 2000, val_length: int = 200, seed: int = 0,
                 val_seed: int = 10_000):
        super().__init__(INFO)
        if path:
            raise SettingsError("the shapes source takes no path")
        self.size = size
        self.train_length = train_length
        self.val_length = val_length
        self.seed = seed
        self.val_seed = val_seed

    def train_dataset(self, crop_size=None, seed: int | None = None) -> ShapesDataset:
        return ShapesDataset(self.train_length, self.size, seed=self.seed if seed is None else seed,
                             fresh=True, crop=crop_size)

    def val_dataset(self) -> ShapesDataset:
        return ShapesDataset(self.val_length, self.size, seed=self.val_seed, fresh=False)

    def train_size(self, crop_size: int | None = None) -> tuple[int, int]:
        """Whole images, or crops of them (a crop larger than the images is no crop)."""
        size = _pair(self.size)
        return size if crop_size is None else tuple(min(crop_size, side) for side in size)

    def val_size(self) -> tuple[int, int]:
        return _pair(self.size)

    def decode_bytes(self) -> int:
        return 0  # generated in blocks: held_bytes counts them

    def held_bytes(self) -> int:
        """The blocks both splits keep (the validation set's are at most its length), and one
        more being generated, with about as much scratch."""
        height, width = _pair(self.size)
        block = block_images(self.size)
        kept = CACHED_BLOCKS * block
        images = kept + min(kept, -(-self.val_length // block) * block) + 2 * block
        return images * height * width * BYTES_PER_PIXEL
