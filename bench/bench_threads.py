"""How many torch threads the background training run should use: a 192×192 prediction's latency
while the live run goes, and the run's speed, with the run on every core (torch's default) or
held to one. Each setting runs in its own process (OpenMP keeps its thread pools per process).

    python bench/bench_threads.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import ROOT, write_section  # noqa: E402


def measure(train_threads: int | None) -> dict:
    """In this process: prediction latency alone, then while a live run goes; the run's steps/s."""
    import tempfile

    import numpy as np

    from segdemo.data import shapes
    from segdemo.engine import BackgroundTrainer, preset
    from segdemo.inference import load_segmenter

    segmenter = load_segmenter(ROOT / "checkpoints" / "unet_shapes.pt")
    image = shapes.generate(1, 192, seed=1)[0][0]

    def latencies(count):
        times = []
        for _ in range(count):
            start = time.perf_counter()
            segmenter.predict(image)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000, float(np.percentile(times, 95)) * 1000

    for _ in range(5):
        segmenter.predict(image)
    alone = latencies(40)
    with tempfile.TemporaryDirectory() as folder:
        trainer = BackgroundTrainer(folder, threads=train_threads)
        trainer.start(preset("live", max_seconds=60))
        time.sleep(8)  # past set-up and the first validation
        quiet_from, quiet_start = trainer.status()["step"], time.perf_counter()
        time.sleep(10)
        quiet_speed = (trainer.status()["step"] - quiet_from) / (time.perf_counter() - quiet_start)
        busy_from, busy_start = trainer.status()["step"], time.perf_counter()
        busy = latencies(80)
        busy_speed = (trainer.status()["step"] - busy_from) / (time.perf_counter() - busy_start)
        trainer.stop()
        trainer.wait()
    return {"alone": alone, "busy": busy, "steps_alone": quiet_speed, "steps_busy": busy_speed}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        threads = int(sys.argv[2]) or None
        print(json.dumps(measure(threads)))
        return
    rows = []
    for threads in (0, 1):
        output = subprocess.run([sys.executable, __file__, "--child", str(threads)], check=True, cwd=ROOT,
                                capture_output=True, text=True, env={**os.environ, "SEGDEMO_OFFLINE": "1"}).stdout
        result = json.loads(output.strip().splitlines()[-1])
        rows.append({"training thread": "torch default (one per core)" if not threads else f"{threads} thread",
                     "prediction alone (median / p95)": "{:.1f} / {:.1f} ms".format(*result["alone"]),
                     "prediction while training (median / p95)": "{:.1f} / {:.1f} ms".format(*result["busy"]),
                     "run: steps/s alone": f"{result['steps_alone']:.2f}",
                     "run: steps/s while predicting back to back": f"{result['steps_busy']:.2f}"})
        print(rows[-1], flush=True)
    write_section("threads", "Training thread: every core or one (192×192, default model, live run)", rows, notes=(
        "Predictions in the main thread, back to back, while `BackgroundTrainer` runs the live preset. "
        "The app keeps torch's default (the run is bounded by the core count) because holding it to "
        "one thread did not make predictions faster."))


if __name__ == "__main__":
    main()
