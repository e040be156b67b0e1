#!/usr/bin/env bash
# Reproduce every checkpoint shipped in checkpoints/ from its recipe, on a 2-core CPU.
# Each run: train (fixed steps, seeded), export (no optimizer state, titled), evaluate on
# fresh shapes it never saw (other seeds, and 256×256 images) and record that in the file.
set -euo pipefail
cd "$(dirname "$0")/.."
build() {  # name, title, [export options]
  local name=$1 title=$2; shift 2
  python -m segdemo.train --config "train/$name.json" --out "runs/$name" --quiet
  python -m segdemo.export "runs/$name/best.pt" "checkpoints/$name.pt" --title "$title" "$@"
  python -m segdemo.evaluate "checkpoints/$name.pt" --image-size 192 --image-size 256 --seed 7 --seed 8 --record
}
build unet_shapes "U-Net 8 residual (shapes)"
build fcn_resnet18_shapes "FCN-32s ResNet-18 (shapes)" --half
build u2netp_shapes "U2-NetP (shapes)"
python train/update_readme.py
