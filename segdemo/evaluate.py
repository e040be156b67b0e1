"""Evaluate a checkpoint on data it was not tuned on; optionally record the results in it.

    python -m segdemo.evaluate checkpoints/unet_shapes.pt --image-size 192 --image-size 256 --seed 2024
    python -m segdemo.evaluate runs/live/last.pt --record
    python -m segdemo.evaluate runs/drive/best.pt --data drive:DRIVE.zip

``--record`` rewrites the checkpoint's metadata: the shipped checkpoints are recorded only by
``train/build_checkpoints.sh``, with the seeds their cards quote.

Shapes are generated fresh (``--count`` images per size and seed, seeds never used in training);
file datasets are evaluated on their validation split. Metrics are dataset-level (counts summed
over all images), per class.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from . import checkpoints
from .data import open_source, shapes
from .files import json_safe
from .inference import Segmenter, load_segmenter
from .metrics import SegmentationMetrics


def evaluate_arrays(segmenter: Segmenter, images, targets) -> dict:
    """Metrics of ``segmenter`` over images ``(H, W, 3)`` and their targets."""
    metrics = SegmentationMetrics(segmenter.task, len(segmenter.classes))
    for image, target in zip(images, targets):
        metrics.update_numpy(segmenter.predict(np.asarray(image)).probabilities, np.asarray(target))
    return json_safe(metrics.compute())


def evaluate_shapes(segmenter: Segmenter, *, count: int = 200, size: int = 192, seed: int = 2024) -> dict:
    images, masks = shapes.generate(count, size, seed=seed)
    return evaluate_arrays(segmenter, images, masks)


def evaluate_source(segmenter: Segmenter, spec: str, limit: int | None = None) -> dict:
    dataset = open_source(spec).val_dataset()
    indices = range(len(dataset) if limit is None else min(limit, len(dataset)))
    pairs = (dataset[i] for i in indices)
    images, targets = zip(*((image.permute(1, 2, 0).numpy(), target.numpy()) for image, target in pairs))
    return evaluate_arrays(segmenter, images, targets)


def record(path: str | Path, evaluation: dict) -> None:
    """Store ``evaluation`` in the checkpoint's metadata (rewritten atomically)."""
    payload = checkpoints.read(path)
    meta = dict(payload["meta"], evaluation=evaluation)
    model = checkpoints.build_model(payload["meta"], payload["state_dict"])
    half = any(v.dtype == torch.float16 for v in payload["state_dict"].values())
    checkpoints.save(path, model, meta, train_state=payload.get("train_state"), half=half)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segdemo.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default=None, help="a data source spec (default: fresh shapes if the model "
                                                     "segments shapes)")
    parser.add_argument("--count", type=int, default=200, help="shapes images per size and seed")
    parser.add_argument("--image-size", type=int, action="append", help="shapes image size (repeatable; default 192)")
    parser.add_argument("--seed", type=int, action="append", help="shapes seed (repeatable; default 2024)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate at most this many images of a file dataset")
    parser.add_argument("--record", action="store_true", help="write the results into the checkpoint's metadata")
    args = parser.parse_args(argv)
    segmenter = load_segmenter(args.checkpoint)
    results = {}
    if args.data and args.data != "shapes":
        results[args.data] = evaluate_source(segmenter, args.data, args.limit)
    else:
        for size in args.image_size or [192]:
            for seed in args.seed or [2024]:
                key = f"fresh shapes {size}x{size}, seed {seed}, {args.count} images"
                results[key] = evaluate_shapes(segmenter, count=args.count, size=size, seed=seed)
    for key, metrics in results.items():
        dice = ", ".join(f"{c} {d:.4f}" if d is not None else f"{c} -" for c, d in zip(segmenter.classes, metrics["dice"]))
        print(f"{key}: mean Dice {metrics['mean_dice']:.4f} ({dice})")
    if args.record:
        record(args.checkpoint, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
