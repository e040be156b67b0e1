"""The annotation store and the painting ↔ label conversions (library level)."""


import numpy as np
import pytest

from fakes import zip_with
from segdemo.annotations import CLASS_PRESETS, DatasetStore, parse_class_lines
from segdemo.data import open_source
from segdemo.errors import AnnotationError, ArchiveError, UserError
from segdemo.filenames import check_name, safe_name
from segdemo.labels import clean_labels
from segdemo.painting import layer_from_labels, strokes_from_layers


@pytest.fixture
def store(tmp_path):
    return DatasetStore(tmp_path / "datasets")


def painted(shape=(40, 50)):
    image = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[5:15, 5:20] = 1
    labels[20:35, 25:45] = 2
    return image, labels


def test_round_trip_is_exact(store):
    store.create("two", parse_class_lines("background\nroad #ff0000\ntree #00ff00"))
    image, labels = painted()
    store.save("two", "first", image, labels)
    loaded_image, loaded_labels = store.load("two", "first")
    assert np.array_equal(loaded_image, image) and np.array_equal(loaded_labels, labels)
    source = open_source(f"folder:{store.dataset_path('two')}")
    assert source.info.classes == ("background", "road", "tree")


def test_resaving_keeps_the_previous_version(store):
    store.create("d", CLASS_PRESETS["shapes"])
    image, labels = painted()
    store.save("d", "x", image, labels)
    changed = labels.copy()
    changed[0:3, 0:3] = 4
    result = store.save("d", "x", image, changed)
    assert result["replaced"]
    assert np.array_equal(store.load("d", "x")[1], changed)
    history = store.history("d")
    assert any(name.endswith("replaced-mask.png") for name in history)
    store.delete("d", "x")
    assert store.items("d") == [] and any("deleted" in name for name in store.history("d"))


@pytest.mark.parametrize("name", ["../evil", "/abs", ".hidden", "a/b", "", "x" * 80, "..", "a\\b", "C:evil"])
def test_hostile_names_are_refused(store, name):
    with pytest.raises(UserError, match="not allowed"):
        check_name(name)
    with pytest.raises(UserError):
        store.create(name, CLASS_PRESETS["shapes"])
    assert not store.root.exists() or not any(store.root.iterdir())  # nothing written
    assert check_name(safe_name(name, "fallback")) == safe_name(name, "fallback")  # one rule: made names pass it


def test_export_and_reimport_give_identical_files(store, tmp_path):
    store.create("src", CLASS_PRESETS["DRIVE vessels"])
    for index in range(3):
        image, labels = painted()
        store.save("src", f"item-{index}", image, np.minimum(labels, 1))
    exported = store.export_zip("src", tmp_path / "src.zip")
    store.import_zip(exported, "copy")
    for original, copy in zip(store.items("src"), store.items("copy")):
        assert original.name == copy.name
        assert original.image.read_bytes() == copy.image.read_bytes()
        assert original.mask.read_bytes() == copy.mask.read_bytes()
    voc = store.export_voc("src", tmp_path / "voc.zip")
    source = open_source(f"voc:{voc}")
    assert len(source.train_items) + len(source.val_items) == 3


def test_import_refuses_bad_zips_and_writes_nothing(store, tmp_path):
    classes = ("classes.json", '{"classes": ["background", "a"]}')
    hostile = zip_with(tmp_path / "hostile.zip", [classes, ("../../escape.png", b"x")])
    with pytest.raises(ArchiveError, match="unsafe"):
        store.import_zip(hostile, "bad")
    missing = zip_with(tmp_path / "missing.zip", [classes, ("images/a.png", b"x")])
    with pytest.raises(ArchiveError, match="no image in images/ with a mask"):
        store.import_zip(missing, "bad")
    assert store.datasets() == []


def test_layers_map_back_to_exact_classes_even_with_antialiasing():
    colors = CLASS_PRESETS["shapes"].colors
    labels = np.zeros((20, 20), dtype=np.uint8)
    labels[2:8, 2:8] = 1
    labels[10:18, 10:18] = 3
    layer = layer_from_labels(labels, colors)
    # anti-aliased stroke edge: a blend of two class colors, half transparent
    layer[9, 9, :3] = (np.asarray(colors[1]) * 0.6 + np.asarray(colors[3]) * 0.4).astype(np.uint8)
    layer[9, 9, 3] = 200
    layer[0, 0] = (*colors[2], 90)  # faint: not painted
    painted, back = strokes_from_layers([layer], colors, (20, 20))
    expected = labels > 0
    expected[9, 9] = True                      # the edge pixel is painted, the faint one is not
    assert np.array_equal(painted, expected)
    assert np.array_equal(back[labels > 0], labels[labels > 0])
    assert back[9, 9] in (1, 3) and back[0, 0] == 0
    assert set(np.unique(back)) <= {0, 1, 3}


def test_strokes_say_where_and_which_class_the_background_color_included():
    colors = CLASS_PRESETS["shapes"].colors
    first = np.zeros((8, 8, 4), np.uint8)
    first[0:4, 0:4] = (*colors[2], 255)
    second = np.zeros((8, 8, 4), np.uint8)
    second[2:6, 2:6] = (*colors[0], 255)     # the background's color, painted over the first stroke
    second[7, 7] = (*colors[0], 100)         # faint: not painted
    painted, classes = strokes_from_layers([first, None, second], colors, (8, 8, 3))
    expected = np.zeros((8, 8), bool)
    expected[0:4, 0:4] = expected[2:6, 2:6] = True
    assert np.array_equal(painted, expected)
    assert (classes[0:2, 0:4] == 2).all() and (classes[2:6, 2:6] == 0).all() and classes[7, 7] == 0
    with pytest.raises(AnnotationError):
        strokes_from_layers([np.zeros((4, 8, 4), np.uint8)], colors, (8, 8))


def test_clean_up_removes_specks_and_fills_holes():
    labels = np.zeros((30, 30), dtype=np.uint8)
    labels[5:25, 5:25] = 2
    labels[12:14, 12:14] = 0     # a hole
    labels[1, 1] = 1             # a speck
    cleaned = clean_labels(labels, min_area=10)
    assert cleaned[1, 1] == 0 and (cleaned[12:14, 12:14] == 2).all()
    assert (cleaned[5:25, 5:25] == 2).all()


def test_class_lists():
    info = parse_class_lines("background\ncat #102030\ndog")
    assert info.classes == ("background", "cat", "dog") and info.colors[1] == (16, 32, 48)
    with pytest.raises(AnnotationError):
        parse_class_lines("only one")
    with pytest.raises(AnnotationError, match="share a color"):
        parse_class_lines("bg #000000\na #ff0000\nb #ff0000")
    with pytest.raises(AnnotationError, match="at most 64 characters"):
        parse_class_lines("background\n" + "x" * 10_000)
    with pytest.raises(AnnotationError, match="at most 255 classes"):
        parse_class_lines("\n".join(f"class {i}" for i in range(256)))


def test_removing_a_used_class_is_refused(store):
    store.create("d", CLASS_PRESETS["shapes"])
    image, labels = painted()
    store.save("d", "x", image, labels)
    with pytest.raises(AnnotationError, match="used"):
        store.set_classes("d", parse_class_lines("background\nfilled square"))
