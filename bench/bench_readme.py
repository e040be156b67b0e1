"""Every command of README.md's "Training from the command line" block, run as a new user would:
its wall time and, for a training run, the images/s and the validation Dice it ended with; and its
torchrun line against the same run in one process.

    python bench/bench_readme.py
    python bench/bench_readme.py --ddp-only    # just the torchrun line and its one-process twin

The commands run one after the other in a scratch folder that holds what they name: the repository's
``train/`` and ``checkpoints/``, a ``DRIVE.zip`` stand-in of the real dataset's size (20 + 20 images
of 565×584 with straight "vessels": its times are DRIVE's, its Dice means nothing) and ``my_images/``
(20 shapes images of 192×192). Writes two sections of BENCHMARKS.md: ``readme`` (every line) and
``ddp`` (the torchrun line and the line that runs the same training in one process). Run it on a
quiet machine: the timings are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import ROOT, write_section  # noqa: E402
from segdemo.engine.config import CLI_PRESET, PRESETS  # noqa: E402
from fakes import write_drive, zip_tree  # noqa: E402


def readme_commands() -> list[str]:
    """The lines of the README's command-line block, without their comments."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Training from the command line"):]
    block = re.search(r"```bash\n(.*?)\n```", section, re.S).group(1)
    return [shlex.join(shlex.split(line, comments=True)) for line in block.splitlines() if line.strip()]


def training_options(line: str) -> list[str] | None:
    """What a training line asks of ``segdemo.train``, its ``--out`` left out (None: no training)."""
    words = shlex.split(line)
    if "segdemo.train" not in words:
        return None
    options = words[words.index("segdemo.train") + 1:]
    out = options.index("--out")
    return options[:out] + options[out + 2:]


def scratch_folder(folder: Path) -> None:
    """What the commands name, in ``folder``."""
    from PIL import Image

    from segdemo.data import shapes

    for name in ("train", "checkpoints"):
        (folder / name).symlink_to(ROOT / name)
    drive = write_drive(folder / "drive", train_numbers=range(21, 41), test_numbers=range(1, 21), size=(584, 565))
    zip_tree(drive, folder / "DRIVE.zip", top="DRIVE")
    (folder / "my_images").mkdir()
    for index, image in enumerate(shapes.generate(20, 192, seed=5)[0]):
        Image.fromarray(image).save(folder / "my_images" / f"shapes{index:02d}.png")


def run(line: str, folder: Path) -> dict:
    """Run one README line in ``folder``: its wall time, the load before it, and a training run's log."""
    words = shlex.split(line)
    words[0] = str(Path(sys.executable).with_name("torchrun")) if words[0] == "torchrun" else sys.executable
    load = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(words, check=True, cwd=folder, env={**os.environ, "PYTHONPATH": str(ROOT)},
                   stdout=subprocess.DEVNULL)
    record = {"line": line, "wall": time.perf_counter() - start, "load": load, "log": None}
    if training_options(line) is not None:
        log_file = folder / words[words.index("--out") + 1] / "log.jsonl"
        record["log"] = [json.loads(entry) for entry in log_file.read_text().splitlines()]
    return record


def summary(record: dict) -> dict:
    """A table row: what a new user sees of one line."""
    row = {"command": f"`{record['line']}`", "wall time": f"{record['wall']:.0f} s"}
    log = record["log"]
    if log is None:
        return {**row, "steps": "–", "images/s": "–", "final val mean Dice": "–", "load before": f"{record['load']:.1f}"}
    final = [entry for entry in log if entry["type"] == "epoch"][-1]["val"]
    return {**row, "steps": log[-1]["steps"], "images/s": f"{log[-1]['images_per_second']:.1f}",
            "final val mean Dice": f"{final['mean_dice']:.3f}", "load before": f"{record['load']:.1f}"}


def ddp_pair(records: list[dict]) -> tuple[dict, dict]:
    """The one-process line and the torchrun line that trains the same run."""
    ddp = next(r for r in records if r["line"].startswith("torchrun"))
    return next(r for r in records if r is not ddp and training_options(r["line"]) == training_options(ddp["line"])), ddp


def precision_of(record: dict) -> str:
    """The precision the run trained in: its trial's choice where it timed one, else what it started with."""
    chosen = next((entry for entry in record["log"] if entry["type"] == "precision"), None)
    return chosen["precision"] if chosen else record["log"][0]["precision"]


def ddp_rows(records: list[dict]) -> list[dict]:
    """The torchrun line and the one-process line that trains the same run, side by side."""
    one, ddp = ddp_pair(records)
    rows = []
    for name, record in (("one process", one), (f"torchrun, {ddp['log'][0]['world_size']} processes", ddp)):
        start, end = record["log"][0], record["log"][-1]
        final = [entry for entry in record["log"] if entry["type"] == "epoch"][-1]["val"]
        rows.append({"run": name, "steps per process": end["steps"], "images": f"{end['images']:,}",
                     "images/s (steps, all processes)": f"{end['images_per_second']:.1f}",
                     "wall time": f"{record['wall']:.0f} s", "final val mean Dice": f"{final['mean_dice']:.3f}",
                     "per class": " ".join(f"{dice:.2f}" for dice in final["dice"]), "precision": precision_of(record),
                     "load before": f"{record['load']:.1f}"})
    return rows


def ddp_notes(records: list[dict]) -> str:
    """What the torchrun line and its one-process twin show."""
    one, ddp = ddp_pair(records)
    speed = ddp["log"][-1]["images_per_second"] / one["log"][-1]["images_per_second"]
    steps = {"one": one["log"][-1]["steps"], "ddp": ddp["log"][-1]["steps"]}
    dice = {name: [e for e in r["log"] if e["type"] == "epoch"][-1]["val"]["mean_dice"]
            for name, r in (("one", one), ("ddp", ddp))}
    small = PRESETS[CLI_PRESET]
    crops = f"{small.crop_size}×{small.crop_size} crops, batch {small.batch_size}"
    why = ("Likely because this small model keeps two threads of one process busy only in part "
           f"(convolutions of 8 to 64 channels on {crops}; the shapes are generated on one thread), so one "
           "process per core does more; a wider model, whose convolutions fill both cores, would gain less. "
           if speed > 1.1 else "")
    return (f"`{ddp['line']}` against the same training in one process (`{one['line']}`), run one after the "
            f"other. Both train the CLI's default (the `small` preset: an 8-wide residual U-Net, 0.13 M "
            f"parameters, {crops} per process) on 4000 fresh shapes (the processes share each "
            f"epoch's 2000); images/s counts the training steps of all processes together (the validation on "
            f"200 whole 192×192 images after each epoch is not counted; the wall time includes it and the "
            f"start). The two processes (torchrun gives each one thread) trained {speed:.2f}× the images/s of one "
            f"process with two threads. {why}But each of their steps learns from both batches at once, so the "
            f"same images make half the optimizer steps ({steps['ddp']} against {steps['one']}) and the run ended "
            f"at validation Dice {dice['ddp']:.3f} against {dice['one']:.3f}. DistributedDataParallel is for "
            f"several GPUs or several machines, where each process has a device of its own. \"load before\": "
            f"the 1-minute load average as each run began (it trails: a high value can be what ran just before).")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ddp-only", action="store_true", help="run only the torchrun line and its one-process twin")
    args = parser.parse_args()
    lines = readme_commands()
    if args.ddp_only:
        ddp = next(line for line in lines if line.startswith("torchrun"))
        lines = [line for line in lines if training_options(line) == training_options(ddp)]
    records = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        scratch_folder(folder)
        for line in lines:
            records.append(run(line, folder))
            print(summary(records[-1]), flush=True)
    command = f"python bench/bench_readme.py{' --ddp-only' if args.ddp_only else ''}"
    if not args.ddp_only:
        write_section("readme", "README.md's command-line block, line by line", [summary(r) for r in records],
                      command=command, notes=(
            "Each line as README.md shows it, one after the other in a scratch folder (see "
            "`bench/bench_readme.py`); the wall time includes starting Python and the validations. DRIVE.zip "
            "is a stand-in of the real dataset's size, so its time is DRIVE's and its Dice means nothing. "
            "images/s: the training steps only (validation not counted), all processes together. \"load "
            "before\" is the 1-minute load average as each line began."))
    write_section("ddp", "DistributedDataParallel on one 2-core machine: README.md's torchrun line", ddp_rows(records),
                  command=command, notes=ddp_notes(records))


if __name__ == "__main__":
    main()
