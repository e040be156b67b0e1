"""Turn a training run's checkpoint into a shippable one: no optimizer state, optionally float16,
with a title for the pickers.

    python -m segdemo.export runs/unet_shapes/best.pt checkpoints/unet_shapes.pt --title "U-Net (shapes)"
"""

from __future__ import annotations

import argparse
import sys

from . import checkpoints
from .errors import CheckpointError


def export(source, target, *, title: str | None = None, half: bool = False) -> None:
    payload = checkpoints.read(source)
    meta = dict(payload["meta"])
    if title:
        meta["title"] = title
    model = checkpoints.build_model(meta, payload["state_dict"])
    checkpoints.save(target, model, meta, half=half)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segdemo.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a run's best.pt or last.pt")
    parser.add_argument("target", help="the file to write")
    parser.add_argument("--title", help="name shown in the app")
    parser.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    args = parser.parse_args(argv)
    try:
        export(args.source, args.target, title=args.title, half=args.half)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
