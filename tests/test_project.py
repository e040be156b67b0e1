"""The project's promises about itself: set-up commands, Spaces metadata, shipped checkpoints."""

import json
import re
from pathlib import Path

import pytest

from segdemo import checkpoints

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_gives_exactly_two_setup_commands_and_ci_runs_the_test_one():
    setup = README[README.index("## Run it"):README.index("## What is in the app")]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, re.S)
    assert len(commands) == 2
    assert "python app.py" in commands[0] and "requirements.txt" in commands[0]
    assert "pytest" in commands[1] and "requirements-dev.txt" in commands[1] and "chromium" in commands[1]
    assert "README.md" in (ROOT / ".ci" / "run").read_text()


def test_spaces_front_matter_matches_requirements():
    front = README.split("---")[1]
    assert re.search(r"^sdk: gradio$", front, re.M) and re.search(r"^app_file: app.py$", front, re.M)
    version = re.search(r"^sdk_version: (\S+)$", front, re.M).group(1)
    requirements = (ROOT / "requirements.txt").read_text()
    assert f"gradio=={version}" in requirements
    assert "torch==2.14.1" in requirements and "torchvision==0.29.1" in requirements


@pytest.mark.parametrize("name", ["unet_shapes", "fcn_resnet18_shapes", "u2netp_shapes"])
def test_shipped_checkpoints_describe_themselves_and_are_in_the_readme(name):
    path = ROOT / "checkpoints" / f"{name}.pt"
    payload = checkpoints.read(path)
    meta = payload["meta"]
    assert "train_state" not in payload
    assert meta["recipe"] and meta["data"]["spec"] == "shapes" and meta["metrics"]["mean_dice"] > 0
    assert meta.get("evaluation"), "evaluated on fresh data by train/build_checkpoints.sh"
    assert path.stat().st_size < 8 * 2**20, "a few MB at most: a git repository holds it"
    assert f"`{name}`" in README
    recipe = json.loads((ROOT / "train" / f"{name}.json").read_text())
    for key in ("model", "model_options", "epochs", "steps_per_epoch", "batch_size", "lr", "crop_size", "seed"):
        assert meta["recipe"][key] == recipe.get(key, meta["recipe"][key]), f"{name} was not made by its recipe: {key}"


def test_default_checkpoint_reaches_its_target():
    meta = checkpoints.read(ROOT / "checkpoints" / "unet_shapes.pt")["meta"]
    fresh = [v["mean_dice"] for k, v in meta["evaluation"].items() if "192x192" in k]
    assert fresh and min(fresh) >= 0.97


def test_every_limit_and_quota_is_documented_with_its_setting():
    """Each field of segdemo.limits.Limits and workspaces.Quotas is set by SEGDEMO_<NAME>: the README
    names every one, so an operator can find them (a new limit without its line fails here)."""
    import dataclasses

    from segdemo.limits import Limits
    from segdemo.workspaces import Quotas

    missing = [f"SEGDEMO_{field.name.upper()}" for cls in (Limits, Quotas) for field in dataclasses.fields(cls)
               if f"SEGDEMO_{field.name.upper()}" not in README]
    assert not missing, f"README.md does not name {missing}"


# Every training command the documentation shows, wherever it is shown (--help prints train.py's).
TRAINING_DOCS = {name: (ROOT / name).read_text() for name in ("README.md", "train/README.md", "segdemo/train.py")}
TRAINING_LINES = [(name, line.strip()) for name, text in TRAINING_DOCS.items() for line in text.splitlines()
                  if line.strip().startswith(("python -m segdemo.train", "torchrun")) and "segdemo.train" in line]


@pytest.mark.parametrize("name, line", TRAINING_LINES,
                         ids=[f"{name}:{line.split('--out')[0][:70]}" for name, line in TRAINING_LINES])
def test_every_documented_training_command_is_a_short_run_of_a_small_model(name, line, monkeypatch):
    """Each parses with the CLI's own parser, trains a model under 2 M parameters (unless it names a
    classic-width preset: 7.8 M or 31 M) and is bounded: a time limit of at most 5 minutes, or at most
    10,000 training images (a few minutes for such a model on 2 CPU cores: BENCHMARKS.md)."""
    import shlex

    from segdemo.data import open_source, parse_spec
    from segdemo.engine.config import CLASSIC_PRESETS
    from segdemo.models import count_parameters, skeleton
    from segdemo.train import build_parser, config_from_args

    monkeypatch.chdir(ROOT)  # recipes are named relative to the repository
    words = shlex.split(line, comments=True)
    config = config_from_args(build_parser().parse_args(words[words.index("segdemo.train") + 1:]))
    if "--preset" not in words or words[words.index("--preset") + 1] not in CLASSIC_PRESETS:
        assert count_parameters(skeleton(config.model, 3, 6, **config.model_options)) < 2_000_000, line
    processes = int(words[words.index("--nproc_per_node") + 1]) if words[0] == "torchrun" else 1
    if config.steps_per_epoch:
        images = config.epochs * config.steps_per_epoch * config.batch_size * processes
    elif parse_spec(config.data)[0] == "drive":  # the dataset is always the same 20 training images
        images = config.epochs * 20
    else:  # an epoch is one pass over the data (the processes share it): known here for generated shapes
        assert parse_spec(config.data)[0] == "shapes", f"{line}: give --steps-per-epoch, the length is the data's"
        images = config.epochs * open_source(config.data, **config.data_options).train_length
    assert (config.max_seconds or 1e9) <= 300 or images <= 10_000, f"{line}: {images} training images"
