"""Rewrite the shipped-checkpoints table in README.md from the checkpoints' own metadata.

    python train/update_readme.py
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from segdemo import checkpoints  # noqa: E402
from segdemo.models import count_parameters  # noqa: E402

START, END = "<!-- checkpoints:start -->", "<!-- checkpoints:end -->"


def row(path: Path) -> str:
    payload = checkpoints.read(path)
    meta = payload["meta"]
    model = checkpoints.build_model(meta, payload["state_dict"])
    metrics = meta.get("metrics") or {}
    fresh = meta.get("evaluation") or {}
    fresh_text = "<br>".join(f"{name.replace('fresh shapes ', '')}: {values['mean_dice']:.4f}"
                             for name, values in fresh.items())
    dice = ", ".join(f"{d:.3f}" for d in metrics.get("dice", []))
    return (f"| `{path.stem}` | {meta['model']['name']} {meta['model'].get('options') or ''} | "
            f"{count_parameters(model) / 1e6:.2f} M | {path.stat().st_size / 2**20:.1f} MB | "
            f"{meta.get('steps')} steps, {meta.get('train_seconds', 0) / 60:.0f} min | "
            f"{metrics.get('mean_dice', float('nan')):.4f} ({dice}) | {fresh_text} | `train/{path.stem}.json` |")


def main():
    rows = [row(path) for path in sorted((ROOT / "checkpoints").glob("*.pt"))]
    table = "\n".join([
        START,
        "| file | model | parameters | size | training (2 CPU cores) | validation mean Dice (per class) "
        "| fresh shapes mean Dice (size, seed, 200 images) | recipe |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        END,
    ])
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: table, text, flags=re.S)
    else:
        text = text.replace("CHECKPOINT_TABLE", table)
    readme.write_text(text)
    print(table)


if __name__ == "__main__":
    main()
