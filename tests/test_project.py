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
