"""Two trees of the app, compared on one machine: start to first page and ``/segment`` latency.

    git worktree add /tmp/before <commit>
    python bench/compare_app.py /tmp/before .            # 8 rounds: each tree started in turn

Each round starts each tree's ``python app.py`` once, records the time to its first page, warms
``/segment`` up with 5 calls and times 40 more; rounds alternate the trees so that drift on a
shared machine falls on both. Prints the medians (nothing is written to BENCHMARKS.md: a
comparison belongs to the change it judges, quoted there with this command).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SEGDEMO_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from bench_app import local_client, segment_latencies, start_app  # noqa: E402
from common import machine  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="a checkout of the code before the change")
    parser.add_argument("after", type=Path, help="a checkout of the code after it")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args(argv)
    from PIL import Image

    from segdemo.data import shapes

    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    starts = {name: [] for name in trees}
    latencies = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        image = folder / "shapes.png"
        Image.fromarray(shapes.generate(1, 192, seed=1)[0][0]).save(image)
        for round_index in range(args.rounds):
            for name, root in trees.items():
                process, url, seconds = start_app(folder / f"{name}-{round_index}", root=root)
                starts[name].append(seconds)
                client = local_client(url)
                segment_latencies(client, image, 5)
                latencies[name] += segment_latencies(client, image, 40)
                process.terminate()
                process.wait()
    print(machine())
    for name in trees:
        times = latencies[name]
        print(f"{name}: first page {statistics.median(starts[name]):.2f} s "
              f"({', '.join(f'{s:.2f}' for s in starts[name])}); /segment median {1e3 * statistics.median(times):.0f} ms, "
              f"p95 {1e3 * float(np.percentile(times, 95)):.0f} ms ({len(times)} calls)")


if __name__ == "__main__":
    main()
