"""The live preset (what the Train tab runs), end to end: time to validation Dice 0.80 / 0.90 / 0.95,
the Dice at 30 s, and the final model's Dice on 200 fresh 192×192 shapes, over several seeds.

    python bench/bench_live.py --seeds 0 1 2

Each run is exactly ``python -m segdemo.train --preset live --max-seconds S --out PATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SEGDEMO_OFFLINE", "1")

from common import ROOT, write_section  # noqa: E402
from segdemo.inference import load_segmenter  # noqa: E402
from segdemo.evaluate import evaluate_shapes  # noqa: E402

THRESHOLDS = (0.80, 0.90, 0.95)


def run(seed: int, seconds: float, out: Path, device: str | None = None) -> dict:
    """One live run (on ``device``, default the preset's ``auto``) and what it reached when."""
    command = [sys.executable, "-m", "segdemo.train", "--preset", "live", "--max-seconds", str(seconds),
               "--seed", str(seed), "--out", str(out), "--quiet", *(["--device", device] if device else [])]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    epochs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e["type"] == "epoch"]
    reached = {}
    for threshold in THRESHOLDS:
        hit = next((e for e in epochs if (e["val"]["mean_dice"] or 0) >= threshold), None)
        reached[threshold] = f"{hit['elapsed']:.0f} s" if hit else "–"
    at_30 = max((e["val"]["mean_dice"] for e in epochs if e["elapsed"] <= 32), default=None)
    fresh = evaluate_shapes(load_segmenter(out / "last.pt", device=device), count=200, size=192, seed=4242)
    return {"seed": seed, "steps": epochs[-1]["step"], "val Dice ≤ 30 s": f"{at_30:.2f}" if at_30 else "–",
            **{f"to {t:.2f}": reached[t] for t in THRESHOLDS},
            "final val Dice (48 images)": f"{epochs[-1]['val']['mean_dice']:.3f}",
            "fresh 200 images: mean Dice": f"{fresh['mean_dice']:.3f}",
            "per class": " ".join(f"{d:.3f}" for d in fresh["dice"]), "wall time": f"{wall:.0f} s"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seconds", type=float, default=None, help="default: the preset's own limit")
    parser.add_argument("--device", default=None, help="cpu, cuda … (default: the preset's auto)")
    args = parser.parse_args()
    from segdemo.engine import preset

    seconds = args.seconds or preset("live").max_seconds
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            rows.append(run(seed, seconds, Path(folder) / f"seed{seed}", args.device))
            print(rows[-1], flush=True)
    write_section("live", f"Learn live: the Train tab's default run ({seconds:.0f} s limit, validation included)",
                  rows, command=f"python bench/bench_live.py --seeds {' '.join(map(str, args.seeds))}"
                  + (f" --device {args.device}" if args.device else ""), notes=(
                      "Each row is `python -m segdemo.train --preset live --max-seconds S --seed N`. Times are "
                      "wall-clock from the start of the run to the first validation (48 whole 192×192 images, "
                      "every 25 steps) at or above the Dice; per-class Dice in the order filled square, disk, "
                      "triangle, ring, mesh square, plus (the mesh square's ceiling is about 0.94). "
                      "Target: mean Dice ≥ 0.90 within 5 minutes, aim 3."))


if __name__ == "__main__":
    main()
