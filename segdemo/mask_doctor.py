"""The mask doctor: a dataset's masks checked against its class list before anything trains on them.

Masks that other tools wrote trip people up more than anything else (milesial/Pytorch-UNet #106,
#471; cvat #2390): a binary mask saved as 0/255, an RGB picture of class colors instead of class
indices, a palette PNG whose palette disagrees with ``classes.json``, values beyond the last class,
a mask of another size than its image. :class:`MaskDoctor` reads each mask once
(:func:`segdemo.image_files.read_mask_pixels`) and

- **fixes** what has one meaning: 0/255 masks of a two-class list (255 → class 1), RGB masks whose
  every color is a class's color (or, for two classes, black and white; the in-between colors of
  anti-aliased or lossily saved edges, a seam at most 2 pixels thick, are snapped to the nearest),
  palette masks whose palette colors are all class colors but at other indices (remapped by color);
- **refuses** what has none, naming the files: regions of RGB colors that no class has, values above the last
  class (255 stays "ignore"), a mask of another size than its image;
- **notes** what is allowed but worth knowing: empty masks (all background), classes no mask uses,
  a palette whose colors are not the class colors (its indices are kept).

Every dataset import goes through it: the Annotate tab's zip import
(:meth:`segdemo.annotations.DatasetStore.import_zip`) and folder datasets
(:class:`segdemo.data.folder.FolderSource`, which the Train tab's uploaded zips open), so a mask
means the same wherever it is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import MaskError
from .image_files import MAX_PIXELS, read_mask_pixels
from .tasks import IGNORE_INDEX

FIXED, REFUSED, NOTED = "fixed", "refused", "noted"
ALL_MASKS = "(all masks)"
# A color this close to a class color (per channel) is that color: lossy saving moves colors by a
# few levels; an anti-aliased edge between two classes moves them by far more (snapped when it is
# only a seam: see _only_edges).
COLOR_TOLERANCE = 8
SHOWN = 5   # values or colors named in one finding
EDGE_SHARE = 0.05   # at most this share of a mask's pixels may be in-between colors snapped on edges
BLACK, WHITE = (0, 0, 0), (255, 255, 255)


@dataclass(frozen=True)
class Finding:
    """One row of the doctor's report: which ``file``, what ``problem``, and the ``action`` taken
    (:data:`FIXED`, :data:`REFUSED` or :data:`NOTED`)."""

    file: str
    problem: str
    action: str


HEADERS = ("file", "problem", "action")


def findings_table(findings: Sequence[Finding]) -> dict:
    """The findings as a table value (``headers`` and ``data`` rows) for a dataframe."""
    return {"headers": list(HEADERS), "data": [[f.file, f.problem, f.action] for f in findings]}


def _listed(values, limit: int = SHOWN) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _color(color) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in color) + f" {tuple(int(v) for v in color)}"


def _only_edges(between: np.ndarray) -> bool:
    """Whether the pixels of colors no class has are only the seams of an anti-aliased or lossily
    saved mask: a few per cent at most, and nowhere more than 2 pixels thick (a region of a color
    of its own, such as a class missing from the list, is thicker, and is refused)."""
    import cv2

    if between.mean() > EDGE_SHARE:
        return False
    return not cv2.erode(between.astype(np.uint8), np.ones((3, 3), np.uint8)).any()


class MaskDoctor:
    """Checks and fixes the masks of one dataset, one at a time, keeping what it found.

    Args:
        classes: the label names, index 0 first (a binary dataset's: background and its class).
        colors: their ``(r, g, b)`` colors, in the same order.
        max_pixels: masks larger than this are refused before they are decoded.
    """

    def __init__(self, classes: Sequence[str], colors: Sequence[Sequence[int]], *, max_pixels: int = MAX_PIXELS):
        self.classes = tuple(str(name) for name in classes)
        self.colors = [tuple(int(v) for v in color) for color in colors]
        self.max_pixels = max_pixels
        self.findings: list[Finding] = []
        self.used = np.zeros(256, dtype=np.int64)   # pixels of each value over the masks read
        self.masks = 0
        # Each color that names exactly one class; for two classes black and white name them too
        # (a binary mask drawn in black and white), unless a class has that color already.
        counts: dict[tuple, int] = {}
        for color in self.colors:
            counts[color] = counts.get(color, 0) + 1
        self.by_color = {color: index for index, color in enumerate(self.colors) if counts[color] == 1}
        if len(self.classes) == 2:
            for color, index in ((BLACK, 0), (WHITE, 1)):
                self.by_color.setdefault(color, index)

    # --- reporting ----------------------------------------------------------------------------------
    def _add(self, file: str, problem: str, action: str) -> None:
        self.findings.append(Finding(file, problem, action))

    def refuse(self, file: str, problem: str) -> None:
        """Record a refusal (a mask that cannot be used as it is)."""
        self._add(file, problem, REFUSED)

    @property
    def refused(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.action == REFUSED]

    def raise_refusals(self) -> None:
        """Raise :class:`~segdemo.errors.MaskError` naming every refused file, if there is one."""
        refused = self.refused
        if refused:
            rows = "; ".join(f"{finding.file}: {finding.problem}" for finding in refused[:8])
            more = f"; and {len(refused) - 8} more" if len(refused) > 8 else ""
            raise MaskError(f"{len(refused)} mask{'s' if len(refused) != 1 else ''} cannot be used as "
                            f"{'they are' if len(refused) != 1 else 'it is'}: {rows}{more}", findings=self.findings)

    def finish(self) -> list[Finding]:
        """Add what only all the masks together tell (classes no mask uses), refuse if any mask
        was refused, and return the findings."""
        unused = [f"{index} {name!r}" for index, name in enumerate(self.classes) if index and not self.used[index]]
        if self.masks and unused:
            self._add(ALL_MASKS, f"classes {_listed(unused)} occur in no mask", NOTED)
        self.raise_refusals()
        return list(self.findings)

    # --- one mask -----------------------------------------------------------------------------------
    def check_size(self, file: str, mask_size: tuple[int, int], image_size: tuple[int, int]) -> bool:
        """Whether a mask of ``(H, W)`` ``mask_size`` fits its image's; a refusal is recorded if not."""
        if tuple(mask_size) == tuple(image_size):
            return True
        self.refuse(file, f"the mask is {mask_size[1]}×{mask_size[0]} pixels but its image is "
                          f"{image_size[1]}×{image_size[0]}")
        return False

    def read(self, source: Any, *, name: str, image_size: tuple[int, int] | None = None) -> np.ndarray | None:
        """The ``(H, W)`` uint8 label map of the mask file ``source`` (a path, bytes …), fixed where
        that is unambiguous; None (and a refusal recorded) when it cannot be used. ``image_size``
        = the image's ``(H, W)``, checked against the mask's."""
        pixels = read_mask_pixels(source, max_pixels=self.max_pixels, name=name)
        values = pixels.values
        if image_size is not None and not self.check_size(name, values.shape[:2], image_size):
            return None
        if values.ndim == 3:
            values = self._from_colors(name, values)
            if values is None:
                return None
        elif pixels.palette is not None:
            values = self._by_palette(name, values, pixels.palette)
        return self._checked_indices(name, values)

    def _from_colors(self, name: str, rgb: np.ndarray) -> np.ndarray | None:
        """An RGB mask's colors mapped to their classes, or None when a color belongs to no class."""
        packed = (rgb[:, :, 0].astype(np.int32) << 16) | (rgb[:, :, 1].astype(np.int32) << 8) | rgb[:, :, 2]
        unique, inverse = np.unique(packed.ravel(), return_inverse=True)
        colors = np.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], axis=1)
        known = list(self.by_color) or [(-999, -999, -999)]   # no class color names one class: all unknown
        distance = np.abs(colors[:, None, :] - np.asarray(known, np.int32)[None]).max(axis=2)
        nearest = distance.argmin(axis=1)
        close = distance[np.arange(len(colors)), nearest] <= COLOR_TOLERANCE
        edges = ""
        if not close.all():
            between = ~close[inverse].reshape(rgb.shape[:2])
            if not (known and _only_edges(between)):
                unknown = [_color(color) for color in colors[~close]]
                self.refuse(name, f"an RGB mask with colors that no class has: {_listed(unknown)} (the classes' "
                                  "colors are in classes.json)")
                return None
            edges = (f"; {int(between.sum())} pixels ({100 * between.mean():.1f} %) of in-between colors on edges "
                     "(anti-aliased or lossy saving) snapped to the nearest class color")
        table = np.array([self.by_color[known[int(index)]] for index in nearest], dtype=np.uint8)
        used = [f"{index} {self.classes[index]!r}" for index in sorted(set(table.tolist()))]
        self._add(name, f"an RGB mask of class colors instead of class indices: mapped by color to {_listed(used)}"
                        f"{edges}", FIXED)
        return table[inverse].reshape(rgb.shape[:2])

    def _by_palette(self, name: str, values: np.ndarray, palette: np.ndarray) -> np.ndarray:
        """A palette mask remapped by color where its palette gives the classes' colors at other
        indices, one class to each index used; its indices as they are otherwise (a note says when
        its colors are not the classes')."""
        used = [int(v) for v in np.flatnonzero(np.bincount(values.ravel(), minlength=256)) if v != IGNORE_INDEX]
        colors = {index: tuple(int(v) for v in palette[index]) if index < len(palette) else None for index in used}
        disagree = [index for index in used if index >= len(self.colors) or colors[index] != self.colors[index]]
        if not disagree:
            return values
        classes = [self.by_color.get(colors[index]) for index in used]
        if None not in classes and len(set(classes)) == len(used):   # every index a class, no two the same
            table = np.arange(256, dtype=np.uint8)
            table[used] = classes
            moved = [f"{index} → {table[index]} {self.classes[table[index]]!r}" for index in used if table[index] != index]
            if not moved:
                return values
            self._add(name, f"palette colors disagree with classes.json: remapped by color ({_listed(moved)})", FIXED)
            return table[values]
        shown = [f"{index} is {_color(colors[index]) if colors[index] else 'missing'}" for index in disagree]
        self._add(name, f"palette colors are not the classes' colors ({_listed(shown)}): read as class indices",
                  NOTED)
        return values

    def _checked_indices(self, name: str, values: np.ndarray) -> np.ndarray | None:
        """Class indices checked against the class list: 0/255 of two classes fixed, values
        beyond the last class refused, an empty mask noted."""
        counts = np.bincount(values.ravel(), minlength=256)
        present = set(np.flatnonzero(counts).tolist())
        last = len(self.classes) - 1
        if len(self.classes) == 2 and IGNORE_INDEX in present and present <= {0, IGNORE_INDEX}:
            values = (values == IGNORE_INDEX).astype(np.uint8)
            counts = np.bincount(values.ravel(), minlength=256)
            present = set(np.flatnonzero(counts).tolist())
            self._add(name, f"a 0/255 mask: 255 read as class 1 {self.classes[1]!r}", FIXED)
        beyond = sorted(value for value in present if value > last and value != IGNORE_INDEX)
        if beyond:
            self.refuse(name, f"class values {_listed(beyond)} lie beyond the last class ({last} {self.classes[last]!r}; "
                              "255 means ignore)")
            return None
        if present <= {0, IGNORE_INDEX}:
            self._add(name, "empty: every pixel is background", NOTED)
        self.used += counts
        self.masks += 1
        return values


def read_fixed_mask(source: Any, *, name: str, classes: Sequence[str], colors: Sequence[Sequence[int]],
                    image_size: tuple[int, int] | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One mask read as :class:`MaskDoctor` reads it (a loader's way): its fixed label map, or
    :class:`~segdemo.errors.MaskError` when it cannot be used."""
    doctor = MaskDoctor(classes, colors, max_pixels=max_pixels)
    labels = doctor.read(source, name=name, image_size=image_size)
    doctor.raise_refusals()
    return labels
