"""Starting the real app on a free port for API and browser tests, and running code in a fresh
interpreter (to see what an import or a build loads)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "checkpoints"
ARTIFACTS = ROOT / "test-artifacts"  # screenshots of the browser tests
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def run_fresh(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a new interpreter (nothing imported yet) in the repository's root; its
    assertions fail the test."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def two_rank_run(folder: Path, device: str, **env) -> Path:
    """A tiny U-Net trained by two processes under torchrun (``tests/ddp_worker.py``) on ``device``;
    checks that both ranks end with the same weights after 6 steps, that the log says world size 2
    and counts both ranks' images, and returns the run's folder."""
    import json

    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(ROOT / "tests" / "ddp_worker.py"), str(folder),
         "--model", "unet", "--base-channels", "4", "--depth", "2", "--image-size", "32", "--epochs", "2",
         "--steps-per-epoch", "3", "--batch-size", "2", "--val-images", "4", "--device", device,
         "--out", str(folder / "run"), "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = ((folder / f"rank{rank}.txt").read_text().split() for rank in (0, 1))
    assert rank0 == rank1 and rank0[1] == "6"
    log = [json.loads(line) for line in (folder / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["world_size"] == 2
    assert log[-1]["images"] == 2 * 6 * 2 and log[-1]["images_per_second"] > 0  # both ranks' images counted
    return folder / "run"


@dataclass
class RunningApp:
    url: str
    demo: object
    context: object

    def client(self):
        from gradio_client import Client

        # Plain http: without ssl_verify=False gradio_client builds a TLS context (~50 ms) per call and file.
        return Client(self.url, verbose=False, analytics_enabled=False, ssl_verify=False)

    def close(self):
        """Stop any training the tests left going, queued runs too (no thread may outlive the app),
        then the server; the process's limits go back to the single-user ones."""
        from segdemo import limits

        trainer = self.context.trainer
        trainer.close()
        trainer.wait(timeout=120)
        self.demo.close()
        limits.configure(public=False)  # the app's limits end with it


def start_app(data_dir: Path, port: int | None = None, **context_options) -> RunningApp:
    """The real app over ``data_dir`` and the shipped checkpoints, served on ``port`` (default: a
    free one; a browser keeps its storage per port, so a restart test serves on the same one)."""
    from segdemo.ui import build_demo, create_context, launch_options

    context = create_context(data_dir, SHIPPED, **context_options)
    demo = build_demo(context)
    port = port or free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, **launch_options())
    return RunningApp(f"http://127.0.0.1:{port}/", demo, context)


def save_image(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path)
    return path


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out waiting")


FILE_ROUTES = ["file={}", "gradio_api/file={}", "file/{}", "gradio_api/file/{}", "static/{}", "assets/{}",
               "gradio_api/static/{}", "svelte/{}", "gradio_api/proxy={}"]


def assert_refused(url: str, targets: list[str], secrets: list[bytes]) -> None:
    """No file route of the app at ``url`` serves any of ``targets`` (none of ``secrets`` comes back)."""
    for route in FILE_ROUTES:
        for target in targets:
            tried = url + route.format(target)
            try:
                with urllib.request.urlopen(tried, timeout=10) as response:
                    body, status = response.read(), response.status
            except urllib.error.HTTPError as error:
                body, status = error.read(), error.code
            assert not any(secret in body for secret in secrets), tried
            assert status >= 400 or b"<html" in body[:200].lower(), (tried, status)


def assert_api_is_named(client) -> dict:
    """Every endpoint of the app behind ``client`` has a name, names what it takes and gives (no
    ``param_N``, single letters, ``value_N`` or ordinals) and is in README's API table; its
    ``view_api`` is returned."""
    import re

    api = client.view_api(return_format="dict", print_info=False)
    assert not api["unnamed_endpoints"]
    unnamed = re.compile(r"^(param_\d+|value_\d+|\d+(st|nd|rd|th)|.)$")
    problems = []
    for endpoint, info in api["named_endpoints"].items():
        problems += [f"{endpoint} takes {p['parameter_name']!r}" for p in info["parameters"]
                     if unnamed.match(p["parameter_name"] or "")]
        problems += [f"{endpoint} gives {r['label']!r}" for r in info["returns"] if unnamed.match(r["label"] or "")]
    assert not problems, problems
    readme = (ROOT / "README.md").read_text()
    undocumented = [endpoint for endpoint in api["named_endpoints"] if f"`{endpoint}`" not in readme]
    assert not undocumented, f"endpoints missing from README's API table: {undocumented}"
    return api
