"""Models: parameters, GFLOPs, inference latency (plain fp32 vs segdemo's fast path, side by side)
at 192×192 and 584×565, the fast path's agreement with fp32, pictures, and tiled 4000×4000.

    python bench/bench_models.py            # all sections
    python bench/bench_models.py --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SEGDEMO_OFFLINE", "1")

from common import ROOT, median_time, write_section  # noqa: E402
from segdemo import checkpoints, models, viz  # noqa: E402
from segdemo.data import shapes  # noqa: E402
from segdemo.inference import Segmenter  # noqa: E402
from segdemo.labels import probabilities_to_labels  # noqa: E402
from segdemo.prediction import Prediction  # noqa: E402

SIZES = [(192, 192), (584, 565)]


def gflops(model, height, width) -> float:
    model = model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, height, width, device=next(model.parameters()).device))
    return counter.get_total_flops() / 1e9


def candidates():
    """(label, model, meta) for the shipped checkpoints and reference architectures."""
    rows = []
    for name in ("unet_shapes", "fcn_resnet18_shapes", "u2netp_shapes"):
        path = ROOT / "checkpoints" / f"{name}.pt"
        if path.exists():
            payload = checkpoints.read(path)
            rows.append((f"{name} (shipped)", checkpoints.build_model(payload["meta"], payload["state_dict"]),
                         payload["meta"]))
    meta = checkpoints.build_meta(models.create("unet", 3, 6, base_channels=4, depth=1), task="multilabel",
                                  classes=shapes.CLASSES, colors=shapes.COLORS)
    for label, name, options in [
        ("classic U-Net (tutorial: 64…512, bilinear, no BN)", "unet",
         dict(base_channels=64, depth=3, norm="none")),
        ("U-Net 16 wide, depth 3", "unet", dict(base_channels=16, depth=3)),
        ("U²-Net (full)", "u2net", {}),
        ("LR-ASPP MobileNetV3 (VOC, random weights)", "lraspp_mobilenet_v3_large_voc", dict(pretrained=False)),
    ]:
        torch.manual_seed(0)
        classes = 21 if "voc" in name else 6
        model = models.create(name, 3, classes, **options)
        spec_meta = dict(meta, model=model.segdemo_spec, classes=[str(i) for i in range(classes)],
                         colors=[[i, i, i] for i in range(classes)],
                         task="multiclass" if classes == 21 else "multilabel")
        rows.append((label, model, spec_meta))
    return rows


def latency(exact: Segmenter, fast: Segmenter, image: np.ndarray, repeats: int) -> tuple[float, float, float]:
    """Median seconds per ``predict`` of the fp32 and the fast-path segmenter of one model on ``image``
    (each ends in a copy to the CPU, so a GPU's time is all counted), and the share of labels they
    agree on."""
    exact_time = median_time(lambda: exact.predict(image), repeats=repeats, warmup=1)
    fast_time = median_time(lambda: fast.predict(image), repeats=repeats, warmup=1)
    agreement = float((fast.predict(image).labels() == exact.predict(image).labels()).mean())
    return exact_time, fast_time, agreement


def sample_images() -> dict:
    """One shapes image per size in SIZES, the same every run."""
    return {size: (shapes.generate(1, size, seed=3)[0][0]) for size in SIZES}


def latency_rows(quick: bool, device=None):
    images = sample_images()
    rows = []
    for label, model, meta in candidates():
        exact = Segmenter(model, meta, precision="fp32", device=device)
        fast = Segmenter(model, meta, precision="fast", device=device)
        row = {"model": label, "parameters": f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M",
               "GFLOPs 192²": f"{gflops(exact.reference, 192, 192):.2f}"}
        for size in SIZES:
            repeats = 3 if quick or "classic" in label or "full" in label else 15
            exact_time, fast_time, agreement = latency(exact, fast, images[size], repeats)
            key = f"{size[0]}×{size[1]}"
            row[f"{key} fp32 eager"] = f"{exact_time * 1e3:.1f} ms"
            row[f"{key} fast path"] = f"{fast_time * 1e3:.1f} ms ({exact_time / fast_time:.2f}×, {100 * agreement:.2f} % same labels)"
        row["fast path"] = fast.path.describe()
        rows.append(row)
        print(row, flush=True)
    return rows


def picture_rows():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (584, 565, 3), dtype=np.uint8)
    logits = rng.normal(size=(21, 584, 565)).astype(np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=0)
    colors = [tuple(int(v) for v in c) for c in rng.integers(0, 255, (21, 3))]

    def prediction() -> Prediction:  # a fresh one: nothing computed yet
        return Prediction(probabilities, "multiclass", tuple(f"class {i}" for i in range(21)), colors)

    def all_pictures():
        answer = prediction()
        viz.overlay(image, answer)
        viz.colorize_labels(answer.labels(), colors)
        viz.channel_maps(answer)

    answered = prediction()
    labels = answered.labels()
    return [
        {"what": "label map from probabilities (21×584×565, argmax)",
         "median": f"{median_time(lambda: probabilities_to_labels(probabilities, 'multiclass')) * 1e3:.1f} ms"},
        {"what": "overlay (given the label map)", "median":
            f"{median_time(lambda: viz.overlay(image, answered)) * 1e3:.1f} ms"},
        {"what": "colorized label map", "median": f"{median_time(lambda: viz.colorize_labels(labels, colors)) * 1e3:.1f} ms"},
        {"what": "21 channel heat maps", "median": f"{median_time(lambda: viz.channel_maps(answered)) * 1e3:.1f} ms"},
        {"what": "all of the above (label map once)", "median": f"{median_time(all_pictures) * 1e3:.1f} ms"},
    ]


# Peak memory is sampled in the child (ru_maxrss would report the parent's high-water mark: Linux
# keeps it across fork and exec).
TILED_SCRIPT = """
import sys, threading, time, numpy as np, psutil
from segdemo.inference import load_segmenter
process, peak = psutil.Process(), [0]
def sample():
    while True:
        peak[0] = max(peak[0], process.memory_info().rss)
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
segmenter = load_segmenter(sys.argv[1])
image = np.random.default_rng(0).integers(0, 255, (4000, 4000, 3), dtype=np.uint8)
segmenter.predict(image[:256, :256])
start = time.perf_counter()
probabilities = segmenter.predict(image).probabilities
elapsed = time.perf_counter() - start
time.sleep(0.05)
print(elapsed, peak[0] / 2**20, probabilities.shape)
"""


def tiled_row():
    path = ROOT / "checkpoints" / "unet_shapes.pt"
    if not path.exists():
        return []
    done = subprocess.run([sys.executable, "-c", TILED_SCRIPT, str(path)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds, peak_mb, shape = done.stdout.strip().split(" ", 2)
    return [{"what": "unet_shapes on a 4000×4000 photo (tiled 768 px, 64 px margins)",
             "time": f"{float(seconds):.1f} s", "peak memory (whole process)": f"{float(peak_mb):.0f} MB",
             "output": shape}]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = latency_rows(args.quick)
    write_section("models", "Models: size, FLOPs, inference latency (batch 1, median)", rows, notes=(
        "fp32 eager: the model as trained. Fast path: what `Segmenter.predict` uses on this device "
        "(chosen per device, and checked against fp32 on the first image: ≥ 99.5 % identical labels "
        "required). On these AVX2 CPUs bf16 autocast is emulated and several times slower, so the fast "
        "path is fp32 with batch norms folded into the convolutions and channels_last memory. "
        "Targets for the default model (unet_shapes): 192×192 ≤ 20 ms, 584×565 ≤ 150 ms."))
    write_section("pictures", "Pictures: overlay, label map and channels for 584×565 with 21 classes", picture_rows(),
                  notes="Target: ≤ 20 ms for overlay, label map and per-channel pictures together.")
    tiled = tiled_row()
    if tiled:
        write_section("tiled", "Tiled inference: a 4000×4000 photo", tiled,
                      notes="Target: ≤ 15 s and under 2 GB for the default model.")


if __name__ == "__main__":
    main()
