import cv2
import numpy as np
import pytest
import torch

from segdemo.data import open_source, shapes


def test_generate_shapes_dtypes_and_values():
    images, masks = shapes.generate(8, seed=1)
    assert images.shape == (8, 192, 192, 3) and images.dtype == np.uint8
    assert masks.shape == (8, 6, 192, 192) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}
    assert set(np.unique(images)) <= {0, 255}
    # white on black, the same in all three channels
    assert (images[..., 0] == images[..., 1]).all() and (images[..., 0] == images[..., 2]).all()
    # every class is present in every image
    assert (masks.reshape(8, 6, -1).sum(axis=2) > 0).all()


@pytest.mark.parametrize("size", [(8, 8), (64, 100), (257, 131), 50])
def test_any_size(size):
    images, masks = shapes.generate(3, size=size, seed=0)
    height, width = (size, size) if isinstance(size, int) else size
    assert images.shape == (3, height, width, 3)
    assert masks.shape == (3, 6, height, width)


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = shapes.generate(4, seed=123)
    b = shapes.generate(4, seed=123)
    c = shapes.generate(4, seed=124)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_sizes_are_a_fraction_of_the_side():
    _, masks = shapes.generate(200, size=192, seed=3)
    # the filled square's side is about 0.8 × (6–12 %) of 192 px: roughly 9–18 px
    area = masks[:, shapes.CLASSES.index("filled square")].reshape(200, -1).sum(axis=1)
    side = np.sqrt(area[area > 0])
    assert 5 <= np.median(side) <= 20


def test_input_shows_the_targets_except_the_mesh():
    images, masks = shapes.generate(16, seed=5)
    visible = images[..., 0] > 0
    for name in ("filled square", "disk", "triangle", "ring", "plus"):
        target = masks[:, shapes.CLASSES.index(name)].astype(bool)
        assert visible[target].all(), name


def _fill_holes(mask):
    mask = mask.astype(np.uint8)
    flood = np.pad(mask, 1).copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    return mask.astype(bool) | holes


def test_ring_is_hollow_and_disk_is_filled():
    _, masks = shapes.generate(20, size=256, seed=7)
    ring = masks[:, shapes.CLASSES.index("ring")]
    disk = masks[:, shapes.CLASSES.index("disk")]
    hollow = 0
    for index in range(20):
        filled = _fill_holes(ring[index])
        if filled.sum() > ring[index].sum():
            hollow += 1
        assert _fill_holes(disk[index]).sum() == disk[index].sum()
    assert hollow >= 18  # rings cut by the image edge may lose their hole


def test_mesh_target_is_the_whole_square_but_the_input_is_dotted():
    images, masks = shapes.generate(30, seed=11)
    mesh = masks[:, shapes.CLASSES.index("mesh square")].astype(bool)
    others = masks[:, [i for i, n in enumerate(shapes.CLASSES) if n != "mesh square"]].any(axis=1)
    only_mesh = mesh & ~others
    visible = images[..., 0] > 0
    # the target is a filled box …
    for index in range(30):
        rows, cols = np.nonzero(mesh[index])
        box = np.zeros_like(mesh[index])
        box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        assert np.array_equal(box, mesh[index])
    # … but only about a quarter of it (odd rows × odd columns) is drawn in the input
    density = visible[only_mesh].mean()
    assert 0.15 < density < 0.35
    rows = np.nonzero(only_mesh & visible)[1]
    assert (rows % 2 == 1).all()


def test_channel_order_and_colors():
    assert shapes.CLASSES == ("filled square", "disk", "triangle", "ring", "mesh square", "plus")
    assert shapes.COLORS[0] == (201, 58, 64) and shapes.COLORS[5] == (160, 194, 56)
    assert shapes.INFO.task == "multilabel" and shapes.INFO.num_classes == 6


def test_triangle_is_a_lower_triangle():
    _, masks = shapes.generate(10, size=300, seed=2)
    for tri in masks[:, shapes.CLASSES.index("triangle")]:
        rows, cols = np.nonzero(tri)
        top, left = rows.min(), cols.min()
        assert (rows - top >= cols - left).all()


def test_training_stream_is_fresh_every_epoch_and_validation_is_fixed():
    source = open_source("shapes")
    train = source.train_dataset()
    first = train[0][1].clone()
    train.set_epoch(1)
    assert not torch.equal(first, train[0][1])
    train.set_epoch(0)
    assert torch.equal(first, train[0][1])
    val_a, val_b = source.val_dataset(), source.val_dataset()
    assert len(val_a) == 200
    assert torch.equal(val_a[17][0], val_b[17][0])
    image, target = val_a[3]
    assert image.shape == (3, 192, 192) and image.dtype == torch.uint8
    assert target.shape == (6, 192, 192) and target.dtype == torch.uint8


def test_random_crops_keep_the_scale():
    source = open_source("shapes")
    train = source.train_dataset(crop_size=96)
    image, target = train[4]
    assert image.shape == (3, 96, 96) and target.shape == (6, 96, 96)
    full = source.train_dataset()
    # a crop is a window of the full-size image of the same item
    full_image = full[4][0].numpy()
    crop = image.numpy()
    windows = np.lib.stride_tricks.sliding_window_view(full_image, (96, 96), axis=(1, 2))
    assert (windows == crop[:, None, None]).all(axis=(0, 3, 4)).any()
