"""A class on one shared app: 30 pages watching a run while 16 clients segment.

    python bench/bench_classroom.py [--pages 30] [--clients 16] [--pace 3] [--seconds 60]

The app runs in public mode (a workspace per visitor) on core 0 with one torch thread, as a
2-core Space's server would have the machine to itself; the 30 pages (Chromium, each in a browser
context of its own, so each its own visitor, on the Train tab) and the 16 clients (each a
``gradio_client`` session, so each its own visitor, asking for ``/segment`` every ``--pace`` seconds
as a student clicking would, or back to back with ``--pace 0``) run on core 1, standing in for the
class's own machines. Measured: the live run's speed alone and with the class, ``/segment``
round trips during the run, and the server's resident memory.
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


sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SEGDEMO_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from bench_app import CHROMIUM, FLAGS, local_client, percentile, segment_latencies, start_app  # noqa: E402
from common import machine, write_section  # noqa: E402


def live_run(client, seconds: float) -> None:
    client.predict(model="unet", unet_width=8, data="synthetic shapes", dataset_zip=None, epochs=100, batch_size=16,
                   learning_rate=0.003, crop_size=96, time_limit_seconds=seconds, api_name="/train_start")


def run_speed(client, seconds: float, during=None) -> tuple[float, int]:
    """Median images/s (after the first 5 steps) and steps of a live run of ``seconds`` started by
    ``client``, with ``during()`` called once it trains."""
    live_run(client, seconds)
    while client.predict(api_name="/train_status")["state"] in ("queued", "starting"):
        time.sleep(0.5)
    if during is not None:
        during()
    while (status := client.predict(api_name="/train_status"))["state"] in ("running", "stopping"):
        time.sleep(1)
    speeds = [s["images_per_second"] for s in status["steps"][5:] if s["images_per_second"]]
    return statistics.median(speeds), len(status["steps"])


def open_watchers(playwright, url: str, count: int):
    """``count`` Chromium pages on the Train tab, each in a context of its own (its own visitor),
    Chromium pinned to core 1."""
    wrapper = Path(tempfile.mkdtemp()) / "chromium"
    wrapper.write_text(f'#!/bin/sh\nexec taskset -c 1 {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    browser = playwright.chromium.launch(executable_path=str(wrapper), args=FLAGS)
    pages = []
    for _ in range(count):
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(120_000)
        page.goto(url)
        page.get_by_role("tab", name="Train").click()
        pages.append(page)
    return browser, pages


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=30)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--pace", type=float, default=3.0, help="seconds between a client's requests (0: none)")
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args(argv)
    import psutil
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from segdemo.data import shapes

    described = machine()  # before this process pins itself to one core
    os.sched_setaffinity(0, {1})  # this process (the clients) stands in for the class's machines
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        image = folder / "shapes.png"
        Image.fromarray(shapes.generate(1, 192, seed=1)[0][0]).save(image)
        process, url, _ = start_app(folder / "data", cpus="0",
                                    env={"OMP_NUM_THREADS": "1", "SEGDEMO_WORKSPACES": "1"})
        try:
            teacher = local_client(url)
            segment_latencies(teacher, image, 5)  # the default model loaded
            alone, alone_steps = run_speed(teacher, args.seconds)
            idle = segment_latencies(local_client(url), image, 30)

            latencies: list[float] = []
            failures: list[str] = []
            memory = [0.0]
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

            with sync_playwright() as playwright:
                started = time.perf_counter()
                browser, pages = open_watchers(playwright, url, args.pages)
                opened = time.perf_counter() - started
                threads = [threading.Thread(target=segmenting, args=(i,), daemon=True) for i in range(args.clients)]
                threads.append(threading.Thread(target=sample_memory, daemon=True))

                def class_starts():
                    for thread in threads:
                        thread.start()

                loaded, loaded_steps = run_speed(teacher, args.seconds, during=class_starts)
                stop.set()
                for thread in threads:
                    thread.join(timeout=60)
                shown = sum(1 for page in pages if "step" in page.inner_text("#train-status-line"))
                browser.close()
        finally:
            process.terminate()
            process.wait()
    rows.append({"what": "live run alone (app on core 0, one torch thread)",
                 "value": f"{alone:.1f} images/s ({alone_steps} steps in {args.seconds:.0f} s)", "target": "–"})
    pace = f"each every {args.pace:g} s" if args.pace else "back to back"
    rows.append({"what": f"the same run with {args.pages} pages watching and {args.clients} clients segmenting ({pace})",
                 "value": f"{loaded:.1f} images/s ({loaded_steps} steps; {100 * (loaded / alone - 1):+.1f} %)",
                 "target": "slowed ≤ 10 %"})
    rows.append({"what": f"`/segment` 192×192 round trip during the run ({args.clients} clients, {pace})",
                 "value": f"median {1e3 * statistics.median(latencies):.0f} ms, p95 {1e3 * percentile(latencies, 95):.0f} ms, "
                          f"{len(latencies)} answered, {len(failures)} failed", "target": "p95 ≤ 1 s"})
    rows.append({"what": "`/segment` round trip with nothing else going (one client)",
                 "value": f"median {1e3 * statistics.median(idle):.0f} ms, p95 {1e3 * percentile(idle, 95):.0f} ms",
                 "target": "–"})
    rows.append({"what": f"{args.pages} pages opened (each its own visitor), and showing the run's step",
                 "value": f"opened in {opened:.0f} s; {shown} of {args.pages} showed the step line", "target": "–"})
    rows.append({"what": "server's peak resident memory during the run", "value": f"{memory[0]:.0f} MB", "target": "–"})
    write_section("classroom", "A class on one shared app", rows, notes=(
        f"`python bench/bench_classroom.py --pages {args.pages} --clients {args.clients} --pace {args.pace:g} "
        f"--seconds {args.seconds:g}`. "
        "The app runs with `SEGDEMO_WORKSPACES=1` pinned to core 0 with one torch thread; the pages (Chromium, "
        "one browser context each) and the clients (one `gradio_client` session each) run on core 1, standing in "
        "for the students' machines, so the figures are the server's own: its polling work for every watching "
        "page and the inference the clients ask for, on the core that also trains. The run is the Train tab's "
        "default; speeds are medians of its steps after the fifth."), machine_line=described)
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
