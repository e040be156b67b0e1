"""Do probe frames slow the training steps around them, beyond their own time? (issue 15)

    python bench/bench_probe_steps.py [--blocks 14] [--precision bf16]

``bench_probes.py`` compares whole runs, with and without probes, in separate processes, and the
speed of runs of the same settings differs by up to 12 % between processes here. This bench
asks in one process: the live preset trains blocks of 50 steps, alternately plain and with a probe
frame (4 images predicted in eval mode, drawn, PNG) after every tenth step, and each block's steps/s
is taken with the frames' own time left out. Equal medians mean the frames cost only their own time,
which the run's probe budget (``segdemo.engine.probes.COST_SHARE``) bounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, write_section  # noqa: E402

from segdemo.engine import preset  # noqa: E402
from segdemo.engine.probes import Probes  # noqa: E402
from segdemo.engine.setup import Progress, build_setup  # noqa: E402
from segdemo.engine.steps import train_one_epoch  # noqa: E402

WARM_UP_BLOCKS = 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=14, help="blocks of 50 steps, alternately plain and probed")
    parser.add_argument("--precision", default="bf16", help="fp32 or bf16 (the trial's usual choice here)")
    args = parser.parse_args(argv)
    setup = build_setup(preset("live").replace(precision=args.precision, epochs=10_000, max_seconds=None))
    progress, probes, spent = Progress(), Probes(setup, 4), [0.0]

    def every_tenth(progress, emit) -> None:
        if progress.step % 10 == 0:
            spent[0] += probes.frame(progress).probe_seconds

    rates: dict[str, list[float]] = {"plain": [], "probed": []}
    for block in range(args.blocks):
        kind = "probed" if block % 2 else "plain"
        spent[0] = 0.0
        outcome = train_one_epoch(setup, progress, lambda event: None, lambda: None,
                                  every_tenth if kind == "probed" else None)
        progress.epoch += 1
        rate = len(outcome.losses) / (outcome.seconds - spent[0])
        print(f"block {block}: {kind}, {rate:.2f} steps/s, frames {spent[0]:.3f} s", flush=True)
        if block >= WARM_UP_BLOCKS:
            rates[kind].append(rate)
    plain, probed = statistics.median(rates["plain"]), statistics.median(rates["probed"])
    frame_ms = 1000 * spent[0] / 5
    rows = [{"what": f"live preset's steps/s, {args.precision}, blocks of 50 steps (median of {len(rates['plain'])} each)",
             "plain": f"{plain:.2f} (blocks: {', '.join(f'{r:.2f}' for r in rates['plain'])})",
             "a frame after every tenth step, its own time left out": f"{probed:.2f} ({100 * (probed / plain - 1):+.1f} %; "
                                                                       f"blocks: {', '.join(f'{r:.2f}' for r in rates['probed'])})",
             "one frame": f"{frame_ms:.0f} ms"}]
    print(write_section("probe-steps", "Watching it learn: do probe frames slow the steps beside them?", rows,
                        notes="One process, blocks alternated, the first two left out as warm-up; the "
                              "frames' own time is bounded by the run's probe budget (2.5 % of its "
                              "training time), which bench:probes measures from whole runs.",
                        command=" ".join(["python bench/bench_probe_steps.py", *(argv or sys.argv[1:])]),
                        machine_line=machine()))


if __name__ == "__main__":
    main()
