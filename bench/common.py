"""Shared helpers for the benchmarks: timing, machine description, BENCHMARKS.md tables.

Each benchmark script writes one section of BENCHMARKS.md, between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->``, with the machine and the command that produced it above the table.
"""

from __future__ import annotations

import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from segdemo.runtime import core_count, synchronize  # noqa: E402,F401  (the benches time GPUs with it)
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def cpu_model() -> str:
    """The CPU's name and the vector extensions that decide precision here (the machines' CPUs
    change between sessions, and some report only "AMD EPYC"): e.g. "AMD EPYC, AVX-512 + bf16"."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    extensions = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
    if flags & {"avx512_bf16", "amx_bf16"}:
        extensions += " + bf16" + (" (AMX)" if "amx_bf16" in flags else "")
    return f"{name}, {extensions}" if extensions else name


def machine() -> str:
    """One line: cores, CPU model, Python, torch and (if any) GPU."""
    import torch

    gpu = ""
    if torch.cuda.is_available():
        gpu = f", GPU {torch.cuda.get_device_name(0)}"
    return (f"{core_count()} cores ({cpu_model()}), torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}{gpu}")


def median_time(function, *, repeats: int = 20, warmup: int = 3, min_seconds: float = 0.0) -> float:
    """Median wall time of ``function()`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        function()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        begin = time.perf_counter()
        function()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def command_line() -> str:
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(ROOT)
    except ValueError:
        pass
    return " ".join(["python", str(script), *sys.argv[1:]])


def markdown_table(rows: list[dict]) -> str:
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(str(row[h]) for h in headers) + " |")
    return "\n".join(lines)


def write_section(name: str, title: str, rows: list[dict], notes: str = "",
                  command: str | None = None, machine_line: str | None = None, path: Path | None = None) -> str:
    """Replace (or append) the section ``name`` of BENCHMARKS.md (or of ``path``: a dry run writes a
    copy) and return its text (``machine_line``: the machine as described before the bench pinned
    itself to some cores)."""
    path = path or BENCHMARKS_MD
    body = (f"<!-- bench:{name} -->\n### {title}\n\n"
            f"Machine: {machine_line or machine()}  \nCommand: `{command or command_line()}`  \n"
            f"Date: {time.strftime('%Y-%m-%d')}\n\n{markdown_table(rows)}\n"
            + (f"\n{notes.strip()}\n" if notes else "") + f"<!-- /bench:{name} -->")
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: body, text)
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    path.write_text(text)
    print(body)
    return body
