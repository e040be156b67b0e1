"""Train a segmentation model from the command line.

    python -m segdemo.train --data shapes --epochs 2 --out runs/one           # the small default run: 50 s
    python -m segdemo.train --preset live --max-seconds 120 --out runs/live   # the app's Train tab: 2 min
    python -m segdemo.train --config train/unet_shapes.json --epochs 5 --out runs/unet_shapes  # a recipe, cut: 80 s
    torchrun --nproc_per_node 2 -m segdemo.train --data shapes --epochs 2 --out runs/ddp  # the first, 2 processes: 40 s

(Times on 2 CPU cores: BENCHMARKS.md.) Without ``--preset`` or ``--config`` a run starts from the
``small`` preset: the live preset's 8-wide residual U-Net (0.13 M parameters), 96×96 crops of fresh
shapes, 4 epochs of 2000 images. ``--preset tutorial`` (7.8 M parameters) and ``--preset original``
(31 M) train the classic widths: hours on 2 CPU cores, minutes on a GPU. Every option is explained by
``--help``. The run writes ``best.pt``, ``last.pt`` and ``log.jsonl`` into ``--out``, and says at its
end how many images per second it trained (all processes together); ``--resume OUT/last.pt``
continues it.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import sys

from . import checkpoints, limits
from .data import parse_spec, source_entries
from .errors import OUT_OF_MEMORY, out_of_memory
from .engine.config import (CLASSIC_PRESETS, CLI_PRESET, OPTIMIZERS, PRESETS, SCHEDULES, TrainConfig,
                             configure, preset)
from .engine.events import CheckpointSaved, EpochDone, PrecisionChosen, RunEnded, RunStarted, StepDone
from .errors import UserError
from .loss_names import BOUNDARY, LOSS_LABELS, LOSS_NAMES, REGION_LOSSES
from .models import count_parameters, names, skeleton
from .models.unet import BLOCKS, UPSAMPLE_MODES
from .runtime import PRECISIONS
from .tasks import TASKS


def _value(text: str):
    """``KEY=VALUE`` values: Python literals where they parse (16, 0.5, True), else strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _pairs(items) -> dict:
    result = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        result[key.strip().replace("-", "_")] = _value(value)
    return result


def build_parser() -> argparse.ArgumentParser:
    defaults = PRESETS[CLI_PRESET]
    unet = defaults.model_options
    parser = argparse.ArgumentParser(
        prog="python -m segdemo.train", description=__doc__.split("\n\n")[0],
        epilog="examples:\n" + __doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_argument_group("what to train")
    what.add_argument("--config", metavar="JSON", help="a recipe file (train/*.json): TrainConfig fields (the "
                                                       "rest TrainConfig's defaults); other options override it")
    what.add_argument("--preset", choices=sorted(PRESETS),
                      help=f"start from a recipe; other options override it. Default {CLI_PRESET}: a "
                           f"{_size(defaults)} U-Net, {defaults.epochs} epochs, a few minutes on 2 CPU cores; "
                           "live: what the app's Train tab runs; "
                           + "; ".join(f"{name}: the {_size(PRESETS[name])} {PRESETS[name].title}"
                                       for name in CLASSIC_PRESETS)
                           + " (the classic widths: hours on 2 CPU cores, minutes on a GPU)")
    what.add_argument("--model", choices=names(trainable=True), help=f"architecture (default {defaults.model})")
    what.add_argument("--base-channels", type=int,
                      help=f"unet: width of the first stage (default {unet['base_channels']}; the classic U-Net: 64)")
    what.add_argument("--depth", type=int, help=f"unet: number of poolings (default {unet['depth']})")
    what.add_argument("--upsample", choices=UPSAMPLE_MODES,
                      help=f"unet: decoder upsampling (default {unet.get('upsample', 'bilinear')})")
    what.add_argument("--norm", choices=["batch", "none"], help="unet: normalization")
    what.add_argument("--block", choices=list(BLOCKS),
                      help=f"unet: each stage's convolutions: plain, residual (ResUNet) or dense (DenseUNet) "
                           f"(default {unet.get('block', 'plain')})")
    what.add_argument("--skips", choices=["on", "off"], help="unet: the skip connections (default on)")
    what.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                      help="any other model option, e.g. skips=False (repeatable)")
    what.add_argument("--data", help="data source: " + ", ".join(
        f"{e.name}{':PATH' if e.needs_path else ''}" for e in source_entries()) + " (default shapes)")
    what.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                      help="data source option, e.g. val_length=500 for shapes (repeatable)")
    what.add_argument("--init-from", metavar="CHECKPOINT", help="fine-tune from this checkpoint's weights")
    what.add_argument("--title", help="name shown in the app's model pickers")
    how = parser.add_argument_group("how long and how")
    how.add_argument("--epochs", type=int, help=f"epochs (default {defaults.epochs})")
    how.add_argument("--steps-per-epoch", type=int, help="steps per epoch (default: one pass over the data)")
    how.add_argument("--max-seconds", type=float, help="stop, validate and save after this much wall time")
    how.add_argument("--batch-size", type=int, help=f"images per step (default {defaults.batch_size})")
    how.add_argument("--lr", type=float, help=f"peak learning rate (default {defaults.lr})")
    how.add_argument("--optimizer", choices=OPTIMIZERS, help=f"optimizer (default {defaults.optimizer})")
    how.add_argument("--weight-decay", type=float, help=f"weight decay (default {defaults.weight_decay})")
    how.add_argument("--momentum", type=float, help="SGD momentum")
    how.add_argument("--schedule", choices=SCHEDULES, help=f"learning-rate schedule (default {defaults.schedule})")
    how.add_argument("--grad-clip", type=float, help="clip the gradient norm (0: off)")
    how.add_argument("--loss", choices=LOSS_NAMES, metavar="LOSS", help=_loss_help())
    how.add_argument("--bce-weight", type=float, help="weight of BCE in BCE+Dice (the tutorials use 0.5)")
    how.add_argument("--crop-size", type=int, help=f"train on random crops of this size (evaluate on whole images; "
                                                   f"0: whole images; default {defaults.crop_size})")
    how.add_argument("--image-size", type=int, help="size of the generated shapes (shapes data only)")
    how.add_argument("--val-images", type=int, help="validate on this many images (default: all)")
    how.add_argument("--val-every", type=int, help="epochs between validations")
    how.add_argument("--probe-images", type=int, help="validation images predicted as the run trains, for the "
                     "app's timeline (the live preset: 4; 0: none)")
    machinery = parser.add_argument_group("machinery")
    machinery.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    machinery.add_argument("--precision", choices=PRECISIONS,
                           help="auto: fp32 or bf16 autocast, whichever trains faster here (timed on the first steps; "
                                "fp32 on CPUs without native bf16)")
    machinery.add_argument("--channels-last", choices=["on", "off"], help="memory format (default: on)")
    machinery.add_argument("--threads", type=int, help="torch CPU threads")
    machinery.add_argument("--seed", type=int, help="random seed")
    machinery.add_argument("--out", help="output folder for best.pt, last.pt and log.jsonl")
    machinery.add_argument("--resume", metavar="LAST_PT", help="continue a run from its last.pt (as the run was set "
                                                                    "up, unless other options say otherwise)")
    machinery.add_argument("--half", action="store_true", help="store checkpoint weights as float16")
    machinery.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _loss_help() -> str:
    """``--loss``'s help: each name, its label and the data it suits (from segdemo.loss_names)."""
    regions = "; ".join(f"{name} ({label}): {'any data' if tasks == TASKS else ', '.join(tasks)}"
                        for name, (label, tasks) in REGION_LOSSES.items())
    return (f"the loss: {LOSS_LABELS['auto']} (default); {regions}; any of them with {BOUNDARY} adds "
            "Kervadec's boundary term, weighted in over the run (e.g. dice+boundary)")


def _size(config: TrainConfig) -> str:
    """How many parameters ``config``'s model has for the shapes' six classes, e.g. "0.13 M-parameter"."""
    return f"{count_parameters(skeleton(config.model, 3, 6, **config.model_options)) / 1e6:.2g} M-parameter"


def _base(args: argparse.Namespace) -> TrainConfig:
    """What the flags change: the ``--preset``; TrainConfig's defaults under a ``--config`` recipe
    (recipes are written over them); the run being resumed, as its checkpoint recorded it, for a
    ``--resume`` alone; otherwise the small default run (:data:`~segdemo.engine.config.CLI_PRESET`)."""
    if args.preset:
        return preset(args.preset)
    if args.config:
        return TrainConfig()
    if args.resume:
        recipe = checkpoints.read(args.resume)["meta"].get("recipe")
        if recipe:
            return TrainConfig.from_dict(recipe)
    return preset(CLI_PRESET)


def written_over(base: TrainConfig, recipe: dict) -> TrainConfig:
    """``recipe``'s settings written over ``base`` (unknown keys are refused). A recipe that names
    another model, or another kind of data, than ``base`` starts from that one's own defaults, as
    :func:`~segdemo.engine.config.configure` does: ``--preset live`` with a recipe for
    ``u2netp`` must not hand the U-Net's widths to U²-Net."""
    settings = base.to_dict()
    if recipe.get("model", base.model) != base.model:
        settings["model_options"] = {}
    if parse_spec(recipe.get("data", base.data))[0] != parse_spec(base.data)[0]:
        settings["data_options"] = {}
    return TrainConfig.from_dict({**settings, **recipe})


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run the command line asks for: a preset, a recipe file, the run being resumed or the
    small default run, with the flags applied by :func:`segdemo.engine.config.configure` (as the
    Train tab's settings are)."""
    config = _base(args)
    if args.config:
        with open(args.config, encoding="utf-8") as file:
            recipe = json.load(file)
        recipe.pop("comment", None)
        config = written_over(config, recipe)
    direct = ["model", "data", "init_from", "title", "epochs", "steps_per_epoch", "max_seconds", "batch_size",
              "lr", "optimizer", "weight_decay", "momentum", "schedule", "loss", "bce_weight", "crop_size",
              "val_images", "val_every", "probe_images", "device", "precision", "threads", "seed", "out", "resume"]
    changes = {name: getattr(args, name) for name in direct if getattr(args, name) is not None}
    if args.grad_clip is not None:
        changes["grad_clip"] = args.grad_clip or None
    if args.channels_last is not None:
        changes["channels_last"] = args.channels_last == "on"
    if args.half:
        changes["half_checkpoint"] = True
    model_options = {name: getattr(args, name) for name in ("base_channels", "depth", "upsample", "norm", "block")
                     if getattr(args, name) is not None}
    if args.skips is not None:
        model_options["skips"] = args.skips == "on"
    model_options.update(_pairs(args.model_option))
    if "block" in model_options and "residual" not in model_options:
        # A recipe or checkpoint's "residual: True" is the older spelling of block="residual": a new block replaces it.
        config = config.replace(model_options={k: v for k, v in config.model_options.items() if k != "residual"})
    return configure(config, model_options=model_options, data_options=_pairs(args.data_option),
                     image_size=args.image_size, **changes)


class ProgressBar:
    """A tqdm progress bar fed by step events; epoch results are written above it."""

    def __init__(self):
        from tqdm import tqdm

        self.tqdm = tqdm
        self.bar = None
        self.processes = 1

    def _say(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def __call__(self, event) -> None:
        if isinstance(event, RunStarted):
            self.processes = event.world_size
            self.bar = self.tqdm(total=event.total_steps, initial=event.resumed_at_step, unit="step",
                                 dynamic_ncols=True, file=sys.stderr)
            self._say(f"{event.model} ({event.parameters:,} parameters) on {event.data['spec']}, "
                      f"{event.device}, {event.precision}{', channels_last' if event.channels_last else ''}")
        elif self.bar is None:
            return
        elif isinstance(event, StepDone):
            self.bar.n = event.step
            self.bar.set_postfix(loss=f"{event.loss:.4f}", dice=_number(event.dice), lr=f"{event.lr:.2e}",
                                 img_s=f"{event.images_per_second:.1f}", refresh=False)
            self.bar.refresh()
        elif isinstance(event, EpochDone):
            per_class = " ".join(_number(d) for d in event.val["dice"])
            self._say(f"epoch {event.epoch}: train loss {_number(event.train_loss, 4)}, val mean Dice "
                      f"{_number(event.val['mean_dice'], 4)} (per class {per_class}), {event.elapsed:.0f} s")
        elif isinstance(event, PrecisionChosen):
            timings = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in event.step_seconds.items())
            self._say(f"precision: {event.precision}, the faster here (a training step: {timings})")
        elif isinstance(event, CheckpointSaved) and event.which == "best":
            self._say(f"  saved {event.path}")
        elif isinstance(event, RunEnded):
            self._say(event.message)
            if event.images_per_second:
                together = f", {self.processes} processes together" if self.processes > 1 else ""
                self._say(f"trained on {event.images:,} images at {event.images_per_second:.1f} images/s{together} "
                          f"(steps only, validation not counted)")
            self.bar.close()


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv=None):
    """Entry point (``python -m segdemo.train`` / ``segdemo-train``); returns the TrainResult."""
    from .engine.loop import Trainer

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    limits.configure(public=False)  # SEGDEMO_MEMORY_SHARE and the other overrides hold here too
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except (UserError, argparse.ArgumentTypeError) as error:
        parser.error(str(error))
    listeners = [] if args.quiet else [ProgressBar()]
    try:
        result = Trainer(config, listeners).run()
    except UserError as error:  # data or a checkpoint that cannot train, found while setting up
        parser.exit(2, f"error: {error}\n")
    except (MemoryError, RuntimeError) as error:
        if not out_of_memory(error):
            raise
        logging.getLogger(__name__).debug("the run ran out of memory", exc_info=True)
        parser.exit(1, f"error: {OUT_OF_MEMORY} ({error})\n")
    if result.reason == "diverged":
        print(result.message, file=sys.stderr)
    return result


if __name__ == "__main__":
    outcome = main()
    sys.exit(1 if outcome.reason == "diverged" else 0)
