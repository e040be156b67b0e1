"""Load: a class segmenting at once while a training run goes, where each request's time goes, and
memory over many requests.

    python bench/bench_load.py --clients 16 --requests 20 [--layouts shared,reserved]

The app is single-user ``python app.py``, started with gradio's own per-event timing
(``GRADIO_PROFILING=1``) and segdemo's log at DEBUG (``/segment`` logs its phases), in each of two
layouts: ``shared`` (as it starts: the run and the requests share both cores) and ``reserved``
(``SEGDEMO_SERVING_CORES=1``, public mode's default: requests on core 0, the run on core 1). This
process stands in for the class; it keeps to one core (``--client-core``), and its CPU is reported
beside the server's and the run's. During one live run:

1. ``--clients`` ``gradio_client`` sessions send ``--requests`` ``/segment`` each, back to back:
   every request must succeed; p50/p95 latency and requests/s; the run must keep progressing.
2. The same load from raw HTTP clients that speak gradio's queue protocol as a page does (upload,
   join the queue, read the event stream, download the two result files), each phase timed on the
   client and matched, event by event, with gradio's own timing on the server (queue wait,
   preprocess, handler, postprocess) and the handler's log (read, model, overlay, PNG encoding).

Then, in the first layout, resident memory is read after 100 and after ``--memory-requests``
sequential requests (no growth means no leak). ``--root`` measures another checkout of the app
(for a before/after) and ``--out`` writes the section to another file than BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SEGDEMO_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from bench_app import (event_index, local_client, percentile, queue_call, start_app,  # noqa: E402
                       start_live_run, wait_until_idle)
from common import ROOT, cpu_model, machine, markdown_table, write_section  # noqa: E402

HANDLER_LOG = "segment timing "   # what segdemo.ui.upload_tab logs before each call's phases (JSON)


class CpuMeter:
    """CPU seconds used by this process, the app's process and its children (the training run)
    between :meth:`start` and :meth:`stop`."""

    def __init__(self, app_pid: int):
        import psutil

        self.app = psutil.Process(app_pid)

    def _read(self) -> dict:
        def used(process):
            times = process.cpu_times()
            return times.user + times.system

        children = {}
        for child in self.app.children(recursive=True):
            try:
                children[child.pid] = used(child)
            except Exception:  # noqa: BLE001  (a child that ended between listing and reading)
                pass
        return {"clients": time.process_time(), "server": used(self.app), "children": children,
                "wall": time.perf_counter()}

    def start(self):
        self.begun = self._read()

    def stop(self) -> dict:
        """Seconds of wall time, and CPU seconds of the clients (this process), the server and the
        training children."""
        end = self._read()
        training = sum(end["children"][pid] - self.begun["children"].get(pid, 0.0) for pid in end["children"])
        return {"wall": end["wall"] - self.begun["wall"], "clients": end["clients"] - self.begun["clients"],
                "server": end["server"] - self.begun["server"], "training": training}


class RawClient:
    """One visitor (one session, as a page or a ``gradio_client.Client`` is) speaking gradio's
    protocol over one HTTP connection, each phase of each request timed."""

    def __init__(self, url: str):
        import httpx

        self.http = httpx.Client(base_url=url + "gradio_api/", timeout=120)
        self.fn_index, self.trigger = event_index(url, "segment")
        self.session = uuid.uuid4().hex[:11]

    def segment(self, image: Path) -> dict:
        """``/segment`` of ``image``: seconds of each phase, and the event's id."""
        begun = time.perf_counter()
        with open(image, "rb") as handle:
            response = self.http.post("upload", files=[("files", (image.name, handle))])
        response.raise_for_status()
        uploaded = time.perf_counter()
        sent = {"path": response.json()[0], "orig_name": image.name, "meta": {"_type": "gradio.FileData"}}
        seen = queue_call(self.http, self.fn_index, self.trigger, [sent, ""], self.session)
        for output in seen["output"]["output"]["data"][:2]:
            self.http.get(output["url"]).raise_for_status()
        done = time.perf_counter()
        started = seen.get("process_starts", seen["joined"])
        return {"event": seen["output"]["event_id"], "upload": uploaded - begun, "join": seen["joined"] - uploaded,
                "queue": started - seen["joined"], "runs": seen["process_completed"] - started,
                "download": done - seen["process_completed"], "total": done - begun}

    def close(self):
        self.http.close()


def closed_loop(clients: int, requests: int, make_client, call, images: list[Path]) -> tuple[list, list]:
    """``clients`` threads, each with its own ``make_client()``, calling ``call(client, image)``
    ``requests`` times back to back; the calls' results and the failures (tracebacks)."""
    results, failures, lock = [], [], threading.Lock()

    def visitor(index):
        client = make_client()
        for request in range(requests):
            try:
                result = call(client, images[(index + request) % len(images)])
                with lock:
                    results.append(result)
            except Exception:  # every failure is counted and reported, with where it came from
                with lock:
                    failures.append(traceback.format_exc(limit=-6))

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, failures


def timed_gradio_client(client, image: Path) -> float:
    from gradio_client import handle_file

    start = time.perf_counter()
    client.predict(handle_file(str(image)), "", api_name="/segment")
    return time.perf_counter() - start


def gradio_traces(url: str, events: set[str]) -> list[dict]:
    """Gradio's own timing (``GRADIO_PROFILING=1``) of the ``/segment`` events of ``events`` (ids)."""
    import httpx

    traces = httpx.get(url + "gradio_api/profiling/traces", timeout=30).json()
    return [trace for trace in traces if trace["event_id"] in events]


def handler_phases(log: Path, offset: int) -> list[dict]:
    """The phases ``/segment`` logged (ms per call) after byte ``offset`` of the app's log."""
    with open(log, "rb") as handle:
        handle.seek(offset)
        lines = handle.read().decode(errors="replace").splitlines()
    return [json.loads(line.split(HANDLER_LOG, 1)[1]) for line in lines if HANDLER_LOG in line]


def spread(values_ms: list[float]) -> str:
    if not values_ms:
        return "–"
    return (f"{statistics.median(values_ms):.0f} / {percentile(values_ms, 95):.0f} / "
            f"{statistics.fmean(values_ms):.0f}")


def breakdown_rows(raw: list[dict], traces: list[dict], calls: list[dict]) -> list[dict]:
    """The per-request breakdown: the client's phases, gradio's on the server, the handler's."""
    ms = lambda key: [1e3 * r[key] for r in raw]  # noqa: E731
    rows = [
        {"phase": "client: upload the image (POST `/gradio_api/upload`)", "ms p50 / p95 / mean": spread(ms("upload"))},
        {"phase": "client: join the queue (POST `queue/join`)", "ms p50 / p95 / mean": spread(ms("join"))},
        {"phase": "client: joined → `process_starts` (waiting in the queue)", "ms p50 / p95 / mean": spread(ms("queue"))},
        {"phase": "client: `process_starts` → `process_completed` (the event runs)",
         "ms p50 / p95 / mean": spread(ms("runs"))},
        {"phase": "client: download overlay and label map (2 GETs)", "ms p50 / p95 / mean": spread(ms("download"))},
        {"phase": "client: whole request", "ms p50 / p95 / mean": spread(ms("total"))},
    ]
    for key, what in (("queue_wait_ms", "queue wait (joined → taken by a worker)"),
                      ("preprocess_ms", "preprocess (the upload into gradio's cache)"),
                      ("fn_call_ms", "the handler (incl. giving freed memory back)"),
                      ("postprocess_ms", "postprocess (result files into the cache)"),
                      ("total_ms", "preprocess + handler + postprocess")):
        rows.append({"phase": f"server, gradio: {what}", "ms p50 / p95 / mean": spread([t[key] for t in traces])})
    for phase, what in (("read", "read and decode the image"), ("model", "the model"),
                        ("overlay", "draw the overlay"), ("png", "encode the 2 PNGs")):
        per_image = [call[phase] / call["images"] for call in calls if phase in call]
        rows.append({"phase": f"server, handler: {what} (per image)", "ms p50 / p95 / mean": spread(per_image)})
    return rows


def cpu_text(cpu: dict, requests: int) -> str:
    return (f"per request: server {1e3 * cpu['server'] / requests:.0f} ms, clients {1e3 * cpu['clients'] / requests:.0f} ms "
            f"of CPU; training used {100 * cpu['training'] / cpu['wall']:.0f} % of a core")


# name: (what it is, the app's environment)
LAYOUTS = {"shared": ("`python app.py` as it starts on your own machine: the run (a child process, two torch "
                      "threads) and the requests share both cores", {}),
           "reserved": ("a core kept for the run (`SEGDEMO_SERVING_CORES=1`, public mode's default): requests on "
                        "core 0, the run on core 1 with one torch thread", {"SEGDEMO_SERVING_CORES": "1"})}


def measure(layout: str, args, folder: Path, images: list[Path], cores: str) -> dict:
    """One app started in ``layout``: the class's load on it during a live run, the breakdown of
    a request's time, and (if ``args.memory_requests``) its memory over sequential requests."""
    import psutil
    from gradio_client import handle_file

    log = folder / f"{layout}.log"
    process, url, _ = start_app(folder / layout, cpus=cores, root=args.root.resolve(), log=log,
                                env={"GRADIO_PROFILING": "1", "SEGDEMO_LOG_LEVEL": "DEBUG", **LAYOUTS[layout][1]})
    try:
        meter = CpuMeter(process.pid)
        main_client = local_client(url)
        for image in images:
            main_client.predict(handle_file(str(image)), "", api_name="/segment")
        raw = RawClient(url)
        idle_offset = log.stat().st_size
        idle = [raw.segment(images[i % len(images)]) for i in range(30)]

        start_live_run(main_client, 600)
        while main_client.predict(api_name="/train_status")["step"] < 5:
            time.sleep(0.5)
        steps_before = main_client.predict(api_name="/train_status")["step"]
        meter.start()
        time.sleep(10)
        alone = meter.stop()
        alone_rate = (main_client.predict(api_name="/train_status")["step"] - steps_before) / alone["wall"]

        loads = {}
        for name, make_client, call in (("gradio_client", lambda: local_client(url), timed_gradio_client),
                                        ("raw HTTP", lambda: RawClient(url), RawClient.segment)):
            offset = log.stat().st_size
            steps = main_client.predict(api_name="/train_status")["step"]
            meter.start()
            results, failures = closed_loop(args.clients, args.requests, make_client, call, images)
            cpu = meter.stop()
            steps = main_client.predict(api_name="/train_status")["step"] - steps
            loads[name] = {"results": results, "failures": failures, "cpu": cpu, "steps": steps, "offset": offset}
            for failure in failures[:5]:
                print("failure:", failure)
        main_client.predict(api_name="/train_stop")
        wait_until_idle(main_client)

        rows, total = [], args.clients * args.requests
        for name, load in loads.items():
            latencies = load["results"] if name == "gradio_client" else [r["total"] for r in load["results"]]
            cpu = load["cpu"]
            rows.append({"layout": layout, "what": f"{args.clients} clients × {args.requests} `/segment` (192×192) "
                                                   f"during a training run, {name} clients",
                         "result": f"{len(latencies)}/{total} succeeded, p50 {1e3 * percentile(latencies, 50):.0f} ms, "
                                   f"p95 {1e3 * percentile(latencies, 95):.0f} ms, {total / cpu['wall']:.1f} requests/s; "
                                   + cpu_text(cpu, total),
                         "training": f"{load['steps']} steps in the {cpu['wall']:.0f} s of load "
                                     f"({load['steps'] / cpu['wall']:.1f}/s; {alone_rate:.1f}/s alone just before)"})
        raw_load = loads["raw HTTP"]
        breakdown = breakdown_rows(raw_load["results"], gradio_traces(url, {r["event"] for r in raw_load["results"]}),
                                   handler_phases(log, raw_load["offset"]))
        idle_breakdown = breakdown_rows(idle, gradio_traces(url, {r["event"] for r in idle}),
                                        handler_phases(log, idle_offset)[:len(idle)])
        for row, quiet in zip(breakdown, idle_breakdown):
            row["the same, one client, no run"] = quiet["ms p50 / p95 / mean"]

        memory = {}
        app = psutil.Process(process.pid)
        for done in range(1, args.memory_requests + 1):
            main_client.predict(handle_file(str(images[done % len(images)])), "", api_name="/segment")
            if done in (100, args.memory_requests):
                memory[done] = app.memory_info().rss / 2**20
        if memory:
            rows.append({"layout": layout, "what": "resident memory of the app after N sequential `/segment` requests",
                         "result": ", ".join(f"{n}: {mb:.0f} MB" for n, mb in memory.items()), "training": "–"})
        return {"rows": rows, "breakdown": breakdown}
    finally:  # the app (and its run) end with the benchmark, whatever went wrong
        process.terminate()
        process.wait()


def main(argv=None):
    from PIL import Image

    from segdemo.data import shapes

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--memory-requests", type=int, default=1000, help="in the first layout only (0: none)")
    parser.add_argument("--layouts", default="shared,reserved", help="comma-separated: " + ", ".join(LAYOUTS))
    parser.add_argument("--client-core", type=int, default=1, help="the core this process (the class) keeps to")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout of the app to measure")
    parser.add_argument("--out", type=Path, default=None, help="write the section here (default BENCHMARKS.md)")
    args = parser.parse_args(argv)
    described = machine()  # before this process keeps to one core
    cores = ",".join(str(core) for core in sorted(os.sched_getaffinity(0)))
    os.sched_setaffinity(0, {args.client_core})  # the class's threads, started from here on, inherit it
    rows, breakdowns = [], {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        images = []
        for index in range(4):
            path = folder / f"img{index}.png"
            Image.fromarray(shapes.generate(1, 192, seed=index)[0][0]).save(path)
            images.append(path)
        for layout in args.layouts.split(","):
            measured = measure(layout, args, folder, images, cores)
            args.memory_requests = 0
            rows += measured["rows"]
            breakdowns[layout] = measured["breakdown"]
            print(*measured["rows"], markdown_table(measured["breakdown"]), sep="\n", flush=True)
    layouts = " ".join(f"**{name}**: {LAYOUTS[name][0]}." for name in breakdowns)
    tables = "\n\n".join(f"Layout **{name}**:\n\n{markdown_table(table)}" for name, table in breakdowns.items())
    write_section("load", "Load: concurrent visitors while training, where a request's time goes, and memory", rows,
                  notes=(f"CPU: {cpu_model()}. Layouts: {layouts} The app is single-user `python app.py`, started with "
                         "`GRADIO_PROFILING=1` and `SEGDEMO_LOG_LEVEL=DEBUG`. The clients are threads of the benchmark "
                         f"process, kept to core {args.client_core} (`os.sched_setaffinity`), so their own CPU (the "
                         "'clients' figure) is taken from the same two cores as the server's and the run's (in "
                         "**reserved**, from the run's core). Each client is its own session and sends its next request "
                         "as soon as the last is answered. The run is the Train tab's default (live preset); 'alone' is "
                         "its step rate in the 10 s before the load. CPU per request: the app process's and the class's "
                         "CPU time during the load over the requests answered; the run's child process's own CPU as a "
                         "share of one core.\n\n"
                         "Where a request's time goes, during the raw-HTTP load above (each request's client-side "
                         "phases; gradio's own timing of the same events, matched by event id; the handler's own log), "
                         "and for one client sending 30 requests with no run (ms: median / p95 / mean):\n\n" + tables),
                  machine_line=described, path=args.out)


if __name__ == "__main__":
    main()
