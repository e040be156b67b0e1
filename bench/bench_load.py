"""Load: many visitors segmenting at once while a training run goes, and memory over many requests.

    python bench/bench_load.py --clients 16 --requests 20

Every request must succeed; p50/p95 latency is recorded; the training run must keep progressing;
resident memory is read after 100 and after 1,000 requests (no growth means no leak).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SEGDEMO_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from bench_app import local_client, start_app, start_live_run, wait_until_idle  # noqa: E402
from common import write_section  # noqa: E402


def main():
    import psutil
    from gradio_client import handle_file
    from PIL import Image

    from segdemo.data import shapes

    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--memory-requests", type=int, default=1000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        process, url, _ = start_app(folder / "data")
        app = psutil.Process(process.pid)
        images = []
        for index in range(4):
            path = folder / f"img{index}.png"
            Image.fromarray(shapes.generate(1, 192, seed=index)[0][0]).save(path)
            images.append(path)
        main_client = local_client(url)
        main_client.predict(handle_file(str(images[0])), "", api_name="/segment")

        start_live_run(main_client, 600)
        time.sleep(6)
        steps_before = main_client.predict(api_name="/train_status")["step"]
        latencies, failures = [], []
        lock = threading.Lock()

        def visitor(index):
            client = local_client(url)
            for request in range(args.requests):
                start = time.perf_counter()
                try:
                    client.predict(handle_file(str(images[(index + request) % 4])), "", api_name="/segment")
                    with lock:
                        latencies.append(time.perf_counter() - start)
                except Exception:  # every failure is counted and reported, with where it came from
                    with lock:
                        failures.append(traceback.format_exc(limit=-6))

        started = time.perf_counter()
        threads = [threading.Thread(target=visitor, args=(i,)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        duration = time.perf_counter() - started
        steps_after = main_client.predict(api_name="/train_status")["step"]
        main_client.predict(api_name="/train_stop")
        wait_until_idle(main_client)
        total = args.clients * args.requests
        rows.append({"what": f"{args.clients} clients × {args.requests} `/segment` (192×192) during a training run",
                     "result": f"{len(latencies)}/{total} succeeded, p50 {1e3 * np.percentile(latencies, 50):.0f} ms, "
                               f"p95 {1e3 * np.percentile(latencies, 95):.0f} ms, {total / duration:.1f} requests/s",
                     "training": f"{steps_after - steps_before} steps during the {duration:.0f} s of load"})
        for failure in failures[:5]:
            print("failure:", failure)

        memory = {}
        for done in range(1, args.memory_requests + 1):
            main_client.predict(handle_file(str(images[done % 4])), "", api_name="/segment")
            if done in (100, args.memory_requests):
                memory[done] = app.memory_info().rss / 2**20
        rows.append({"what": "resident memory of the app after N sequential `/segment` requests",
                     "result": ", ".join(f"{n}: {mb:.0f} MB" for n, mb in memory.items()),
                     "training": "–"})
        process.terminate()
        process.wait()
    write_section("load", "Load: concurrent visitors while training, and memory", rows, notes=(
        "Each client is its own `gradio_client.Client` in a thread of the benchmark process. The queue runs "
        "at most 2 inference events at once (2 cores); the training thread keeps its own pace."))


if __name__ == "__main__":
    main()
