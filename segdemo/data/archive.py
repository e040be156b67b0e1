"""A read-only view of a dataset folder or ``.zip``, safe against hostile archives.

Loaders never extract archives: they read members directly. Names are checked first, so a zip
whose entries climb out (``../``) or are absolute ("zip-slip") is refused as a whole, and sizes
are checked from the directory before anything is decompressed, so a zip bomb is refused too.
The number of files is read from the zip's last record before its directory is even parsed (a
zip of 100,000 empty files took 60 MB and half a second to list), and symbolic links and folders
nested deeper than any dataset needs are refused. Each cap is a field of
:class:`segdemo.limits.Limits` (``zip_files``, ``zip_mb``, ``zip_member_mb``, ``zip_ratio``,
``zip_depth``) and each refusal names it.
"""

from __future__ import annotations

import os
import posixpath
import stat
import struct
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import ArchiveError
from ..limits import MB, current

_END = struct.Struct("<4s4H2LH")          # the zip's end-of-central-directory record
_END64_LOCATOR = struct.Struct("<4sLQL")  # where a zip64 end record is
_END64 = struct.Struct("<4sQ2H2L4Q")      # the zip64 end record
FOLDER_ENTRIES = 4096   # entries a zip may declare beyond its file limit before it is listed (its folders)


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


def zip_entry_count(path: str | os.PathLike) -> int | None:
    """The number of entries (files and folders) a zip's last record declares, read without
    parsing its directory; None where there is no such record (then it is no readable zip)."""
    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        size = file.tell()
        tail_start = max(0, size - (_END.size + 0xFFFF))   # the record, then a comment of up to 64 KB
        file.seek(tail_start)
        tail = file.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + _END.size > len(tail):
            return None
        count = _END.unpack_from(tail, at)[4]
        if count != 0xFFFF or at < _END64_LOCATOR.size:
            return count
        signature, _, end64_offset, _ = _END64_LOCATOR.unpack_from(tail, at - _END64_LOCATOR.size)
        if signature != b"PK\x06\x07" or end64_offset + _END64.size > size:
            return count
        file.seek(end64_offset)
        record = file.read(_END64.size)
        return _END64.unpack(record)[7] if record[:4] == b"PK\x06\x06" else count


def _shown(name: str) -> str:
    """A member's name for a message: a hostile one may be kilobytes long."""
    return name if len(name) <= 100 else name[:60] + "…" + name[-30:]


def _is_link(info: zipfile.ZipInfo) -> bool:
    """Whether a zip entry is a symbolic link (its Unix mode, kept in the high bits)."""
    return stat.S_ISLNK(info.external_attr >> 16)


class FileTree:
    """Files of a folder or zip, addressed by relative POSIX paths.

    Args:
        path: a directory or a ``.zip`` file.
        max_files: the most files it may hold (default: the ``zip_files`` limit); the annotation
            import, which reads every pair, allows far fewer. ``files_limit`` names that limit in
            the message.
        max_member_bytes, max_total_bytes: one file and all of them, unpacked (default: the
            ``zip_member_mb`` and ``zip_mb`` limits).
    """

    def __init__(self, path: str | os.PathLike, *, max_files: int | None = None, max_member_bytes: int | None = None,
                 max_total_bytes: int | None = None, files_limit: str = "zip_files"):
        limits = current()
        self.path = Path(path)
        self.max_files = max_files or limits.zip_files
        self.files_limit = files_limit
        self.max_member_bytes = max_member_bytes or int(limits.zip_member_mb * MB)
        self.max_total_bytes = max_total_bytes or int(limits.zip_mb * MB)
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_dir():
            self._names = sorted(
                p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()
            )
        elif self.path.is_file():
            self._open_zip(limits)
        else:
            raise ArchiveError(f"{self.path} does not exist")

    def _open_zip(self, limits) -> None:
        """Check the zip's declared entry count, then every entry's name, kind and sizes."""
        label = self.path.name
        try:
            declared = zip_entry_count(self.path)
        except OSError as error:
            raise ArchiveError(f"cannot read {label}: {error.strerror or error}") from error
        if declared is not None and declared > self.max_files + FOLDER_ENTRIES:
            raise ArchiveError(f"{label} holds {declared:,} entries; the limit is {self.max_files:,} files "
                               f"({self.files_limit})")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as error:
            raise ArchiveError(f"{label} is neither a folder nor a readable .zip ({error})") from error
        infos = [info for info in self._zip.infolist() if not info.is_dir()]
        if len(infos) > self.max_files:
            raise ArchiveError(f"{label} holds {len(infos):,} files; the limit is {self.max_files:,} ({self.files_limit})")
        total = 0
        self._names = []
        self._members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = check_member_name(info.filename)
            if _is_link(info):
                raise ArchiveError(f"{name} in {label} is a symbolic link; a dataset zip may hold only files and "
                                   "folders")
            if name.count("/") > limits.zip_depth:
                raise ArchiveError(f"{_shown(name)} in {label} lies {name.count('/')} folders deep; the limit is "
                                   f"{limits.zip_depth} (zip_depth)")
            if info.file_size > self.max_member_bytes:
                raise ArchiveError(f"{name} in {label} unpacks to {info.file_size / MB:.0f} MB; "
                                   f"the limit is {self.max_member_bytes / MB:.0f} MB (zip_member_mb)")
            if info.compress_size and info.file_size / info.compress_size > limits.zip_ratio \
                    and info.file_size > MB:
                raise ArchiveError(f"{name} in {label} is compressed {info.file_size // info.compress_size}:1, "
                                   f"which looks like a zip bomb (the limit is {limits.zip_ratio:g}:1, zip_ratio)")
            total += info.file_size
            if total > self.max_total_bytes:
                raise ArchiveError(f"{label} unpacks to more than {self.max_total_bytes / MB:,.0f} MB; the limit is "
                                   f"{self.max_total_bytes / MB:,.0f} MB (zip_mb)")
            self._names.append(name)
            self._members[name] = info
        self._names.sort()

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

    def size(self, name: str) -> int:
        """The unpacked size of one file, from the zip's directory (nothing is read)."""
        if self._zip is not None:
            return self._members[name].file_size
        return (self.path / check_member_name(name)).stat().st_size

    def head(self, name: str, size: int) -> bytes:
        """The first ``size`` bytes of one file (enough for an image's header): a large member
        is not decompressed whole to learn its size."""
        if self._zip is None:
            with open(self.path / check_member_name(name), "rb") as file:
                return file.read(size)
        try:
            with self._zip.open(self._members[name]) as member:
                return member.read(size)
        except KeyError:
            raise ArchiveError(f"{name} is not in {self.path.name}") from None
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as error:
            raise ArchiveError(f"cannot read {name} from {self.path.name}: {error}") from error

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
                   max_total_bytes: int | None = None) -> list[Path]:
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
