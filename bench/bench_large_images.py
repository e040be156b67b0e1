"""Huge images on a shared app: 4 clients sending 64-megapixel photos while a run trains.

    python bench/bench_large_images.py [--big-clients 4] [--clients 4] [--seconds 60]

The app runs in public mode. A live run trains; ``--big-clients`` visitors each send an
8000×8000 JPEG (64 megapixels, about 1.4 MB as a photo's worth of noise-free gradients) to
``/segment`` with the costliest shipped model (U²-Net(P)) again and again, while ``--clients``
other visitors segment an ordinary 192×192 image. Measured: how the huge requests end (refused
with a message, or answered, and how long each took), the other visitors' ``/segment`` round
trips, the server's peak resident memory (the app's process and the run's), and whether the run
kept training. Issue 18's bound: no request exhausts the server; others keep being served.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SEGDEMO_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from bench_app import local_client, percentile, segment_latencies, start_app, start_live_run  # noqa: E402
from common import machine, write_section  # noqa: E402

BIG_SIDE = 8000
HEAVY_MODEL = "u2netp_shapes"


def big_photo(path: Path) -> Path:
    """An 8000×8000 JPEG: smooth colour ramps with a little texture, as a photo compresses."""
    from PIL import Image

    y, x = np.mgrid[0:BIG_SIDE, 0:BIG_SIDE].astype(np.float32) / BIG_SIDE
    texture = np.random.default_rng(0).integers(0, 8, (BIG_SIDE, BIG_SIDE), dtype=np.uint8)
    image = np.stack([255 * x, 255 * y, 255 * (1 - x) * y], axis=-1).astype(np.uint8)
    image[..., 0] += texture
    Image.fromarray(image).save(path, quality=85)
    return path


def resident_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (the run's process), in MB."""
    import psutil

    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big-clients", type=int, default=4)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args(argv)
    from gradio_client import handle_file
    from PIL import Image

    from segdemo.data import shapes

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        small = folder / "shapes.png"
        Image.fromarray(shapes.generate(1, 192, seed=1)[0][0]).save(small)
        big = big_photo(folder / "big.jpg")
        process, url, _ = start_app(folder / "data", env={"SEGDEMO_WORKSPACES": "1"})
        try:
            teacher = local_client(url)
            segment_latencies(teacher, small, 3)
            before = resident_mb(process.pid)
            start_live_run(teacher, args.seconds)
            stop = threading.Event()
            latencies, big_outcomes, failures, peak = [], [], [], [before]

            def ordinary():
                client = local_client(url)
                while not stop.is_set():
                    try:
                        latencies.extend(segment_latencies(client, small, 1))
                    except Exception as error:  # noqa: BLE001  (counted)
                        failures.append(f"{type(error).__name__}: {error}"[:200])
                    stop.wait(1.0)

            def huge():
                client = local_client(url)
                while not stop.is_set():
                    begun = time.perf_counter()
                    try:
                        client.predict(handle_file(str(big)), HEAVY_MODEL, api_name="/segment")
                        outcome = "answered"
                    except Exception as error:  # noqa: BLE001  (a refusal is the expected outcome)
                        outcome = f"refused: {str(error).strip()[:160]}"
                    big_outcomes.append((outcome, time.perf_counter() - begun))

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], resident_mb(process.pid))
                    time.sleep(0.25)

            threads = [threading.Thread(target=ordinary, daemon=True) for _ in range(args.clients)]
            threads += [threading.Thread(target=huge, daemon=True) for _ in range(args.big_clients)]
            threads.append(threading.Thread(target=sample, daemon=True))
            for thread in threads:
                thread.start()
            time.sleep(args.seconds * 0.75)
            stop.set()
            for thread in threads:
                thread.join(timeout=300)
            status = teacher.predict(api_name="/train_status")
            steps = status.get("step") or 0
            models_started = time.perf_counter()
            teacher.predict(api_name="/models")
            models_seconds = time.perf_counter() - models_started
        finally:
            process.terminate()
            process.wait()
    kinds = sorted({outcome for outcome, _ in big_outcomes})
    times = [seconds for _, seconds in big_outcomes]
    rows.append({"what": f"{args.big_clients} clients × 64-megapixel JPEG on `/segment` ({HEAVY_MODEL})",
                 "value": f"{len(big_outcomes)} requests, each ended in median {statistics.median(times):.1f} s "
                          f"(max {max(times):.1f} s): " + "; ".join(kinds)})
    rows.append({"what": f"{args.clients} other visitors' `/segment` 192×192 meanwhile (one a second each)",
                 "value": f"median {1e3 * statistics.median(latencies):.0f} ms, p95 {1e3 * percentile(latencies, 95):.0f} ms, "
                          f"{len(latencies)} answered, {len(failures)} failed"})
    rows.append({"what": "server's resident memory (app and run), before → peak",
                 "value": f"{before:.0f} MB → {peak[0]:.0f} MB"})
    rows.append({"what": "the run meanwhile", "value": f"{status['state']}, step {steps}"})
    rows.append({"what": "`/models` after the load", "value": f"{1e3 * models_seconds:.0f} ms"})
    write_section("large_images", "Huge images on a shared app", rows, notes=(
        f"`python bench/bench_large_images.py --big-clients {args.big_clients} --clients {args.clients} "
        f"--seconds {args.seconds:g}`: the app in public mode on both cores, a live run training, "
        "the clients in this process (each its own visitor)."), machine_line=machine())
    for row in rows:
        print(row)
    if failures:
        print("failures:", *sorted(set(failures))[:5], sep="\n  ")


if __name__ == "__main__":
    main()
