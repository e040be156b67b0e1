"""A read-only view of a dataset folder or ``.zip``, safe against hostile archives.

Loaders never extract archives: they read members directly. Names are checked first, so a zip
whose entries climb out (``../``) or are absolute ("zip-slip") is refused as a whole, and sizes
are checked from the directory before anything is decompressed, so a zip bomb is refused too.
"""

from __future__ import annotations

import os
import posixpath
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import ArchiveError

MAX_MEMBER_BYTES = 256 * 2**20
MAX_TOTAL_BYTES = 4 * 2**30
MAX_MEMBERS = 200_000
MAX_RATIO = 200  # a real image compresses a few times at most; bombs compress 1000×


def check_member_name(name: str) -> str:
    """Return a zip member name as a clean relative POSIX path, or raise :class:`ArchiveError`."""
    if "\\" in name:
        name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"unsafe absolute path in the archive: {name!r}")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise ArchiveError(f"unsafe path in the archive (climbs out with '..'): {name!r}")
    return posixpath.normpath(name) if name else name


class FileTree:
    """Files of a folder or zip, addressed by relative POSIX paths.

    Args:
        path: a directory or a ``.zip`` file.
    """

    def __init__(self, path: str | os.PathLike, *, max_member_bytes: int = MAX_MEMBER_BYTES,
                 max_total_bytes: int = MAX_TOTAL_BYTES):
        self.path = Path(path)
        self.max_member_bytes = max_member_bytes
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_dir():
            self._names = sorted(
                p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()
            )
        elif self.path.is_file():
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as error:
                raise ArchiveError(f"{self.path.name} is neither a folder nor a readable .zip ({error})") from error
            infos = [info for info in self._zip.infolist() if not info.is_dir()]
            if len(infos) > MAX_MEMBERS:
                raise ArchiveError(f"{self.path.name} holds {len(infos)} files; the limit is {MAX_MEMBERS}")
            total = 0
            self._names = []
            self._members: dict[str, zipfile.ZipInfo] = {}
            for info in infos:
                name = check_member_name(info.filename)
                if info.file_size > max_member_bytes:
                    raise ArchiveError(f"{name} in {self.path.name} unpacks to {info.file_size / 2**20:.0f} MB; "
                                       f"the limit is {max_member_bytes / 2**20:.0f} MB")
                if info.compress_size and info.file_size / info.compress_size > MAX_RATIO \
                        and info.file_size > 2**20:
                    raise ArchiveError(f"{name} in {self.path.name} is compressed {info.file_size // info.compress_size}:1, "
                                       "which looks like a zip bomb")
                total += info.file_size
                if total > max_total_bytes:
                    raise ArchiveError(f"{self.path.name} unpacks to more than {max_total_bytes / 2**30:.0f} GB")
                self._names.append(name)
                self._members[name] = info
            self._names.sort()
        else:
            raise ArchiveError(f"{self.path} does not exist")

    def names(self) -> list[str]:
        """Every file in the tree (no directories), sorted."""
        return list(self._names)

    def read(self, name: str) -> bytes:
        """The bytes of one file, by its relative path."""
        if self._zip is not None:
            try:
                info = self._members[name]
            except KeyError:
                raise ArchiveError(f"{name} is not in {self.path.name}") from None
            try:
                return self._zip.read(info)
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as error:
                raise ArchiveError(f"cannot read {name} from {self.path.name}: {error}") from error
        name = check_member_name(name)
        target = (self.path / name).resolve()
        if self.path.resolve() not in target.parents:
            raise ArchiveError(f"{name} is outside {self.path}")
        if target.stat().st_size > self.max_member_bytes:
            raise ArchiveError(f"{name} is larger than {self.max_member_bytes / 2**20:.0f} MB")
        return target.read_bytes()

    def find_prefix(self, marker: str) -> str | None:
        """The path prefix (``""`` or ``"some/dir/"``) under which ``marker`` (e.g. ``"training/images/"``)
        occurs, so datasets zipped with or without a top folder both work."""
        best = None
        for name in self._names:
            index = ("/" + name).find("/" + marker)
            if index >= 0:
                prefix = name[:index]
                if best is None or len(prefix) < len(best):
                    best = prefix
        return best

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __getstate__(self):
        # Datasets are copied into DataLoader workers: reopen the zip there.
        state = self.__dict__.copy()
        state["_zip"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if getattr(self, "_members", None) is not None and self.path.is_file():
            self._zip = zipfile.ZipFile(self.path)


def extract_safely(zip_path: str | os.PathLike, destination: str | os.PathLike, *,
                   max_total_bytes: int = MAX_TOTAL_BYTES) -> list[Path]:
    """Extract a zip into ``destination`` after the same checks as :class:`FileTree`.

    Returns the extracted file paths. Nothing is written when any check fails.
    """
    tree = FileTree(zip_path, max_total_bytes=max_total_bytes)
    destination = Path(destination)
    written = []
    try:
        for name in tree.names():
            target = destination / name
            if destination.resolve() not in target.resolve().parents:
                raise ArchiveError(f"unsafe path in the archive: {name!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tree.read(name))
            written.append(target)
    finally:
        tree.close()
    return written
