"""The cost of watching a run learn (issue 15): a live run's speed with and without its probe
timeline and feature maps, the time of one frame, and how soon a step shows on a watching page.

    python bench/bench_probes.py                       # 3 alternated pairs of 90 s runs, on cores 0,1
    python bench/bench_probes.py --seconds 8 --pairs 1 --no-page --dry-run   # a few seconds: does it work

Each run is ``python -m segdemo.train --preset live --max-seconds S --seed N --probe-images K``
(K = 4, the preset's, or 0), pinned with ``taskset`` to ``--cpus``; with and without alternate, so
that drift in the machine's speed cancels out. Its speed is the run's own ``images_per_second``
(steps only: what the probes, made after a step, slow). The direct cost is what its log says the
frames (``probe_seconds``) and feature maps (``feature_seconds``) took, as a share of the run's
training time. ``--page`` (the default) also starts this tree's app and measures, with one Chromium
page on the Train tab (which now also draws the timeline, the per-class curves and the U), the
seconds from a step being recorded to the page showing it (``bench_app.step_display_latency``).
The target: at most 5 % slower, a step shown within 1 s. Only run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SEGDEMO_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from common import ROOT, machine, write_section


def live_run(seconds: float, probes: int, seed: int, out: Path, cpus: str | None) -> dict:
    """One pinned live run; its speed, its probe frames and what they cost, from its log."""
    pin = ["taskset", "-c", cpus] if cpus else []
    subprocess.run([*pin, sys.executable, "-m", "segdemo.train", "--preset", "live", "--max-seconds", str(seconds),
                    "--seed", str(seed), "--probe-images", str(probes), "--out", str(out), "--quiet"],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    end = next(r for r in records if r["type"] == "end")
    frames = [r for r in records if r["type"] == "probe"]
    features = [r for r in records if r["type"] == "features"]
    step_seconds = end["images"] / end["images_per_second"] if end["images_per_second"] else float("nan")
    watching = sum(r["probe_seconds"] for r in frames) + sum(r["feature_seconds"] for r in features)
    return {"images_per_second": end["images_per_second"], "steps": end["steps"], "frames": len(frames),
            "features": len(features), "frame_ms": [1000 * r["probe_seconds"] for r in frames],
            "feature_ms": [1000 * r["feature_seconds"] for r in features], "share": watching / step_seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=90, help="each run's time limit")
    parser.add_argument("--pairs", type=int, default=3, help="alternated (with, without) pairs")
    parser.add_argument("--cpus", default="0,1", help="taskset core list for the runs ('' for none)")
    parser.add_argument("--page", action=argparse.BooleanOptionalAction, default=True,
                        help="also time a step's display on a watching page")
    parser.add_argument("--dry-run", action="store_true", help="write the section to a scratch copy, not BENCHMARKS.md")
    args = parser.parse_args(argv)
    where = machine()
    with_probes, without = [], []
    with tempfile.TemporaryDirectory() as folder:
        for pair in range(args.pairs):
            for probes, results in ((4, with_probes), (0, without)):
                results.append(live_run(args.seconds, probes, pair, Path(folder) / f"{pair}-{probes}", args.cpus or None))
                print(f"pair {pair}, {probes} probes: {results[-1]['images_per_second']:.1f} images/s, "
                      f"{results[-1]['frames']} frames", flush=True)
        lags = page_lags(Path(folder) / "app") if args.page else None
    speed_with = statistics.median(r["images_per_second"] for r in with_probes)
    speed_without = statistics.median(r["images_per_second"] for r in without)
    frame_ms = [ms for r in with_probes for ms in r["frame_ms"]]
    feature_ms = [ms for r in with_probes for ms in r["feature_ms"]]
    rows = [
        {"what": f"live run speed, {args.seconds:g} s runs, without vs with probes (median of {args.pairs})",
         "value": f"{speed_without:.1f} vs {speed_with:.1f} images/s ({100 * (speed_with / speed_without - 1):+.1f} %)",
         "target": "≥ −5 %"},
        {"what": "frames kept per run (steps)", "value": ", ".join(f"{r['frames']} ({r['steps']})" for r in with_probes),
         "target": "≥ 40 in a 3-minute run"},
        {"what": "one probe frame (4 images predicted in one batch, drawn, PNG)",
         "value": f"median {statistics.median(frame_ms):.0f} ms, max {max(frame_ms):.0f} ms", "target": "–"},
        {"what": "one feature-map picture (one image, hooks on every stage, the U drawn)",
         "value": f"median {statistics.median(feature_ms):.0f} ms ({sum(r['features'] for r in with_probes)} in all)",
         "target": "–"},
        {"what": "frames and feature maps as a share of the steps' time (from the logs)",
         "value": ", ".join(f"{100 * r['share']:.1f} %" for r in with_probes), "target": "≤ 5 %"},
    ]
    if lags:
        rows.append({"what": "a step shows on a page watching the Train tab (with the timeline, classes and U)",
                     "value": f"median {statistics.median(lags):.2f} s, max {max(lags):.2f} s ({len(lags)} steps)",
                     "target": "≤ 1 s"})
    write_section("probes", "Watching it learn: the cost of the probe timeline and feature maps", rows,
                  machine_line=where, path=Path(tempfile.gettempdir()) / "BENCHMARKS-dry.md" if args.dry_run else None,
                  command=f"python bench/bench_probes.py --seconds {args.seconds:g} --pairs {args.pairs} "
                          f"--cpus {args.cpus or ''}" + ("" if args.page else " --no-page"))


def page_lags(data_dir: Path) -> list[float]:
    """Seconds from a step recorded to a Train-tab page showing it, during a 30 s live run of this tree's app."""
    from bench_app import local_client, start_app, step_display_latency

    process, url, _ = start_app(data_dir)
    try:
        return step_display_latency(local_client(url))
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    main()
