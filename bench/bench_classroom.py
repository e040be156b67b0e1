"""A class on one shared app: 30 pages watching a run while 16 clients segment.

    python bench/bench_classroom.py [--watchers 30] [--pages 1] [--clients 16] [--pace 3] [--seconds 60]

The app runs in public mode (a workspace per visitor) on the machine's two cores, as a 2-core
Space's server would. Each of the class's members is its own visitor:

- **watchers** speak the page's own protocol: every 0.8 s each sends the Train tab's timer tick
  (gradio's queue, its own session) and reads the answer, as an open Train tab does, at a
  fraction of a browser's cost;
- **pages** are real Chromium pages on the Train tab, to check that a page shows the run's step;
- **clients** are ``gradio_client`` sessions asking for ``/segment`` every ``--pace`` seconds, as a
  student clicking would (back to back with ``--pace 0``).

The class runs on core 0, the core the app keeps for requests (``SEGDEMO_SERVING_CORES=1``, the
default of public mode), so the run's own core is left to it as it would be on a Space. The
``shared`` layout (``SEGDEMO_SERVING_CORES=0``, the app pinned to core 0 with one torch thread)
is the app before it kept a core for the run, measured the same way. Measured: the live run's
speed alone and with the class, ``/segment`` round trips during the run, the server's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SEGDEMO_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from bench_app import (local_client, percentile, queue_call, segment_latencies, start_app,  # noqa: E402
                       start_live_run, train_tab_pages)
from common import machine, write_section  # noqa: E402

TICK_SECONDS = 0.8   # the Train tab's timer (segdemo.ui.train_tab.REFRESH_SECONDS)
# name: (what it is, the app's cores (taskset), its environment, the core the class runs on)
LAYOUTS = {"reserved": ("a core kept for the run (SEGDEMO_SERVING_CORES=1)", "0,1", {}, 0),
           "shared": ("all on one core, shared (SEGDEMO_SERVING_CORES=0)", "0",
                      {"SEGDEMO_SERVING_CORES": "0", "OMP_NUM_THREADS": "1"}, 0),
           # The server's own latency: the class moved off the serving core, onto the run's (so the
           # run's speed is not reported from this one).
           "latency": ("a core kept for the run, the class on the run's core", "0,1", {}, 1)}


def run_speed(client, seconds: float, during=None, each=None) -> tuple[float, int]:
    """Median images/s (after the first 5 steps) and steps of a live run of ``seconds`` started by
    ``client``, with ``during()`` called once it trains and ``each(status)`` at each look at it."""
    start_live_run(client, seconds)
    while client.predict(api_name="/train_status")["state"] in ("queued", "starting"):
        time.sleep(0.5)
    if during is not None:
        during()
    while (status := client.predict(api_name="/train_status"))["state"] in ("running", "stopping"):
        if each is not None:
            each(status)
        time.sleep(1)
    speeds = [s["images_per_second"] for s in status["steps"][5:] if s["images_per_second"]]
    return statistics.median(speeds), len(status["steps"])


def timer_tick(url: str) -> tuple[int, int]:
    """The ``fn_index`` and trigger id of the Train tab's timer tick, read from the page's config."""
    with urllib.request.urlopen(url + "config") as response:
        config = json.load(response)
    timers = {c["id"] for c in config["components"] if c.get("type") == "timer"}
    for index, dependency in enumerate(config["dependencies"]):
        for target, event in dependency["targets"]:
            if target in timers and event == "tick":
                return index, target
    raise RuntimeError("the page has no timer")


def watch(url: str, stop: threading.Event, ticks: list[float], failures: list[str]) -> None:
    """One watcher: the Train tab's timer tick every TICK_SECONDS, in a session of its own, as an
    open page sends it (join the queue, read the answer from the event stream)."""
    import httpx

    fn_index, trigger = timer_tick(url)
    session = uuid.uuid4().hex[:11]
    with httpx.Client(base_url=url + "gradio_api/", timeout=30) as http:
        while not stop.is_set():
            begun = time.perf_counter()
            try:
                queue_call(http, fn_index, trigger, [None], session)
                ticks.append(time.perf_counter() - begun)
            except (httpx.HTTPError, RuntimeError) as error:
                failures.append(type(error).__name__)
            stop.wait(max(0.0, TICK_SECONDS - (time.perf_counter() - begun)))


def measure(layout: str, args, image: Path, folder: Path) -> dict:
    """The run alone, then with the class, in one app started in ``layout``."""
    import psutil

    _, cpus, env, class_core = LAYOUTS[layout]
    os.sched_setaffinity(0, {class_core})  # this process and what it starts (Chromium) stand in for the class
    process, url, _ = start_app(folder / layout, cpus=cpus, env={"SEGDEMO_WORKSPACES": "1", **env})
    try:
        teacher = local_client(url)
        segment_latencies(teacher, image, 5)  # the default model loaded
        alone, alone_steps = run_speed(teacher, args.seconds)
        idle = segment_latencies(local_client(url), image, 30)
        latencies, ticks, failures, memory = [], [], [], [0.0]
        stop = threading.Event()

        def segmenting(index: int):
            client = local_client(url)
            stop.wait(args.pace * index / max(args.clients, 1))  # spread out, as a class would be
            while not stop.is_set():
                try:
                    latencies.extend(segment_latencies(client, image, 1))
                except Exception as error:  # noqa: BLE001  (counted, reported)
                    failures.append(type(error).__name__)
                stop.wait(args.pace)

        def sample_memory():
            while not stop.is_set():
                memory[0] = max(memory[0], psutil.Process(process.pid).memory_info().rss / 2**20)
                time.sleep(0.5)

        with train_tab_pages(url, args.pages) as pages:  # Chromium inherits this process's core
            threads = [threading.Thread(target=segmenting, args=(i,), daemon=True) for i in range(args.clients)]
            threads += [threading.Thread(target=watch, args=(url, stop, ticks, failures), daemon=True)
                        for _ in range(args.watchers)]
            threads.append(threading.Thread(target=sample_memory, daemon=True))

            def class_starts():
                for thread in threads:
                    thread.start()

            lags: list[int] = []

            def look(status):  # how far behind the run each page's status line is
                for page in pages:
                    shown_step = re.search(r"step (\d+)", page.inner_text("#train-status-line"))
                    lags.append(status["step"] - int(shown_step.group(1)) if shown_step else 10**6)

            serving = psutil.Process(process.pid)
            before = serving.cpu_times()
            loaded, loaded_steps = run_speed(teacher, args.seconds, during=class_starts, each=look)
            after = serving.cpu_times()  # the app's own process: its serving work, not the run's child
            serving_share = (after.user + after.system - before.user - before.system) / args.seconds
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            shown = lags
    finally:
        process.terminate()
        process.wait()
    return {"alone": alone, "alone_steps": alone_steps, "loaded": loaded, "loaded_steps": loaded_steps,
            "latencies": latencies, "ticks": ticks, "failures": failures, "idle": idle, "shown": shown,
            "memory": memory[0], "serving_share": serving_share}


def _lag_text(lags: list[int]) -> str:
    if not lags:
        return "no page"
    shown = [lag for lag in lags if lag < 10**6]
    return (f"median {statistics.median(shown):.0f} steps, p95 {np.percentile(shown, 95):.0f} steps "
            f"(the run makes about 5 a second); no step shown in {len(lags) - len(shown)} of {len(lags)} looks"
            if shown else f"no step shown in any of {len(lags)} looks")


def rows_for(layout: str, result: dict, args) -> list[dict]:
    """The table's rows for one layout (for ``latency``, only what the server answered: the class
    shared the run's core there)."""
    rows = _all_rows(layout, result, args)
    if layout == "latency":
        rows = [row for row in rows if "round trip during" in row["what"] or "timer tick" in row["what"]]
    return rows


def _all_rows(layout: str, result: dict, args) -> list[dict]:
    name = LAYOUTS[layout][0]
    pace = f"each every {args.pace:g} s" if args.pace else "back to back"
    slowdown = 100 * (result["loaded"] / result["alone"] - 1)
    return [
        {"layout": name, "what": "live run alone", "value":
            f"{result['alone']:.1f} images/s ({result['alone_steps']} steps in {args.seconds:.0f} s)", "target": "–"},
        {"layout": name, "what": f"the same run with {args.watchers} watchers, {args.pages} pages and {args.clients} "
                                 f"clients segmenting ({pace})",
         "value": f"{result['loaded']:.1f} images/s ({result['loaded_steps']} steps; {slowdown:+.1f} %)",
         "target": "slowed ≤ 10 %"},
        {"layout": name, "what": "`/segment` 192×192 round trip during the run",
         "value": f"median {1e3 * statistics.median(result['latencies']):.0f} ms, p95 "
                  f"{1e3 * percentile(result['latencies'], 95):.0f} ms, {len(result['latencies'])} answered, "
                  f"{len(result['failures'])} failed", "target": "p95 ≤ 1 s"},
        {"layout": name, "what": "a watcher's timer tick during the run (answer time)",
         "value": f"median {1e3 * statistics.median(result['ticks']):.0f} ms, p95 "
                  f"{1e3 * percentile(result['ticks'], 95):.0f} ms, {len(result['ticks'])} ticks", "target": "≤ 1 s"},
        {"layout": name, "what": "the app process's own CPU during the run (serving; a child's training not counted)",
         "value": f"{100 * result['serving_share']:.0f} % of one core", "target": "–"},
        {"layout": name, "what": "`/segment` with nothing else going (one client)",
         "value": f"median {1e3 * statistics.median(result['idle']):.0f} ms", "target": "–"},
        {"layout": name, "what": "how far a Chromium page's status line was behind the run (looked at once a second)",
         "value": _lag_text(result["shown"]), "target": "a step shows within 1 s"},
        {"layout": name, "what": "server's peak resident memory during the run", "value": f"{result['memory']:.0f} MB",
         "target": "–"},
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=30, help="open Train tabs, simulated by their timer tick")
    parser.add_argument("--pages", type=int, default=1, help="real Chromium pages on the Train tab")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--pace", type=float, default=3.0, help="seconds between a client's requests (0: none)")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--layouts", default="reserved,shared,latency", help="comma-separated: " + ", ".join(LAYOUTS))
    args = parser.parse_args(argv)
    from PIL import Image

    from segdemo.data import shapes

    described = machine()  # before this process pins itself to one core
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        image = folder / "shapes.png"
        Image.fromarray(shapes.generate(1, 192, seed=1)[0][0]).save(image)
        for layout in args.layouts.split(","):
            measured = rows_for(layout, measure(layout, args, image, folder), args)
            rows += measured
            print(*measured, sep="\n", flush=True)
    write_section("classroom", "A class on one shared app", rows, notes=(
        "The class (watchers, pages and clients, each its own visitor) runs on core 0, the core the app keeps for "
        "requests, so the run's core is left to it as on a Space whose visitors are on their own machines. The "
        "latency rows of the first two layouts are pessimistic for that reason: the class's own Python (16 "
        "`gradio_client` sessions, 30 watchers, a Chromium page) shares core 0 with the server, whose own share "
        "is the row above them. The third layout measures the server's answers with the class moved to the run's "
        "core instead (the run's speed is not reported from it). "
        "With a core kept for the run, the run trains in a child process on core 1 with one torch thread; "
        "shared, the whole app (and its run) is pinned to core 0 with one torch thread, as the app was measured "
        "before it kept a core for the run. Watchers send the Train tab's own timer tick every 0.8 s through "
        "gradio's queue, in sessions of their own; the snapshot and model-list refreshes a page also asks for "
        "(once per validation) are not simulated. The run is the Train tab's default; speeds are medians of its "
        "steps after the fifth."), machine_line=described)


if __name__ == "__main__":
    main()
