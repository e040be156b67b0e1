import zipfile

import numpy as np
import pytest
import torch

from fakes import write_drive, write_folder, write_voc, zip_tree
from segdemo.data import FileTree, open_source, source_names, spec_for_archive
from segdemo.errors import ArchiveError
from segdemo.data.archive import extract_safely
from segdemo.errors import ImageError


def test_registry_lists_every_source():
    assert source_names() == ["drive", "folder", "shapes", "voc"]
    with pytest.raises(ValueError, match="expected one of"):
        open_source("imagenet:/x")
    with pytest.raises(ValueError, match="needs a path"):
        open_source("drive")


@pytest.mark.parametrize("writer, kind", [(write_drive, "drive"), (write_voc, "voc"), (write_folder, "folder")])
def test_an_upload_is_recognised_by_its_layout(tmp_path, writer, kind):
    archive = zip_tree(writer(tmp_path / kind), tmp_path / f"{kind}.zip", top="my dataset")
    spec = spec_for_archive(str(archive))
    assert spec == f"{kind}:{archive}" and open_source(spec).info.num_classes >= 1


def test_an_upload_of_no_known_layout_is_refused_naming_them(tmp_path):
    with zipfile.ZipFile(tmp_path / "notes.zip", "w") as archive:
        archive.writestr("notes/readme.txt", "hello")
    with pytest.raises(ArchiveError, match="none of the known layouts: folder .*voc .*drive"):
        spec_for_archive(str(tmp_path / "notes.zip"))


@pytest.fixture(params=["folder", "zip", "zip-with-top-folder"])
def packed(request, tmp_path):
    """Turn a written dataset folder into the form under test."""
    def pack(folder):
        if request.param == "folder":
            return folder
        top = "dataset" if request.param == "zip-with-top-folder" else None
        return zip_tree(folder, tmp_path / "dataset.zip", top=top)
    return pack


def test_drive(packed, tmp_path):
    path = packed(write_drive(tmp_path / "DRIVE"))
    source = open_source(f"drive:{path}")
    assert source.info.task == "binary" and source.info.classes == ("vessel",)
    train, val = source.train_dataset(crop_size=32), source.val_dataset()
    assert len(train) == 3 and len(val) == 2
    image, target = val[0]
    assert image.shape == (3, 60, 64) and image.dtype == torch.uint8
    assert target.shape == (1, 60, 64) and target.dtype == torch.uint8
    values = set(target.unique().tolist())
    assert values == {0, 1, 255}  # vessels, background, outside the field of view
    # the field of view is a disk: its corners are ignored, its center is not
    assert target[0, 0, 0] == 255 and target[0, 30, 32] != 255
    crop_image, crop_target = train[1]
    assert crop_image.shape == (3, 32, 32) and crop_target.shape == (1, 32, 32)


def test_drive_mask_of_the_wrong_size_names_both_sizes(tmp_path):
    from PIL import Image
    root = write_drive(tmp_path / "DRIVE")
    Image.new("P", (10, 12)).save(root / "training" / "1st_manual" / "21_manual1.gif")
    source = open_source(f"drive:{root}")
    with pytest.raises(ImageError, match=r"10×12.*64×60"):
        source.train_dataset()[0]


def test_voc(packed, tmp_path):
    path = packed(write_voc(tmp_path / "voc"))
    source = open_source(f"voc:{path}")
    assert source.info.task == "multiclass" and len(source.info.classes) == 21
    assert source.info.colors[15] == (192, 128, 128)  # person
    val = source.val_dataset()
    assert len(val) == 2 and len(source.train_dataset()) == 3
    image, target = val[0]
    assert target.dtype == torch.uint8 and target.ndim == 2
    assert target.shape == image.shape[1:]
    values = set(target.unique().tolist())
    assert 0 in values and 255 in values and len(values) == 3  # background, one class, borders
    crop_image, crop_target = source.train_dataset(crop_size=80)[0]
    assert crop_image.shape == (3, 80, 80) and crop_target.shape == (80, 80)
    # padding added by the crop is ignored, never background
    assert (crop_target == 255).any()


def test_folder(packed, tmp_path):
    path = packed(write_folder(tmp_path / "mine", count=6))
    source = open_source(f"folder:{path}")
    assert source.info.classes == ("background", "square", "disk")
    assert len(source.val_dataset()) == 2 and len(source.train_dataset()) == 4
    image, target = source.val_dataset()[1]
    assert image.shape == (3, 40, 48) and target.shape == (40, 48)
    assert set(target.unique().tolist()) == {0, 1, 2}


def test_a_dataset_missing_its_masks_is_refused(tmp_path):
    root = write_folder(tmp_path / "mine")
    for mask in (root / "masks").iterdir():
        mask.unlink()
    with pytest.raises(ArchiveError, match="no image in images/ with a mask"):
        open_source(f"folder:{root}")
    with pytest.raises(ArchiveError, match="layout"):
        open_source(f"voc:{root}")


def test_folder_mask_with_unknown_classes_is_refused(tmp_path):
    from PIL import Image
    root = write_folder(tmp_path / "mine")
    Image.fromarray(np.full((40, 48), 9, dtype=np.uint8)).save(root / "masks" / "sample_0.png")
    with pytest.raises(ImageError, match="class values"):
        open_source(f"folder:{root}").val_dataset()[0]


def _zip_with(tmp_path, entries):
    path = tmp_path / "hostile.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/etc/evil.txt", "C:/evil.txt"])
def test_zip_slip_is_refused_and_nothing_is_written(tmp_path, name):
    path = _zip_with(tmp_path, [("classes.json", "{}"), (name, "x")])
    with pytest.raises(ArchiveError, match="unsafe"):
        FileTree(path)
    target = tmp_path / "out"
    with pytest.raises(ArchiveError):
        extract_safely(path, target)
    assert not (tmp_path / "evil.txt").exists() and not target.exists()


def test_zip_bomb_is_refused(tmp_path):
    path = _zip_with(tmp_path, [("images/a.png", b"\0" * (64 * 2**20))])
    with pytest.raises(ArchiveError, match="zip bomb|limit"):
        FileTree(path)


def test_not_a_zip(tmp_path):
    path = tmp_path / "x.zip"
    path.write_bytes(b"hello")
    with pytest.raises(ArchiveError, match="readable .zip"):
        open_source(f"folder:{path}")


def test_joint_augmentation_never_interpolates_masks(tmp_path):
    source = open_source(f"voc:{write_voc(tmp_path / 'voc')}")
    train = source.train_dataset(crop_size=64)
    torch.manual_seed(0)
    for index in range(len(train)):
        _, target = train[index]
        # an interpolated mask would hold in-between values; a nearest-neighbour one only these
        original = set(np.unique(train.arrays(index)[1]).tolist())
        assert set(target.unique().tolist()) <= original
