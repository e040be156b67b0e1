"""One rule for the names that become files: datasets, annotated items, models, uploads.

A name is 1–64 letters, digits, spaces, ``.``, ``_`` or ``-``, starts with a letter or digit and
holds no ``..``: so no hidden file, no path separator, no climbing out of a folder, on any system.
:func:`safe_name` makes any text into such a name (for names segdemo picks, e.g. from an upload's
file name); :func:`check_name` refuses a name a user typed that breaks the rule, rather than
silently saving under another name.
"""

from __future__ import annotations

import re

from .errors import UserError

MAX_NAME_LENGTH = 64
RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")   # a training run's folder: its start time, then random
LAST_CHECKPOINT, BEST_CHECKPOINT = "last.pt", "best.pt"   # in a run's folder
RULE = f"1–{MAX_NAME_LENGTH} letters, digits, spaces, '.', '_' or '-', starting with a letter or digit"


def safe_name(text: str, fallback: str = "unnamed") -> str:
    """``text`` made to follow the rule: other characters become ``_``, ``..`` becomes ``.``,
    leading punctuation goes, and it is cut to 64 characters; ``fallback`` if nothing is left."""
    cleaned = re.sub(r"[^A-Za-z0-9._ -]+", "_", (text or "").strip())
    cleaned = re.sub(r"\.{2,}", ".", cleaned)
    cleaned = re.sub(r"^[^A-Za-z0-9]+", "", cleaned)[:MAX_NAME_LENGTH].rstrip()
    return cleaned or fallback


def follows_rule(name: str) -> bool:
    """Whether ``name`` is a name by the rule exactly as it is."""
    return bool(name) and safe_name(name, fallback="") == name


def check_name(name: str, what: str = "name") -> str:
    """``name`` (without surrounding spaces) if it follows the rule, else a :class:`UserError`."""
    name = (name or "").strip()
    if not follows_rule(name):
        raise UserError(f"{what} {name!r} is not allowed: use {RULE}")
    return name
