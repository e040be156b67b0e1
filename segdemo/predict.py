"""Segment images or folders with a checkpoint; write label masks and overlays.

    python -m segdemo.predict checkpoints/unet_shapes.pt photo.jpg more_images/ --out predictions/

For each image ``NAME.ext`` it writes ``NAME_mask.png`` (a palette PNG whose pixel values are the
label indices, viewable in color) and ``NAME_overlay.png`` (the prediction over the image).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import viz
from .data.folder import IMAGE_EXTENSIONS
from .errors import CheckpointError, ImageError
from .image_files import read_image, save_png
from .inference import load_segmenter


def find_images(inputs: list[str]) -> list[Path]:
    found = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        else:
            found.append(path)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m segdemo.predict", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", help="a .pt checkpoint written by segdemo")
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--out", default="predictions", help="output folder")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold (multi-label/binary)")
    parser.add_argument("--opacity", type=float, default=0.5, help="overlay opacity, 0 to 1")
    parser.add_argument("--device", default=None, help="cpu, cuda, … (default: GPU if available)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        segmenter = load_segmenter(args.checkpoint, device=args.device)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in find_images(args.inputs):
        try:
            image = read_image(path)
        except ImageError as error:
            print(f"skipped {path}: {error}", file=sys.stderr)
            failures += 1
            continue
        prediction = segmenter.predict(image)
        save_png(out / f"{path.stem}_mask.png", prediction.labels(args.threshold), palette=prediction.label_colors)
        overlay = viz.overlay(image, prediction, threshold=args.threshold, opacity=args.opacity)
        save_png(out / f"{path.stem}_overlay.png", overlay)
        print(f"{path} -> {out / (path.stem + '_mask.png')}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
