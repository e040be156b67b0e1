"""The models a user can pick: shipped checkpoints, the classical methods of :mod:`segdemo.classical`
(nothing learned: a vesselness filter, GrabCut), uploaded ones, runs trained in the app, and
torchvision's pretrained VOC models where their weights are at hand.

:class:`ModelCatalog` lists them by display name and loads each lazily through a
:class:`ModelCache`, which keeps loaded :class:`~segdemo.inference.Segmenter` objects up to a budget
of bytes (``segdemo.limits``' ``model_cache_mb``: a count would let four 400 MB models in as easily
as four 1 MB ones) and is shared by every catalog of the app (one per workspace), so a shipped model
is in memory once however many visitors use it. Both are thread-safe: the app's request handlers
and the background trainer's ``on_finish`` call them concurrently.

Listing reads file names only and imports no torch; the first model loaded imports it (a
classical method needs none, and imports scikit-image when first loaded). The app builds its page
from the listing, so it serves that page before torch is loaded.

Each model's domain (what images it knows: :mod:`segdemo.domain`) is known without loading it: an
entry may carry it, pretrained VOC models know photos, and a checkpoint's is read from its
metadata once per version of its file (:meth:`ModelCatalog.domain`), so the app can point to the
models that fit an upload.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import domain as domains
from . import limits
from .classical import METHOD_DOMAINS, METHODS
from .errors import CheckpointError, SettingsError
from .filenames import safe_name
from .files import atomic_write, folder_lock, link_or_copy
from .models.pretrained import PRETRAINED

if TYPE_CHECKING:
    from .predictor import Predictor  # a trained Segmenter or a classical method

log = logging.getLogger(__name__)

SHIPPED, PUBLISHED, TRAINED, UPLOADED, PRETRAINED_KIND = "shipped", "published", "trained", "uploaded", "pretrained"
CLASSICAL = "classical"
KINDS = (SHIPPED, CLASSICAL, PUBLISHED, TRAINED, UPLOADED, PRETRAINED_KIND)  # the order pickers list them in


@dataclass(frozen=True)
class CatalogEntry:
    name: str                 # what the pickers show (unique)
    kind: str                 # shipped, classical, published, trained, uploaded, pretrained
    path: str | None = None   # the checkpoint file, for all but pretrained and classical models
    pretrained: str | None = None
    available: bool = True
    message: str = ""         # why it is unavailable, or a note
    domain: str | None = None  # what images it knows (segdemo.domain.DOMAINS); None: read from its file
    method: str | None = None  # a classical model's key in segdemo.classical.METHODS


def _cache_key(entry: CatalogEntry) -> str:
    """The loaded model's key: its file as it is now (a model published again under the same name
    is another model), or its pretrained name."""
    if entry.kind == PRETRAINED_KIND:
        return f"pretrained:{entry.pretrained}"
    if entry.kind == CLASSICAL:
        return f"classical:{entry.method}"
    try:
        return f"{entry.path}@{os.stat(entry.path).st_mtime_ns}"
    except OSError:
        return str(entry.path)


_domains: OrderedDict[str, str] = OrderedDict()   # a checkpoint's cache key → its domain
_domains_lock = threading.Lock()
MAX_DOMAINS = 4096   # files remembered (a few dozen bytes each); the least recently asked dropped


def _file_domain(entry: CatalogEntry) -> str:
    """The domain of a checkpoint entry, read from its metadata once per version of its file (a
    shipped file takes 30–60 ms to read: once, not at every upload); an unreadable file is
    ``"custom"`` (nothing known, nothing warned about)."""
    if entry.path is None:   # a model without a file whose entry does not say its domain
        return domains.CUSTOM
    key = _cache_key(entry)
    with _domains_lock:
        if key in _domains:
            _domains.move_to_end(key)
            return _domains[key]
    from . import checkpoints

    try:
        found = domains.model_domain(checkpoints.read(entry.path)["meta"])
    except CheckpointError:
        found = domains.CUSTOM
    with _domains_lock:
        _domains[key] = found
        while len(_domains) > MAX_DOMAINS:
            _domains.popitem(last=False)
    return found


class ModelCache:
    """Loaded models by key (their file, or ``pretrained:NAME``), as many as their weights fit
    ``budget_bytes`` (default: ``segdemo.limits.current().model_cache_mb``, read at each load), the
    least recently used dropped first; a model larger than the whole budget is kept alone (it was
    just asked for, and the next request will likely want it again). One load per model at a time:
    a request that comes while the app's warm-up or another visitor is loading the same model waits
    for that load."""

    def __init__(self, budget_bytes: int | None = None):
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, Predictor] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}

    def budget(self) -> int:
        """Bytes of weights this cache may hold."""
        return self.budget_bytes if self.budget_bytes is not None else limits.current().model_cache_mb * limits.MB

    def held_bytes(self) -> int:
        """Bytes of the weights of the models in memory."""
        with self._lock:
            return sum(segmenter.weight_bytes() for segmenter in self._loaded.values())

    def _recall(self, key: str) -> Predictor | None:
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            return None

    def get(self, key: str, load: Callable[[], Predictor]) -> Predictor:
        """The model ``key``, loaded by ``load()`` if it is not in memory."""
        if (segmenter := self._recall(key)) is not None:
            return segmenter
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            if (segmenter := self._recall(key)) is not None:
                return segmenter
            segmenter = load()
            with self._lock:
                self._loaded[key] = segmenter
                sizes = {name: loaded.weight_bytes() for name, loaded in self._loaded.items()}
                held, budget = sum(sizes.values()), self.budget()
                while held > budget and len(self._loaded) > 1:
                    dropped, _ = self._loaded.popitem(last=False)
                    held -= sizes[dropped]
        return segmenter

    def keys(self) -> list[str]:
        """The keys in memory, the most recently used last."""
        with self._lock:
            return list(self._loaded)

    def forget(self, key: str) -> None:
        with self._lock:
            self._loaded.pop(key, None)


class ModelCatalog:
    """Pickable models.

    Args:
        shipped_dir: the repository's ``checkpoints/`` folder.
        models_dir: where uploaded and app-trained checkpoints are kept (a data folder's ``models``).
        default: name of the default model (listed first).
        cache: where loaded models are kept; share one between catalogs (default: a cache of its own).
        room: called as ``room(bytes, "model")`` before a model is added; it raises to refuse (a
            workspace over its quota).
        published_dir: models a teacher published to every workspace (listed as ``published: NAME``).
        include_classical: list the classical methods (``classical: …``) after the shipped models.
    """

    def __init__(self, shipped_dir: str | Path, models_dir: str | Path, *, default: str = "unet_shapes",
                 include_pretrained: bool = True, cache: ModelCache | None = None,
                 room: Callable[[int, str], None] | None = None, published_dir: str | Path | None = None,
                 include_classical: bool = True):
        self.shipped_dir = Path(shipped_dir)
        self.models_dir = Path(models_dir)
        self.default = default
        self.include_pretrained = include_pretrained
        self.cache = cache or ModelCache()
        self.room = room
        self.published_dir = Path(published_dir) if published_dir else None
        self.include_classical = include_classical
        self._lock = folder_lock(self.models_dir)
        self._entries: dict[str, CatalogEntry] = {}
        self.version = 0
        self.refresh()

    # --- listing ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Rescan the folders (cheap: file names only; nothing is loaded)."""
        self._published_seen = self._published_stamp()
        entries: dict[str, CatalogEntry] = {}
        for path in sorted(self.shipped_dir.glob("*.pt")):
            entries[path.stem] = CatalogEntry(path.stem, SHIPPED, str(path))
        if self.include_classical:
            for method, title in METHODS.items():
                name = f"{CLASSICAL}: {title}"
                entries[name] = CatalogEntry(name, CLASSICAL, method=method, domain=METHOD_DOMAINS[method])
        folders = [(TRAINED, self.models_dir / TRAINED), (UPLOADED, self.models_dir / UPLOADED)]
        if self.published_dir is not None:
            folders.insert(0, (PUBLISHED, self.published_dir))
        for kind, folder in folders:
            for path in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
                name = f"{kind}: {path.stem}"
                entries[name] = CatalogEntry(name, kind, str(path))
        if self.include_pretrained:
            for key, spec in PRETRAINED.items():
                available, message = spec.availability()
                name = f"pretrained: {key} (VOC)"
                entries[name] = CatalogEntry(name, PRETRAINED_KIND, pretrained=key, available=available,
                                             message=message or spec.description)
        with self._lock:
            changed = set(entries) != set(self._entries)
            for name, entry in self._entries.items():
                if name not in entries:
                    self.cache.forget(_cache_key(entry))
            self._entries = entries
            if changed:
                self.version += 1

    def _published_stamp(self) -> int | None:
        try:
            return self.published_dir.stat().st_mtime_ns if self.published_dir is not None else None
        except OSError:
            return None

    def entries(self) -> list[CatalogEntry]:
        if self._published_stamp() != self._published_seen:  # a teacher published a model: list it
            self.refresh()
        with self._lock:
            ordered = sorted(self._entries.values(), key=lambda e: (e.name != self.default, KINDS.index(e.kind), e.name))
            return ordered

    def names(self, *, available_only: bool = True) -> list[str]:
        """Display names, the default first."""
        return [e.name for e in self.entries() if e.available or not available_only]

    def unavailable(self) -> list[CatalogEntry]:
        return [e for e in self.entries() if not e.available]

    def entry(self, name: str) -> CatalogEntry:
        with self._lock:
            if name not in self._entries:
                raise SettingsError(f"no model named {name!r}; pick one of: {', '.join(self.names())}")
            return self._entries[name]

    def name_of_file(self, path: str | Path) -> str | None:
        """The display name under which the checkpoint file ``path`` is listed already (the same
        file: a trained model is a link to its run's checkpoint), or None."""
        for entry in self.entries():
            try:
                if entry.path and os.path.samefile(entry.path, path):
                    return entry.name
            except OSError:
                continue
        return None

    # --- domains ----------------------------------------------------------------------------------
    def domain(self, name: str) -> str:
        """What images the model ``name`` knows (a key of :data:`segdemo.domain.DOMAIN_TEXT`), without
        loading it."""
        entry = self.entry(name)
        if entry.domain is not None:
            return entry.domain
        if entry.kind == PRETRAINED_KIND:
            return domains.PHOTO
        return _file_domain(entry)

    def fitting(self, kind: str) -> list[str]:
        """The available models made for images of ``kind`` (``"shapes"``, ``"retina"``, ``"photo"``),
        then those that take any object (domain ``"any"``)."""
        names = self.names()
        exact = [name for name in names if self.domain(name) == kind]
        return exact + [name for name in names if self.domain(name) == domains.ANY]

    def domain_warning(self, name: str, kind: str) -> str | None:
        """What to say when the model ``name`` is given an image of ``kind``: None where it fits
        (see :func:`segdemo.domain.domain_warning`), else a sentence naming the models that do."""
        known = self.domain(name)
        if not domains.warns(known, kind):
            return None
        return domains.domain_warning(name, known, kind, self.fitting(kind))

    # --- loading ----------------------------------------------------------------------------------
    def loaded(self) -> list[str]:
        """Names of this catalog's models held in memory, the most recently used last."""
        with self._lock:
            by_key = {_cache_key(entry): name for name, entry in self._entries.items()}
        return [by_key[key] for key in self.cache.keys() if key in by_key]

    def get(self, name: str | None = None) -> Predictor:
        """The loaded model ``name`` (default: the default model). Raises a
        :class:`~segdemo.errors.UserError` for an unknown name or one that cannot be loaded."""
        name = name or self.default
        entry = self.entry(name)
        if not entry.available:
            raise CheckpointError(entry.message)

        def load() -> Predictor:
            if entry.kind == CLASSICAL:
                from .classical import create

                segmenter = create(entry.method)
                segmenter.name = name
                return segmenter
            from .inference import load_segmenter, pretrained_segmenter

            if entry.kind == PRETRAINED_KIND:
                return pretrained_segmenter(entry.pretrained)
            segmenter = load_segmenter(entry.path)
            segmenter.name = name
            return segmenter

        return self.cache.get(_cache_key(entry), load)

    # --- adding -----------------------------------------------------------------------------------
    def add_checkpoint(self, source: str | Path, *, title: str | None = None) -> str:
        """Check an uploaded file as a segdemo checkpoint (readable without running code, a model
        within the limits, and weights that fit it: :func:`segdemo.checkpoints.check_weights`, which
        builds nothing), copy it into the catalog and return its display name.
        A bad file raises :class:`~segdemo.errors.CheckpointError` and adds nothing."""
        from . import checkpoints

        source = Path(source)
        if self.room is not None:
            self.room(source.stat().st_size, "model")
        payload = checkpoints.read(source)
        checkpoints.check_weights(payload["meta"], payload["state_dict"], source.name)  # builds nothing
        return self._add(UPLOADED, title or payload["meta"].get("title") or source.stem,
                         lambda target: atomic_write(target, lambda file: file.write(source.read_bytes())))

    def add_trained(self, path: str | Path, title: str) -> str:
        """List a checkpoint that a training run of the app has just written: it is linked into
        the catalog (no copy where the file system allows), not read again."""
        if self.room is not None:
            self.room(0, "model")  # a link takes no room, but counts as a model
        return self._add(TRAINED, title, lambda target: link_or_copy(path, target))

    def _add(self, kind: str, title: str, place) -> str:
        """Call ``place(target)`` with a free ``models/<kind>/<name>.pt`` for ``title``; returns
        the new display name."""
        folder = self.models_dir / kind
        stem = safe_name(title, "model")
        with self._lock:
            candidate, index = stem, 2
            while (folder / f"{candidate}.pt").exists():
                candidate, index = f"{stem}-{index}", index + 1
            place(folder / f"{candidate}.pt")
        self.refresh()
        return f"{kind}: {candidate}"

    def remove(self, name: str) -> None:
        entry = self.entry(name)
        if entry.kind not in (TRAINED, UPLOADED):
            raise SettingsError(f"{name} is a {entry.kind} model and cannot be removed")
        Path(entry.path).unlink(missing_ok=True)
        self.refresh()

