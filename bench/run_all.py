"""Run every benchmark and rewrite its table in BENCHMARKS.md.

    python bench/run_all.py            # everything (about 45 minutes on 2 cores; the GPU: bench/gpu_check.sh)
    python bench/run_all.py data models

Run on a quiet machine: the timings are wall-clock.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["data", "models", "training", "threads", "live", "app", "probes", "probe_steps", "load", "classroom", "large_images", "readme", "annotation"]


def main(argv):
    chosen = argv or ORDER
    for name in chosen:
        script = HERE / f"bench_{name}.py"
        print(f"== {script.name}", flush=True)
        subprocess.run([sys.executable, str(script)], check=True, cwd=HERE.parent)


if __name__ == "__main__":
    main(sys.argv[1:])
