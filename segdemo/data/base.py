"""What every data source shares: its self-description and the registry that names sources.

A source is opened from a spec string (``shapes``, ``drive:PATH``, ``voc:PATH``, ``folder:PATH``)
by :func:`open_source`; the CLI's ``--data`` choices and the app's pickers are generated from the
same registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import ArchiveError, SettingsError
from ..image_files import MAX_PIXELS
from ..runtime import IMAGENET
from ..tasks import MAX_CLASS_NAME, MAX_LABELS, check_task
from .archive import FileTree


@dataclass(frozen=True)
class DatasetInfo:
    """How a source describes itself: name, task type, class names and display colors."""

    name: str
    task: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    def __post_init__(self):
        check_task(self.task)
        if len(self.classes) != len(self.colors):
            raise ValueError(f"{len(self.classes)} class names but {len(self.colors)} colors")
        if not self.classes:
            raise ValueError("a dataset needs at least one class")
        if len(self.classes) > MAX_LABELS:
            raise ValueError(too_many_classes(len(self.classes)))
        for name in self.classes:
            if not str(name).strip() or len(str(name)) > MAX_CLASS_NAME:
                raise ValueError(f"class names are 1 to {MAX_CLASS_NAME} characters; one is "
                                 f"{len(str(name))} characters long")

    @property
    def num_classes(self) -> int:
        """Number of model output channels."""
        return len(self.classes)

    def to_dict(self) -> dict:
        return {"name": self.name, "task": self.task, "classes": list(self.classes),
                "colors": [list(c) for c in self.colors]}

    @classmethod
    def from_dict(cls, data: dict) -> "DatasetInfo":
        return cls(name=str(data.get("name", "dataset")), task=str(data["task"]),
                   classes=tuple(str(c) for c in data["classes"]),
                   colors=tuple(tuple(int(v) for v in c) for c in data["colors"]))


# Reading one pair: PIL's decoded image and its array, the label map and the checks made on it, and
# the batch it is stacked into. Measured: 6 pairs of 8000×8000 (64 MP) trained and validated in
# 1.35 GB, of which about 0.2 GB was the model's.
DECODE_BYTES_PER_PIXEL = 18


def too_many_classes(count: int) -> str:
    """The refusal of ``count`` classes (more than :data:`~segdemo.tasks.MAX_LABELS`)."""
    return (f"{count} classes are more than segdemo handles: at most {MAX_LABELS} fit a label map "
            "(one byte per pixel, 255 marks ignored pixels)")


class DataSource:
    """A dataset with a training and a validation split.

    Subclasses implement :meth:`train_dataset` and :meth:`val_dataset`; both return map-style
    datasets of ``(image uint8 (3, H, W), target uint8)`` tensor pairs, the target laid out as
    :mod:`segdemo.tasks` describes. What a run will hold in memory is planned from
    :meth:`train_size`, :meth:`val_size` (known: validation is batched) and :meth:`held_bytes`
    before any image is read.
    """

    # Input normalization the models trained on this source use (segdemo.runtime): ImageNet's
    # statistics suit photos and pretrained trunks.
    normalization = IMAGENET

    def __init__(self, info: DatasetInfo):
        self.info = info

    def train_dataset(self, crop_size=None, seed: int | None = None):
        raise NotImplementedError

    def val_dataset(self):
        raise NotImplementedError

    def train_size(self, crop_size: int | None = None) -> tuple[int, int]:
        """The ``(H, W)`` of a training item with ``crop_size`` (None: the source's own crop)."""
        crop = crop_size or self.crop_size
        return (crop, crop)

    def val_size(self) -> tuple[int, int] | None:
        """The ``(H, W)`` of every validation item where it is known before any is read (None:
        it varies, or is only known once an image is decoded)."""
        return None

    def held_bytes(self) -> int:
        """At most how many bytes of images the source's datasets keep in memory (caches)."""
        return 0

    def decode_bytes(self) -> int:
        """At most how many bytes reading one item takes while it is decoded: a file's image is
        whole until it is cropped, and may be as large as :data:`~segdemo.image_files.MAX_PIXELS`."""
        return DECODE_BYTES_PER_PIXEL * MAX_PIXELS

    def describe(self) -> dict:
        """Metadata about the data, stored in checkpoints."""
        return {**self.info.to_dict(), "spec": getattr(self, "spec", self.info.name)}


@dataclass(frozen=True)
class SourceEntry:
    """A registered source. ``markers`` are paths (``"SegmentationClass/"``) whose presence in a
    folder or zip tells that it holds this source's layout."""

    name: str
    factory: Callable[..., DataSource]
    needs_path: bool
    help: str = field(default="")
    markers: tuple[str, ...] = ()


_SOURCES: dict[str, SourceEntry] = {}


def register_source(name: str, *, needs_path: bool, help: str = "", markers: tuple[str, ...] = ()):
    """Class decorator that registers a :class:`DataSource` under ``name``."""

    def decorate(factory):
        _SOURCES[name] = SourceEntry(name, factory, needs_path, help, tuple(markers))
        return factory

    return decorate


def source_names() -> list[str]:
    """Names of the registered data sources."""
    return sorted(_SOURCES)


def source_entries() -> list[SourceEntry]:
    return [_SOURCES[name] for name in source_names()]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"kind:PATH"`` (or ``"kind"``) and check the kind is registered."""
    kind, _, path = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in _SOURCES:
        raise SettingsError(f"unknown data source {kind!r}; expected one of "
                         + ", ".join(f"{e.name}{':PATH' if e.needs_path else ''}" for e in source_entries()))
    entry = _SOURCES[kind]
    if entry.needs_path and not path:
        raise SettingsError(f"the {kind} source needs a path: --data {kind}:PATH (a folder or a .zip)")
    return kind, path or None


def open_source(spec: str, **options) -> DataSource:
    """Open a data source from ``"shapes"``, ``"drive:PATH"``, ``"voc:PATH"`` or ``"folder:PATH"``."""
    import inspect

    kind, path = parse_spec(spec)
    factory = _SOURCES[kind].factory
    accepted = [name for name in inspect.signature(factory).parameters if name not in ("self", "path")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise SettingsError(f"the {kind} source has no option {', '.join(unknown)}; its options are: "
                         f"{', '.join(accepted) or 'none'}")
    source = factory(path, **options)
    source.spec = spec
    return source


def spec_for_archive(path: str) -> str:
    """The spec of a dataset folder or ``.zip`` by the layout inside it (``"voc:PATH"`` …).

    Sources are tried in the order they registered (:mod:`segdemo.data` registers its own format
    first). Raises :class:`~segdemo.errors.ArchiveError` when no known layout is found."""
    tree = FileTree(path)
    try:
        for entry in _SOURCES.values():
            if any(tree.find_prefix(marker) is not None for marker in entry.markers):
                return f"{entry.name}:{path}"
    finally:
        tree.close()
    raise ArchiveError("this zip is none of the known layouts: " + ", ".join(
        f"{entry.name} (with {' or '.join(entry.markers)})" for entry in _SOURCES.values() if entry.markers))


class PairsDataset:
    """A map-style dataset over a list of items that ``load(item)`` turns into numpy arrays.

    Like every dataset here it is a plain class with ``__len__`` and ``__getitem__`` (all that
    ``DataLoader`` needs), not a subclass of torch's ``Dataset``: listing and describing data
    sources must not import torch, which the app loads after serving its first page.

    Args:
        items: anything that identifies a pair (e.g. file names).
        load: ``item -> (image (H, W, 3) uint8, target uint8)``.
        transform: a joint ``torchvision.transforms.v2`` transform, or None.
        cache: keep decoded arrays in memory (small datasets such as DRIVE), at most
            :attr:`CACHE_BYTES` of them: a dataset of huge images is decoded again each time
            rather than held whole.
    """

    CACHE_BYTES = 128 * 2**20

    def __init__(self, items, load, transform=None, cache: bool = False):
        self.items = list(items)
        self.load = load
        self.transform = transform
        self._cache: dict[int, tuple] | None = {} if cache else None
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.items)

    def arrays(self, index: int):
        """The untransformed ``(image, target)`` numpy pair of item ``index``."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        pair = self.load(self.items[index])
        size = sum(array.nbytes for array in pair)
        if self._cache is not None and self._cached_bytes + size <= self.CACHE_BYTES:
            self._cache[index] = pair
            self._cached_bytes += size
        return pair

    def __getitem__(self, index: int):
        from .transforms import plain, to_pair

        image, target = self.arrays(index)
        pair = to_pair(image, target)
        if self.transform is not None:
            pair = self.transform(*pair)
        return plain(pair)
