"""Where a live run's time goes: one training step of the live preset split by kind of operation
(torch's profiler), in each precision this CPU runs natively, and a whole run split into steps,
validation and the rest (from the run's own log).

    python bench/bench_step.py                 # the live preset
    python bench/bench_step.py --seconds 30    # the run's length for the second table

The first table answers "is the step compute-bound?": the 8-wide U-Net's convolutions are a small
share of the CPU's peak, and much of a step is memory-bound work (normalization, upsampling,
elementwise operations) that neither bf16 nor more cores speed up much.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SEGDEMO_OFFLINE", "1")

from common import ROOT, write_section  # noqa: E402
from segdemo.engine import preset  # noqa: E402
from segdemo.engine.precision import candidates, precision_name  # noqa: E402
from segdemo.engine.setup import build_setup  # noqa: E402
from segdemo.engine.steps import train_step  # noqa: E402

# profiler op name → the kind of work it is (the first pattern found in the name decides)
KINDS = [("convolution (backward)", ("convolution_backward",)),
         ("convolution (forward)", ("mkldnn_convolution", "convolution", "conv2d")),
         ("batch norm", ("batch_norm",)),
         ("upsampling", ("upsample",)),
         ("optimizer (AdamW, clipping)", ("adam", "foreach", "clip", "norm")),
         ("loss (BCE + Dice)", ("sigmoid", "binary_cross_entropy", "log_sigmoid")),
         ("pooling", ("pool",))]


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, patterns in KINDS:
        if any(pattern in lowered for pattern in patterns):
            return kind
    return "elementwise, copies and the rest"


def step_profile(precision: str, steps: int = 8) -> tuple[float, dict[str, float]]:
    """Median step time of the live preset in ``precision`` and each kind's share of the
    profiled self time."""
    from torch.profiler import ProfilerActivity, profile

    setup = build_setup(preset("live", precision=precision))
    loader = iter(setup.loader(setup.train_set, shuffle=False, batch_size=setup.config.batch_size, epoch=0))
    batches = [setup.prepare(*next(loader)) for _ in range(2 * steps + 3)]
    for images, target in batches[:3]:
        train_step(setup, images, target, 1e-3, 1)
    times = []
    for images, target in batches[3:3 + steps]:
        start = time.perf_counter()
        train_step(setup, images, target, 1e-3, 1)
        times.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for images, target in batches[3 + steps:]:
            train_step(setup, images, target, 1e-3, 1)
    shares: dict[str, float] = {}
    for event in profiler.key_averages():
        shares[kind_of(event.key)] = shares.get(kind_of(event.key), 0.0) + event.self_cpu_time_total
    total = sum(shares.values())
    return statistics.median(times), {kind: value / total for kind, value in shares.items()}


def run_split(seconds: float) -> dict:
    """A real ``--preset live`` run: its time in steps, validations and the rest."""
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "segdemo.train", "--preset", "live", "--max-seconds", str(seconds),
                        "--out", folder, "--quiet"], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        records = [json.loads(line) for line in (Path(folder) / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["type"] == "epoch"]
    steps = [r for r in records if r["type"] == "step"]
    first_step = steps[0]["elapsed"]
    validation = sum(e["validation_seconds"] for e in epochs)
    total = records[-1]["elapsed"]
    return {"total": total, "steps": len(steps), "validation": validation, "validations": len(epochs),
            "before the first step": first_step, "training steps and the rest": total - validation - first_step}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    config = preset("live")
    options = [precision_name(o) for o in candidates(torch.device("cpu"), "auto")]
    rows, kinds = [], [kind for kind, _ in KINDS] + ["elementwise, copies and the rest"]
    profiles = {name: step_profile("fp32" if name == "fp32" else "bf16") for name in options}
    for kind in kinds:
        rows.append({"share of a step's CPU time": kind,
                     **{name: f"{100 * shares.get(kind, 0.0):.0f} %" for name, (_, shares) in profiles.items()}})
    rows.append({"share of a step's CPU time": "**step time (median)**",
                 **{name: f"{1000 * seconds:.0f} ms" for name, (seconds, _) in profiles.items()}})
    split = run_split(args.seconds)
    run_rows = [{"part of the run": part, "seconds": f"{split[part]:.1f}",
                 "share": f"{100 * split[part] / split['total']:.0f} %"}
                for part in ("before the first step", "training steps and the rest", "validation")]
    write_section(
        "step", f"Where the live preset's time goes ({config.batch_size} crops of {config.crop_size}×{config.crop_size} "
        "a step)", rows, notes=(
            f"Profiled with torch.profiler over 8 steps after 11 others (self CPU time by operation, grouped). "
            f"A {args.seconds:g} s run (`python -m segdemo.train --preset live --max-seconds {args.seconds:g}`): "
            f"{split['steps']} steps, {split['validations']} validations (48 whole 192×192 images each) "
            "in its time:\n\n" + "\n".join(
                f"- {r['part of the run']}: {r['seconds']} s ({r['share']})" for r in run_rows)))


if __name__ == "__main__":
    main()
