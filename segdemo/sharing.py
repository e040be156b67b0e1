"""Sharing for teaching: hand a dataset or a model to others by a short code, or publish it to all.

A visitor's workspace is private; to share, they make a **code** (``K7QM-4XPA``): a read-only
snapshot of the dataset or model, which anyone who is told the code can take into their own
workspace (a copy: the owner's later changes do not follow, and nobody can change the owner's).
The **teacher** (whoever holds ``SEGDEMO_ADMIN_KEY``, if it is set) can publish a model, which then
appears in every workspace's pickers, or a dataset, which every workspace can take::

    <data folder>/shares/<CODE>/share.json                 what it is, its name, when it was made
    <data folder>/shares/<CODE>/{dataset.zip | model.pt}
    <data folder>/published/models/<name>.pt               listed as "published: <name>" everywhere
    <data folder>/published/datasets/<name>.zip

Taking goes through the same checks as an upload (a dataset zip is read and checked pair by pair,
a checkpoint is read without running code), within the taker's quota. Codes are 8 characters of an
alphabet without look-alikes (31⁸ ≈ 8.5·10¹¹): easy to read out in class, impractical to guess.
"""

from __future__ import annotations

import datetime as _dt
import hmac
import json
import re
import secrets
import shutil
from pathlib import Path

from .datafolder import DataFolder
from .errors import UserError
from .filenames import check_name, safe_name
from .files import atomic_write, link_or_copy
from .workspaces import Workspace

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_PATTERN = re.compile(rf"^[{CODE_ALPHABET}]{{4}}-[{CODE_ALPHABET}]{{4}}$")
DATASET, MODEL = "dataset", "model"


def new_code() -> str:
    letters = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
    return f"{letters[:4]}-{letters[4:]}"


def check_code(code: str) -> str:
    """``code`` in its written form (upper case, ``XXXX-XXXX``), or a :class:`~segdemo.errors.UserError`."""
    written = re.sub(r"[\s-]", "", (code or "").upper())
    written = f"{written[:4]}-{written[4:]}"
    if not CODE_PATTERN.match(written):
        raise UserError("that is not a share code: a code is 8 letters and digits, like K7QM-4XPA")
    return written


class Sharing:
    """Share codes and the teacher's publications, under the app's data folder.

    Args:
        data: the app's data folder.
        admin_key: the teacher's key (``SEGDEMO_ADMIN_KEY``); None: nobody may publish.
    """

    def __init__(self, data: DataFolder, admin_key: str | None = None):
        self.shares = data.root / "shares"
        self.published = data.root / "published"
        self.admin_key = admin_key or None

    # --- codes ------------------------------------------------------------------------------------
    def share_dataset(self, workspace: Workspace, dataset: str) -> str:
        """A code for a read-only copy of ``dataset`` as it is now."""
        return self._share(DATASET, dataset, lambda target: workspace.store.export_zip(dataset, target / "dataset.zip"))

    def share_model(self, workspace: Workspace, model: str) -> str:
        """A code for a read-only copy of the workspace's model ``model`` (one it trained or uploaded)."""
        entry = workspace.catalog.entry(model)
        if entry.kind not in ("trained", "uploaded"):
            raise UserError(f"{model} is everybody's already: share a model you trained or uploaded")
        name = model.split(": ", 1)[-1]
        return self._share(MODEL, name, lambda target: link_or_copy(entry.path, target / "model.pt"))

    def _share(self, kind: str, name: str, write) -> str:
        code = new_code()
        folder = self.shares / code
        folder.mkdir(parents=True)
        try:
            write(folder)
            record = {"kind": kind, "name": name, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            atomic_write(folder / "share.json", lambda file: file.write(json.dumps(record).encode()))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return code

    def take(self, workspace: Workspace, code: str) -> str:
        """Copy what ``code`` names into ``workspace``; returns what was added, for a message."""
        folder = self.shares / check_code(code)
        try:
            record = json.loads((folder / "share.json").read_text())
        except (OSError, ValueError):
            raise UserError(f"no share has the code {check_code(code)}: check it with whoever gave it") from None
        if record["kind"] == DATASET:
            return self._take_dataset(workspace, folder / "dataset.zip", record["name"])
        name = workspace.catalog.add_checkpoint(folder / "model.pt", title=f"{record['name']} shared")
        return f"the model **{name}**"

    def _take_dataset(self, workspace: Workspace, archive: Path, name: str) -> str:
        taken = _free_name(workspace.store.datasets(), safe_name(name, "shared"))
        result = workspace.store.import_zip(archive, taken)
        return f"the dataset **{result['dataset']}** ({result['items']} pairs)"

    # --- the teacher's publications ---------------------------------------------------------------
    def check_teacher(self, key: str) -> None:
        if self.admin_key is None:
            raise UserError("publishing to the class is off: the app was started without SEGDEMO_ADMIN_KEY")
        if not hmac.compare_digest((key or "").encode(), self.admin_key.encode()):
            raise UserError("that is not the teacher's key")

    def publish_model(self, workspace: Workspace, model: str, teacher_key: str) -> str:
        """Put ``model`` (the teacher's own) in every workspace's pickers as ``published: NAME``."""
        self.check_teacher(teacher_key)
        entry = workspace.catalog.entry(model)
        if entry.kind not in ("trained", "uploaded"):
            raise UserError(f"{model} is everybody's already")
        name = check_name(safe_name(model.split(": ", 1)[-1], "model"), "model name")
        link_or_copy(entry.path, self.published / "models" / f"{name}.pt")  # the catalogs see the folder change
        return f"published: {name}"

    def publish_dataset(self, workspace: Workspace, dataset: str, teacher_key: str) -> str:
        """Offer ``dataset`` to every workspace (each takes a copy of it)."""
        self.check_teacher(teacher_key)
        name = check_name(dataset, "dataset name")
        target = self.published / "datasets" / f"{name}.zip"
        target.parent.mkdir(parents=True, exist_ok=True)
        workspace.store.export_zip(name, target)
        return name

    def published_datasets(self) -> list[str]:
        folder = self.published / "datasets"
        return sorted(path.stem for path in folder.glob("*.zip")) if folder.is_dir() else []

    def take_published(self, workspace: Workspace, dataset: str) -> str:
        """Copy the published ``dataset`` into ``workspace``."""
        name = check_name(dataset, "dataset name")
        archive = self.published / "datasets" / f"{name}.zip"
        if not archive.is_file():
            raise UserError(f"the teacher has published no dataset named {name!r}")
        return self._take_dataset(workspace, archive, name)


def _free_name(taken: list[str], name: str) -> str:
    candidate, index = name, 2
    while candidate in taken:
        candidate, index = f"{name}-{index}", index + 1
    return candidate
