"""Annotating faster (issue 16, item 6): how many actions, and how many seconds, a scripted annotator
needs to bring a mask to Dice ≥ 0.95 against its truth, with the brush alone and with a box, a
pre-fill and refinement.

    python bench/bench_annotation.py                        # 5 shapes images, 3 photos (about a minute on 2 cores)
    python bench/bench_annotation.py --quick --dry-run      # 2 shapes images, 1 photo, to a scratch copy of BENCHMARKS.md
    python bench/bench_annotation.py --json results.json    # also keep every figure as JSON

The images and their truth:

- **shapes**: five images of :func:`segdemo.data.shapes.generate` (192×192, seed 0); in each the
  annotator labels one class, as a dataset of that class would have it (the class's label map): the
  filled square, the disk, the triangle, the plus, the ring.
- **photos**: three composites made here, offline, from scikit-image's bundled photos: an object cut
  from one photo with an ellipse or a polygon defined below is pasted, with a hard edge (no
  blending), onto a photo, so the truth is the cut shape, exact to the pixel. They are real photo
  textures but not real scenes: an object's edge is where the cut put it. The three were picked to
  go from easy to hard for GrabCut (see :data:`PHOTOS`); on the first, a box alone is enough.

The annotator is a greedy, deterministic simulation, not a person:

- **brush alone**: a round brush (a stroke is a polyline; every pixel within the brush's radius of
  it is painted). First the interior with a big brush (radius 0.6 × the object's largest inscribed
  radius, at most 1/16 of the image side), in a zigzag raster whose strokes continue while the brush
  stays inside the object; then the rest: each stroke goes where the largest connected piece of error
  is, zigzagging over it with the brush kept on the right side of the truth (a careful annotator),
  with a brush fitted to that piece (0.6 × its largest inscribed radius, no smaller than the small
  brush: 1/160 of the image side, at least 1 px, at most a third of the big one, and no bigger than
  the big one), switching to a brush half as big where that one cannot reach. Strokes that paint and
  eraser strokes that remove over-painted pixels each count as one action.
- **box + GrabCut**: one box (two clicks: one action) a few pixels around the object →
  :func:`segdemo.assist.box_mask`; then up to four ± clicks, each on the centre of the largest
  missed (+) or extra (−) piece, re-running ``box_mask`` seeded by the current mask with all
  clicks so far (a click that does not raise Dice is undone but still counted, and ends the
  clicking); then brush and eraser strokes as above for what remains.
- **model pre-fill** (shapes only): the shipped ``checkpoints/unet_shapes.pt`` predicts the image
  (one action), the class's channel above 0.5 is the start; then brush and eraser strokes.

Two times per image, labelled as what they are: *compute s*, the measured wall time of the
``box_mask`` calls and of the model's prediction; *estimated s*, what a person would take by
:data:`ACTION_SECONDS` and :data:`STROKE_PX_PER_SECOND` (a stated model, not a measurement) plus the
compute they wait for.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SEGDEMO_OFFLINE", "1")

from common import ROOT, machine, write_section

from segdemo.assist import box_mask
from segdemo.data import shapes

GOAL = 0.95
MAX_ACTIONS = 100
MAX_CLICKS = 4
# The annotator's seconds per action (a model, stated in the output): a box is two clicks (or a drag),
# the pre-fill a button press; a stroke is a drag of the mouse, so it also costs its length: a 200 px
# stroke takes 2 s, a zigzag over a whole photo's object many more. Computing is waited for on top.
ACTION_SECONDS = {"box": 2.0, "click": 1.0, "stroke": 1.0, "erase": 1.0, "prefill": 1.0}
STROKE_PX_PER_SECOND = 200.0
SHAPES_SIZE = 192
SHAPES_SEED = 0
SHAPES_CLASSES = ("filled square", "disk", "triangle", "plus", "ring")
CHECKPOINT = ROOT / "checkpoints" / "unet_shapes.pt"


# --- The images and their truth -------------------------------------------------------------------

@dataclass(frozen=True)
class Composite:
    """An object cut from one of scikit-image's photos (by an ellipse or a polygon, in that photo's
    pixels) and pasted with a hard edge onto a photo (the same one or another), its cut's top-left corner at ``at`` (x, y)."""

    name: str
    source: str
    background: str
    at: tuple[int, int]
    ellipse: tuple | None = None            # ((cx, cy), (half_width, half_height))
    polygon: tuple | None = None            # ((x, y), ...)


# From easy to hard: a colour jump all round the object; an object on a photo of similar colours; an
# object pasted back onto its own photo, beside where it was (the cup on its saucer and table).
PHOTOS = (
    Composite("cat's face on the rocket photo", "chelsea", "rocket", at=(200, 110),
              ellipse=((230, 150), (150, 125))),
    Composite("astronaut's head on the astronaut photo", "astronaut", "astronaut", at=(300, 250),
              polygon=((152, 72), (162, 36), (200, 16), (256, 14), (294, 44), (300, 98), (286, 130),
                       (272, 164), (246, 186), (214, 190), (190, 170), (176, 136), (156, 110))),
    Composite("espresso cup on the coffee photo", "coffee", "coffee", at=(320, 120),
              polygon=((176, 62), (228, 26), (330, 18), (398, 46), (410, 120), (398, 196), (362, 246),
                       (300, 272), (240, 262), (196, 226), (178, 160))),
)


def composite(spec: Composite) -> tuple[np.ndarray, np.ndarray]:
    """The pasted photo ``(H, W, 3)`` uint8 and its exact truth ``(H, W)`` bool."""
    from skimage import data

    source, background = getattr(data, spec.source)(), getattr(data, spec.background)()
    cut = np.zeros(source.shape[:2], np.uint8)
    if spec.ellipse is not None:
        cv2.ellipse(cut, spec.ellipse[0], spec.ellipse[1], 0, 0, 360, 1, thickness=-1)
    else:
        cv2.fillPoly(cut, [np.array(spec.polygon, np.int32)], 1)
    rows, cols = np.nonzero(cut)
    top, left = rows.min(), cols.min()
    piece, shape = source[top:rows.max() + 1, left:cols.max() + 1], cut[top:rows.max() + 1, left:cols.max() + 1] > 0
    x, y = spec.at
    image, truth = background.copy(), np.zeros(background.shape[:2], bool)
    image[y:y + shape.shape[0], x:x + shape.shape[1]][shape] = piece[shape]
    truth[y:y + shape.shape[0], x:x + shape.shape[1]] = shape
    return image, truth


def bench_images(quick: bool, seed: int = SHAPES_SEED) -> list[dict]:
    """Each image: its name, kind ("shapes" or "photo"), pixels, truth and (shapes) class."""
    chosen = SHAPES_CLASSES[:2] if quick else SHAPES_CLASSES
    images, masks = shapes.generate(len(chosen), SHAPES_SIZE, seed=seed)
    items = [{"name": f"shapes #{index}: {name}", "kind": "shapes", "class": name, "image": images[index],
              "truth": masks[index, shapes.CLASSES.index(name)] > 0} for index, name in enumerate(chosen)]
    for spec in PHOTOS[:1] if quick else PHOTOS:
        image, truth = composite(spec)
        items.append({"name": spec.name, "kind": "photo", "class": "object", "image": image, "truth": truth})
    return items


# --- The simulated annotator ------------------------------------------------------------------------

def dice(mask: np.ndarray, truth: np.ndarray) -> float:
    total = int(mask.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((mask & truth).sum()) / total


def stroke_pixels(shape: tuple[int, int], points: list[tuple[float, float]], radius: float) -> np.ndarray:
    """The ``(H, W)`` bool pixels a round brush of ``radius`` paints along the polyline ``points``
    (``(y, x)`` each): every pixel centre within ``radius`` of one of its segments."""
    height, width = shape
    painted = np.zeros(shape, bool)
    path = np.asarray(points, float)
    if len(path) == 1:
        path = np.vstack([path, path])
    for (ay, ax), (by, bx) in itertools.pairwise(path):
        y0, y1 = max(0, math.floor(min(ay, by) - radius)), min(height, math.ceil(max(ay, by) + radius) + 1)
        x0, x1 = max(0, math.floor(min(ax, bx) - radius)), min(width, math.ceil(max(ax, bx) + radius) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = by - ay, bx - ax
        length2 = dy * dy + dx * dx
        t = np.clip(((yy - ay) * dy + (xx - ax) * dx) / length2, 0, 1) if length2 else 0.0
        painted[y0:y1, x0:x1] |= (yy - ay - t * dy) ** 2 + (xx - ax - t * dx) ** 2 <= radius * radius
    return painted


def stroke_length(points) -> float:
    path = np.asarray(points, float)
    return float(np.hypot(*np.diff(path, axis=0).T).sum()) if len(path) > 1 else 0.0


def _inside(region: np.ndarray, a, b) -> bool:
    """Whether the straight move from ``a`` to ``b`` (``(y, x)``) keeps the brush's centre in ``region``."""
    steps = max(2, math.ceil(math.hypot(b[0] - a[0], b[1] - a[1])) + 1)
    ys = np.rint(np.linspace(a[0], b[0], steps)).astype(int)
    xs = np.rint(np.linspace(a[1], b[1], steps)).astype(int)
    return bool(region[ys, xs].all())


def zigzag_strokes(centres: np.ndarray, radius: float) -> list[list[tuple[float, float]]]:
    """Cover ``centres`` (``(H, W)`` bool: where the brush's centre may go) with a raster of
    horizontal runs ``2·⌊radius⌋`` rows apart, joined into zigzag strokes while the move from one
    run's end to the next row's nearest run stays inside ``centres``."""
    rows = np.flatnonzero(centres.any(axis=1))
    if not len(rows):
        return []
    spacing = max(1, 2 * int(radius))
    chosen = list(range(int(rows[0]), int(rows[-1]) + 1, spacing))
    if chosen[-1] != rows[-1]:
        chosen.append(int(rows[-1]))
    runs = []                                                     # (row index, y, x start, x end)
    for index, y in enumerate(chosen):
        line = np.concatenate([[0], centres[y].view(np.int8), [0]])
        edges = np.flatnonzero(np.diff(line))
        runs += [(index, y, int(start), int(end) - 1) for start, end in zip(edges[::2], edges[1::2])]
    unused, strokes = set(range(len(runs))), []
    while unused:
        current = min(unused, key=lambda i: (runs[i][0], runs[i][2]))
        unused.discard(current)
        _, y, start, end = runs[current]
        stroke = [(y, start), (y, end)]
        while True:
            here = stroke[-1]
            best = None
            for other in unused:
                row, oy, ostart, oend = runs[other]
                if abs(row - runs[current][0]) != 1:
                    continue
                for near, far in ((ostart, oend), (oend, ostart)):
                    distance = math.hypot(oy - here[0], near - here[1])
                    if (best is None or distance < best[0]) and _inside(centres, here, (oy, near)):
                        best = (distance, other, near, far)
            if best is None:
                break
            _, current, near, far = best
            unused.discard(current)
            stroke += [(runs[current][1], near), (runs[current][1], far)]
        strokes.append(stroke)
    return strokes


def _within(region: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within ``radius`` of ``region``."""
    distance = cv2.distanceTransform((~region).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return distance <= radius


@dataclass
class Annotation:
    """One image being annotated: the mask so far, and every action taken (kind, compute seconds)."""

    truth: np.ndarray
    mask: np.ndarray = None
    actions: list = field(default_factory=list)
    stroke_px: float = 0.0
    first_dice: float | None = None

    def __post_init__(self):
        if self.mask is None:
            self.mask = np.zeros_like(self.truth)
        # How far each pixel is from the other side of the truth: a brush of radius r centred at a
        # pixel with distance > r stays on that pixel's side.
        self.depth_inside = cv2.distanceTransform(self.truth.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        self.depth_outside = cv2.distanceTransform((~self.truth).astype(np.uint8), cv2.DIST_L2,
                                                   cv2.DIST_MASK_PRECISE)

    @property
    def dice(self) -> float:
        return dice(self.mask, self.truth)

    @property
    def done(self) -> bool:
        return self.dice >= GOAL or len(self.actions) >= MAX_ACTIONS

    def act(self, kind: str, seconds: float = 0.0) -> None:
        self.actions.append((kind, seconds))

    def stroke(self, points, radius: float, *, erase: bool) -> None:
        painted = stroke_pixels(self.mask.shape, points, radius)
        self.mask = self.mask & ~painted if erase else self.mask | painted
        self.stroke_px += stroke_length(points)
        self.act("erase" if erase else "stroke")


def brush_radii(truth: np.ndarray) -> tuple[float, float]:
    """The big brush (for the interior) and the small one (for the border) a person would pick."""
    side = max(truth.shape)
    deepest = float(cv2.distanceTransform(truth.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE).max())
    big = float(math.floor(min(0.6 * deepest, side / 16)))
    small = float(max(1, min(round(side / 160), big // 3)))
    return big, small


def paint_interior(work: Annotation, radius: float) -> None:
    """Fill the inside with the big brush, each zigzag kept wholly inside the object."""
    if radius < 2:
        return
    for points in zigzag_strokes(work.depth_inside > radius, radius):
        if work.done:
            return
        if (stroke_pixels(work.mask.shape, points, radius) & ~work.mask).any():
            work.stroke(points, radius, erase=False)


def piece_depth(piece: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the nearest pixel outside ``piece`` (the image's edge does not count)."""
    return cv2.distanceTransform(np.pad(piece, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def fix_border(work: Annotation, small: float, big: float) -> None:
    """Strokes (paint or erase) on the largest piece of error until Dice reaches the goal: the best
    zigzag over that piece with a brush fitted to it (0.6 × its largest inscribed radius, between the
    small and the big brush), or a brush half as big where that one cannot help."""
    hopeless = np.zeros_like(work.truth)
    while not work.done:
        pieces = []
        for erase, error in ((False, work.truth & ~work.mask), (True, work.mask & ~work.truth)):
            count, labels, stats, _ = cv2.connectedComponentsWithStats((error & ~hopeless).astype(np.uint8), connectivity=8)
            pieces += [(int(stats[k, cv2.CC_STAT_AREA]), erase, labels == k) for k in range(1, count)]
        if not pieces:
            return
        _, erase, piece = max(pieces, key=lambda item: item[0])
        depth = work.depth_outside if erase else work.depth_inside
        size = float(max(small, min(big, math.floor(0.6 * piece_depth(piece).max()))))
        while size >= 0.5:
            centres = (depth > size) & _within(piece, size)
            best, gain = None, 0
            for points in zigzag_strokes(centres, size):
                fixed = int((stroke_pixels(work.mask.shape, points, size) & piece).sum())
                if fixed > gain:
                    best, gain = points, fixed
            if best is not None:
                work.stroke(best, size, erase=erase)
                break
            size /= 2
        else:
            hopeless |= piece


def brush_alone(truth: np.ndarray) -> Annotation:
    work = Annotation(truth)
    big, small = brush_radii(truth)
    paint_interior(work, big)
    fix_border(work, small, big)
    return work


def piece_centre(piece: np.ndarray) -> tuple[int, int]:
    """The ``(x, y)`` of the pixel deepest inside ``piece``: where a person clicks on it."""
    depth = piece_depth(piece)
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return int(x), int(y)


def largest_error(work: Annotation) -> tuple[bool, np.ndarray] | None:
    """(positive?, the piece) of the largest connected piece of missed or extra pixels."""
    best = None
    for positive, error in ((True, work.truth & ~work.mask), (False, work.mask & ~work.truth)):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(error.astype(np.uint8), connectivity=8)
        if count > 1:
            k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            if best is None or stats[k, cv2.CC_STAT_AREA] > best[0]:
                best = (int(stats[k, cv2.CC_STAT_AREA]), positive, labels == k)
    return None if best is None else best[1:]


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def box_then_refine(image: np.ndarray, truth: np.ndarray) -> Annotation:
    work = Annotation(truth)
    height, width = truth.shape
    rows, cols = np.nonzero(truth)
    pad = max(2, round(0.02 * max(truth.shape)))
    box = (max(0, cols.min() - pad), max(0, rows.min() - pad), min(width, cols.max() + 1 + pad),
           min(height, rows.max() + 1 + pad))
    work.mask, seconds = timed(box_mask, image, box)
    work.act("box", seconds)
    work.first_dice = work.dice
    positive, negative = [], []
    for _ in range(MAX_CLICKS):
        error = None if work.done else largest_error(work)
        if error is None:
            break
        (positive if error[0] else negative).append(piece_centre(error[1]))
        mask, seconds = timed(box_mask, image, box, mask=work.mask, positive=positive, negative=negative)
        work.act("click", seconds)
        if dice(mask, truth) <= work.dice:
            break                                   # no better: undone, and the person stops clicking
        work.mask = mask
    big, small = brush_radii(truth)
    fix_border(work, small, big)
    return work


def prefill_then_refine(segmenter, image: np.ndarray, truth: np.ndarray, name: str) -> Annotation:
    prediction, seconds = timed(segmenter.predict, image)
    work = Annotation(truth, mask=prediction.probabilities[prediction.classes.index(name)] > 0.5)
    work.act("prefill", seconds)
    work.first_dice = work.dice
    big, small = brush_radii(truth)
    fix_border(work, small, big)
    return work


def methods(item: dict, segmenter) -> list[tuple]:
    """(name, function, its arguments) of each method that fits the image."""
    image, truth = item["image"], item["truth"]
    chosen = [("brush alone", brush_alone, (truth,)), ("box + GrabCut, clicks, brush", box_then_refine, (image, truth))]
    if item["kind"] == "shapes" and segmenter is not None:
        chosen.append(("model pre-fill, brush", prefill_then_refine, (segmenter, image, truth, item["class"])))
    return chosen


# --- Running and reporting --------------------------------------------------------------------------

def summary(item: dict, method: str, work: Annotation) -> dict:
    counts = Counter(kind for kind, _ in work.actions)
    compute = sum(seconds for _, seconds in work.actions)
    estimated = sum(ACTION_SECONDS[kind] for kind, _ in work.actions) + work.stroke_px / STROKE_PX_PER_SECOND + compute
    return {"image": item["name"], "kind": item["kind"], "size": list(item["truth"].shape),
            "object_px": int(item["truth"].sum()), "method": method, "actions": len(work.actions),
            "by_kind": dict(counts), "stroke_px": round(work.stroke_px), "dice": round(work.dice, 4),
            "reached": work.dice >= GOAL, "first_dice": None if work.first_dice is None else round(work.first_dice, 4),
            "compute_s": round(compute, 3), "estimated_s": round(estimated, 1)}


def describe_actions(result: dict) -> str:
    names = {"box": "box", "click": "click", "prefill": "pre-fill", "stroke": "stroke", "erase": "eraser"}
    parts = [f"{count} {names[kind]}" + ("s" if count > 1 else "") for kind, count in result["by_kind"].items()]
    return f"{result['actions']} ({', '.join(parts)})"


def table_rows(results: list[dict]) -> list[dict]:
    return [{"image": r["image"], "method": r["method"], "actions": describe_actions(r),
             "Dice reached": f"{r['dice']:.3f}" + ("" if r["reached"] else f" (not {GOAL} in {MAX_ACTIONS})"),
             "first action's Dice": "–" if r["first_dice"] is None else f"{r['first_dice']:.3f}",
             "compute s": f"{r['compute_s']:.2f}", "estimated s": f"{r['estimated_s']:.0f}"} for r in results]


def totals(results: list[dict]) -> str:
    lines = []
    for kind in ("shapes", "photo"):
        for method in dict.fromkeys(r["method"] for r in results if r["kind"] == kind):
            chosen = [r for r in results if r["kind"] == kind and r["method"] == method]
            lines.append(f"- {kind}, {method}: {sum(r['actions'] for r in chosen) / len(chosen):.1f} actions and "
                         f"{sum(r['estimated_s'] for r in chosen) / len(chosen):.0f} s per image on average "
                         f"({sum(r['reached'] for r in chosen)}/{len(chosen)} reached Dice {GOAL}).")
    return "\n".join(lines)


def notes(seed: int) -> str:
    """What the table measures, and how."""
    return f"""
Dice against the truth of one object per image; a method stops at Dice ≥ {GOAL} or after {MAX_ACTIONS} actions.
Truth: shapes images from `segdemo.data.shapes.generate` ({SHAPES_SIZE}×{SHAPES_SIZE}, seed {seed}), one
class's label map each; the photos are composites made offline (an ellipse or polygon cut from one of
scikit-image's photos, pasted with a hard edge onto a photo, two of them back onto their own), so their
truth is exact, but their edges are the cut's, not a real scene's; they go from easy for GrabCut (a
colour jump all round) to hard (a cup beside its own saucer, in the same colours). The annotator
is a greedy simulation (the script's docstring says how it paints, clicks and erases), not a person.
*compute s*: measured wall time of `box_mask` and of the model's prediction (the model loaded and warm).
*estimated s*: a cost model, not a measurement: box {ACTION_SECONDS['box']:g} s, ± click {ACTION_SECONDS['click']:g} s,
pre-fill {ACTION_SECONDS['prefill']:g} s, brush or eraser stroke {ACTION_SECONDS['stroke']:g} s + its path at
{STROKE_PX_PER_SECOND:g} image pixels per second, each plus the compute waited for. *first action's Dice*: after
the box alone or the pre-fill alone.
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 shapes images and 1 photo: does it work")
    parser.add_argument("--seed", type=int, default=SHAPES_SEED, help="the shapes images' seed")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--dry-run", action="store_true", help="write the section to a scratch copy, not BENCHMARKS.md")
    args = parser.parse_args(argv)
    where = machine()
    segmenter = None
    if CHECKPOINT.exists():
        from segdemo.inference import load_segmenter

        segmenter = load_segmenter(CHECKPOINT)
        segmenter.predict(np.zeros((SHAPES_SIZE, SHAPES_SIZE, 3), np.uint8))    # the app has it loaded and warm
    results = []
    for item in bench_images(args.quick, args.seed):
        for method, annotate, arguments in methods(item, segmenter):
            results.append(summary(item, method, annotate(*arguments)))
            print(json.dumps(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": where, "goal": GOAL, "action_seconds": ACTION_SECONDS,
                                         "stroke_px_per_second": STROKE_PX_PER_SECOND,
                                         "results": results}, indent=1))
    command = ("python bench/bench_annotation.py" + (" --quick" if args.quick else "")
               + (f" --seed {args.seed}" if args.seed != SHAPES_SEED else ""))
    write_section("annotation", "Annotating: brush alone vs box / pre-fill + refinement, to Dice ≥ 0.95",
                  table_rows(results), notes=totals(results) + "\n" + notes(args.seed), command=command, machine_line=where,
                  path=Path(tempfile.gettempdir()) / "BENCHMARKS-dry.md" if args.dry_run else None)


if __name__ == "__main__":
    main()
