"""The live preset (what the Train tab runs), end to end: how good a model `--max-seconds 30` and
`--max-seconds 60` leave, over several seeds, and when each run's validation first reached Dice
0.80 / 0.90 / 0.95.

    python bench/bench_live.py --seeds 0 1 2 --seconds 30 60
    python bench/bench_live.py --isa avx2     # this CPU held to AVX2 kernels (an AVX2-only machine's code paths)

Each run is exactly ``python -m segdemo.train --preset live --max-seconds S --seed N --out PATH``;
the model it leaves (``last.pt``) is then scored on 200 fresh 192×192 shapes (seed 4242), which
is what the targets (issue 17: Dice ≥ 0.90 at 30 s and ≥ 0.95 at 60 s, medians of 3 seeds) are
about. ``--isa avx2`` sets ``ONEDNN_MAX_CPU_ISA=AVX2`` and ``ATEN_CPU_CAPABILITY=avx2`` for the runs:
the same CPU without its AVX-512 and bf16 kernels, which is how an AVX2-only CPU runs torch (its
clock, caches and core design still differ from a real one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SEGDEMO_OFFLINE", "1")

from common import ROOT, cpu_model, machine, write_section  # noqa: E402
from segdemo.evaluate import evaluate_shapes  # noqa: E402
from segdemo.inference import load_segmenter  # noqa: E402

THRESHOLDS = (0.80, 0.90, 0.95)
TARGETS = {30: 0.90, 60: 0.95}  # issue 17: fresh-shapes Dice a run of this many seconds ends with
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def run(seed: int, seconds: float, out: Path, device: str | None = None, env: dict | None = None) -> dict:
    """One live run (on ``device``, default the preset's ``auto``) and what it reached when."""
    command = [sys.executable, "-m", "segdemo.train", "--preset", "live", "--max-seconds", str(seconds),
               "--seed", str(seed), "--out", str(out), "--quiet", *(["--device", device] if device else [])]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["type"] == "epoch"]
    chosen = next((r for r in records if r["type"] == "precision"), None)
    started = next(r for r in records if r["type"] == "start")
    reached = {}
    for threshold in THRESHOLDS:
        hit = next((e for e in epochs if (e["val"]["mean_dice"] or 0) >= threshold), None)
        reached[threshold] = f"{hit['elapsed']:.0f} s" if hit else "–"
    fresh = evaluate_shapes(load_segmenter(out / "last.pt", device=device), count=200, size=192, seed=4242)
    precision = chosen["precision"] if chosen else started["precision"]
    if chosen:
        precision += " (" + ", ".join(f"{name} {s * 1000:.0f} ms" for name, s in chosen["step_seconds"].items()) + ")"
    return {"seed": seed, "limit": f"{seconds:g} s", "precision (trial step times)": precision,
            "steps": epochs[-1]["step"], **{f"to {t:.2f}": reached[t] for t in THRESHOLDS},
            "final val Dice (48 images)": f"{epochs[-1]['val']['mean_dice']:.3f}",
            "fresh 200 images: mean Dice": f"{fresh['mean_dice']:.3f}",
            "per class": " ".join(f"{d:.2f}" for d in fresh["dice"]), "wall time": f"{wall:.0f} s"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seconds", type=float, nargs="+", default=[30, 60], help="time limits, each run per seed")
    parser.add_argument("--device", default=None, help="cpu, cuda … (default: the preset's auto)")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native",
                        help="avx2: hold torch to AVX2 kernels (no AVX-512, no bf16), as on an AVX2-only CPU")
    parser.add_argument("--section", default=None, help="BENCHMARKS.md section (default live, live-avx2)")
    args = parser.parse_args()
    env = AVX2_ONLY if args.isa == "avx2" else {}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seconds in args.seconds:
            for seed in args.seeds:
                rows.append(run(seed, seconds, Path(folder) / f"s{seed}-{seconds:g}", args.device, env))
                print(rows[-1], flush=True)
    summary = []
    for seconds in args.seconds:
        scores = [float(r["fresh 200 images: mean Dice"]) for r in rows if r["limit"] == f"{seconds:g} s"]
        target = TARGETS.get(int(seconds))
        summary.append(f"`--max-seconds {seconds:g}`: median fresh Dice {statistics.median(scores):.3f} "
                       f"(seeds: {', '.join(f'{s:.3f}' for s in scores)})"
                       + (f", target ≥ {target:.2f}" if target else ""))
    where = machine()
    if args.isa == "avx2":
        where = where.replace(cpu_model(), cpu_model() + "; held to AVX2 kernels: " +
                              " ".join(f"{k}={v}" for k, v in AVX2_ONLY.items()))
    name = args.section or ("live" if args.isa == "native" else "live-avx2")
    seconds_text = " ".join(f"{s:g}" for s in args.seconds)
    write_section(
        name, "Learn live: the Train tab's default run, stopped at 30 and 60 s"
        + (" (AVX2 kernels only)" if args.isa == "avx2" else ""), rows, machine_line=where,
        command=f"python bench/bench_live.py --seeds {' '.join(map(str, args.seeds))} --seconds {seconds_text}"
                + (f" --device {args.device}" if args.device else "") + (" --isa avx2" if args.isa == "avx2" else ""),
        notes="\n\n".join([
            "; ".join(summary) + ".",
            "Each row is `python -m segdemo.train --preset live --max-seconds S --seed N`; its `last.pt` is "
            "scored on 200 fresh 192×192 shapes (seed 4242). Times are wall-clock from the start of the run "
            "to the first validation (48 whole 192×192 images, every 50 steps, and at the end) at or above the "
            "Dice; the limit includes validations. Precision: the run's first steps are timed in each "
            "precision this CPU runs natively and the faster is kept. Per-class Dice in the order filled "
            "square, disk, triangle, ring, mesh square, plus (the mesh square's ceiling is about 0.94)."]))


if __name__ == "__main__":
    main()
