"""Shapes generation and mask colorizing: segdemo's vectorized code next to the tutorial's way.

The baselines below are the straightforward implementations the issue names (each shape drawn
through a full-image ``np.mgrid``; the colorizer looping over pixels), kept here only to be
measured against, in the same run.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import median_time, write_section  # noqa: E402
from segdemo import viz  # noqa: E402
from segdemo.data import shapes  # noqa: E402


# --- the tutorial's way (baseline) -------------------------------------------------------------
def _mgrid(shape):
    return np.mgrid[:shape[0], :shape[1]]


def _baseline_filled_square(shape, x, y, size):
    s = int(size / 2)
    xx, yy = _mgrid(shape)
    return (xx > x - s) & (xx < x + s) & (yy > y - s) & (yy < y + s)


def _baseline_mesh(shape, x, y, size):
    return _baseline_filled_square(shape, x, y, size) & (_mgrid(shape)[0] % 2 == 1) & (_mgrid(shape)[1] % 2 == 1)


def _baseline_circle(shape, x, y, size, fill):
    xx, yy = _mgrid(shape)
    circle = np.sqrt((xx - x) ** 2 + (yy - y) ** 2)
    return (circle < size) & (True if fill else circle >= size * 0.7)


def _baseline_triangle(shape, x, y, size):
    arr = np.zeros(shape, dtype=bool)
    s = int(size / 2)
    triangle = np.tril(np.ones((size, size), dtype=bool))
    region = arr[max(x - s, 0):x - s + size, max(y - s, 0):y - s + size]
    region[:] = triangle[:region.shape[0], :region.shape[1]]
    return arr


def _baseline_plus(shape, x, y, size):
    arr = np.zeros(shape, dtype=bool)
    s = int(size / 2)
    arr[x - 1:x + 1, y - s:y + s] = True
    arr[x - s:x + s, y - 1:y + 1] = True
    return arr


def _location(shape, zoom=1.0):
    x = int(shape[0] * random.uniform(0.1, 0.9))
    y = int(shape[1] * random.uniform(0.1, 0.9))
    return x, y, int(min(shape) * random.uniform(0.06, 0.12) * zoom)


def baseline_generate(count, shape=(192, 192)):
    images, masks = [], []
    for _ in range(count):
        tri, ring, disk = _location(shape), _location(shape, 0.7), _location(shape, 0.5)
        mesh, square, plus = _location(shape), _location(shape, 0.8), _location(shape, 1.2)
        target = [_baseline_filled_square(shape, *square), _baseline_circle(shape, *disk, True),
                  _baseline_triangle(shape, *tri), _baseline_circle(shape, *ring, False),
                  _baseline_filled_square(shape, *mesh), _baseline_plus(shape, *plus)]
        visible = target[0] | target[1] | target[2] | target[3] | _baseline_mesh(shape, *mesh) | target[5]
        images.append(np.repeat((visible * 255).astype(np.uint8)[..., None], 3, axis=2))
        masks.append(np.asarray(target, dtype=np.uint8))
    return np.asarray(images), np.asarray(masks)


def baseline_colorize(masks, colors):
    colors = np.asarray(colors)
    out = np.ones((masks.shape[1], masks.shape[2], 3), dtype=np.float32) * 255
    for y in range(masks.shape[1]):
        for x in range(masks.shape[2]):
            selected = colors[masks[:, y, x] > 0.5]
            if len(selected) > 0:
                out[y, x, :] = np.mean(selected, axis=0)
    return out.astype(np.uint8)


def main():
    count = 200
    random.seed(0)
    baseline = median_time(lambda: baseline_generate(count), repeats=5, warmup=1) / count
    ours = median_time(lambda: shapes.generate(count, seed=0), repeats=20, warmup=2) / count
    _, masks = shapes.generate(1, seed=0)
    colorize_baseline = median_time(lambda: baseline_colorize(masks[0], shapes.COLORS), repeats=3, warmup=1)
    colorize_ours = median_time(lambda: viz.colorize_multilabel(masks[0], shapes.COLORS), repeats=200)
    rows = [
        {"what": "shapes image + 6 masks, 192×192 (batches of 200)", "baseline (tutorial's way)":
            f"{baseline * 1e3:.2f} ms", "segdemo": f"{ours * 1e3:.3f} ms", "speed-up": f"{baseline / ours:.1f}×"},
        {"what": "6-channel mask → color image, 192×192", "baseline (tutorial's way)":
            f"{colorize_baseline * 1e3:.1f} ms", "segdemo": f"{colorize_ours * 1e3:.3f} ms",
         "speed-up": f"{colorize_baseline / colorize_ours:.0f}×"},
    ]
    write_section("data", "Data: shapes generation and mask colorizing (per image, median)", rows,
                  notes="Targets: generation ≥ 10× the full-image `np.mgrid` way; colorizing < 1 ms.")


if __name__ == "__main__":
    main()
