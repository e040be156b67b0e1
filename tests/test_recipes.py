"""Every recipe in train/ is a valid configuration; the DRIVE and VOC ones run on fake datasets."""

import json
from pathlib import Path

import pytest

from fakes import write_drive, write_voc, zip_tree
from segdemo.engine import TrainConfig, Trainer, preset
from segdemo.train import build_parser, config_from_args

RECIPES = sorted((Path(__file__).resolve().parent.parent / "train").glob("*.json"))


def test_there_is_a_recipe_per_shipped_checkpoint():
    shipped = {p.stem for p in (Path(__file__).resolve().parent.parent / "checkpoints").glob("*.pt")}
    assert shipped and shipped <= {r.stem for r in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipes_parse_through_the_cli(recipe):
    config = config_from_args(build_parser().parse_args(["--config", str(recipe), "--out", "x"]))
    raw = json.loads(recipe.read_text())
    assert config.model == raw["model"] and config.epochs == raw["epochs"]


@pytest.mark.parametrize("name, writer", [("unet_drive", write_drive), ("unet_voc", write_voc)])
def test_file_dataset_recipes_train_on_fakes(tmp_path, name, writer):
    root = writer(tmp_path / name)
    archive = zip_tree(root, tmp_path / f"{name}.zip", top="dataset")
    recipe = json.loads((Path(__file__).resolve().parent.parent / "train" / f"{name}.json").read_text())
    recipe.pop("comment")
    kind = recipe["data"].split(":")[0]
    config = TrainConfig.from_dict(recipe).replace(
        data=f"{kind}:{archive}", epochs=1, steps_per_epoch=2, batch_size=2, crop_size=48, val_images=2,
        model_options={**recipe["model_options"], "base_channels": 4}, out=str(tmp_path / "run"))
    result = Trainer(config).run()
    assert result.reason == "finished" and Path(result.best_path).exists()


def test_a_recipe_for_another_model_or_data_over_a_preset_starts_from_its_own_defaults(tmp_path):
    recipe = tmp_path / "u2netp.json"
    recipe.write_text(json.dumps({"model": "u2netp", "epochs": 1}))
    config = config_from_args(build_parser().parse_args(["--preset", "live", "--config", str(recipe)]))
    assert config.model == "u2netp" and config.model_options == {} and config.crop_size == 80  # the preset's crops
    drive = tmp_path / "drive.json"
    drive.write_text(json.dumps({"data": "drive:DRIVE.zip"}))
    config = config_from_args(build_parser().parse_args(["--preset", "live", "--config", str(drive)]))
    assert config.data == "drive:DRIVE.zip" and config.data_options == {}
    assert config.model_options == preset("live").model_options  # the same model keeps the preset's widths
