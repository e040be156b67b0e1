"""The GPU path, measured: training images/s (fp32 and the GPU's autocast), inference images/s through
``Segmenter.predict`` (fp32 and the fast path), and the live preset's time to validation Dice 0.90,
written into BENCHMARKS.md's ``gpu`` section. ``bench/gpu_check.sh`` runs it after the CUDA tests.

    python bench/bench_gpu.py                                    # on a CUDA GPU
    python bench/bench_gpu.py --device cpu --quick --live-seeds 0 --live-seconds 10 --benchmarks /tmp/B.md

The section is rewritten after each part (training, inference, live), so a run cut short by its time
limit still leaves what it measured, with what is missing named.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SEGDEMO_OFFLINE", "1")

import bench_live  # noqa: E402
import bench_models  # noqa: E402
import bench_training  # noqa: E402
from common import command_line, write_section  # noqa: E402
from segdemo.inference import Segmenter  # noqa: E402
from segdemo.runtime import autocast_dtype  # noqa: E402

PARTS = ("training", "inference", "live")


def precisions(device: torch.device) -> list[tuple[str, str]]:
    """(label, precision) pairs to time: fp32, and the autocast ``auto`` picks here if it picks one."""
    dtype = autocast_dtype(device, "auto")
    pairs = [("fp32", "fp32")]
    if dtype is not None:
        pairs.append((f"{str(dtype).replace('torch.', '')} autocast", "auto"))
    return pairs


def training_rows(device: torch.device, repeats: int, cases: list) -> list[dict]:
    """Training images/s of bench_training's models (``cases``) at their recipes' crops and batches."""
    rows = []
    for label, name, options, crop, batch in cases:
        speeds = {text: bench_training.images_per_second(name, options, crop, batch, repeats, device=device,
                                                         precision=precision)
                  for text, precision in precisions(device)}
        result = " · ".join(f"{text} {speed:.0f}" for text, speed in speeds.items())
        if len(speeds) > 1:
            first, last = speeds.values()
            result += f" ({last / first:.2f}×)"
        rows.append({"measure": "training images/s (channels_last, AdamW, BCE + Dice)",
                     "model and setting": f"{label}, {crop}×{crop} crops, batch {batch}", "result": result})
        print(rows[-1], flush=True)
    return rows


def inference_rows(device: torch.device, repeats: int, models: list) -> list[dict]:
    """Images/s of ``Segmenter.predict`` (batch 1, copy back to the CPU included), fp32 and fast path,
    for bench_models' ``(label, model, meta)`` candidates."""
    images = bench_models.sample_images()
    rows = []
    for label, model, meta in models:
        exact = Segmenter(model, meta, precision="fp32", device=device)
        fast = Segmenter(model, meta, precision="fast", device=device)
        parts, agreements = [], []
        for size, image in images.items():
            exact_time, fast_time, agreement = bench_models.latency(exact, fast, image, repeats)
            parts.append(f"{size[0]}×{size[1]}: fp32 {1 / exact_time:.0f}, fast path {1 / fast_time:.0f} "
                         f"({exact_time / fast_time:.2f}×)")
            agreements.append(agreement)
        rows.append({"measure": "inference images/s (Segmenter.predict, batch 1)", "model and setting": label,
                     "result": " · ".join(parts) + f"; fast path: {fast.path.describe()}, "
                                                   f"{100 * min(agreements):.2f} % same labels as fp32"})
        print(rows[-1], flush=True)
    return rows


def live_rows(device: torch.device, seeds: list[int], seconds: float) -> list[dict]:
    """Time to validation Dice 0.90 of ``python -m segdemo.train --preset live`` on ``device``."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in seeds:
            run = bench_live.run(seed, seconds, Path(folder) / f"seed{seed}", str(device))
            rows.append({"measure": "live preset: time to validation Dice 0.90",
                         "model and setting": f"`--preset live --max-seconds {seconds:g} --seed {seed}`",
                         "result": f"{run['to 0.90']} (0.80: {run['to 0.80']}, 0.95: {run['to 0.95']}); "
                                   f"{run['steps']} steps, final val Dice {run['final val Dice (48 images)']}, "
                                   f"fresh 200 images {run['fresh 200 images: mean Dice']}, "
                                   f"wall {run['wall time']}; precision {run['precision (trial step times)']}"})
            print(rows[-1], flush=True)
    return rows


def notes(device: torch.device, missing: list[str]) -> str:
    text = ("Training: one optimizer step per timing, median after a warm-up, the GPU synchronized before "
            "each clock reading. Inference: `Segmenter.predict` on one shapes image (uint8 in, probabilities "
            "back on the CPU), median; the fast path is autocast, channels_last and folded batch norms, and "
            "the agreement is with the same model's fp32 labels. Live: each run is "
            "`python -m segdemo.train --preset live` on this device, times from the start of the run to the "
            "first validation (48 images every 25 steps) at or above the Dice; fresh: mean Dice on 200 new "
            "192×192 shapes.")
    if device.type == "cuda":
        text += (f" fp32 here is PyTorch's default on the GPU: convolutions may use TF32 "
                 f"(torch.backends.cudnn.allow_tf32 = {torch.backends.cudnn.allow_tf32}).")
    if missing:
        text += f" **Incomplete**: not measured when this was written: {', '.join(missing)}."
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    parser.add_argument("--quick", action="store_true", help="3 timings per measure instead of 20-30, and only "
                        "the live preset's U-Net and the shipped unet_shapes (a dry run on a CPU)")
    parser.add_argument("--live-seeds", type=int, nargs="*", default=[0, 1], help="seeds of the live runs")
    parser.add_argument("--live-seconds", type=float, default=45.0, help="each live run's time limit")
    parser.add_argument("--benchmarks", type=Path, default=None, help="write this file instead of BENCHMARKS.md")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU here; --device cpu runs a dry run")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none (a dry run on the CPU)"
    cases, models = bench_training.CASES, bench_models.candidates()
    if args.quick:
        cases, models = cases[:1], models[:1]
    rows: list[dict] = []
    measured = {
        "training": lambda: training_rows(device, 3 if args.quick else 20, cases),
        "inference": lambda: inference_rows(device, 3 if args.quick else 30, models),
        "live": lambda: live_rows(device, args.live_seeds, args.live_seconds),
    }
    for index, part in enumerate(PARTS):
        rows += measured[part]()
        write_section("gpu", f"GPU path: {gpu}", rows, notes=notes(device, list(PARTS[index + 1:])),
                      command=command_line(), path=args.benchmarks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
