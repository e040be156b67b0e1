"""The checkpoint file format: files that describe themselves, written atomically, read without
running any code. (Loading one as a ready-to-predict model is :func:`segdemo.inference.load_segmenter`.)

A checkpoint is a ``torch.save`` of a plain dict::

    {"format": "segdemo-checkpoint", "format_version": 1,
     "meta": {model name/channels/options, task, classes, colors, normalization,
              recipe, data, metrics, history, version, date, ...},
     "state_dict": {...},
     "train_state": {...}}   # optional: optimizer, scheduler, step, for resuming

:func:`save` writes to a temporary file in the same folder and renames it over the target
(``os.replace``), so a crash or a kill leaves either the old file or the new one, never half of
one. :func:`read` uses ``torch.load(weights_only=True)`` only: a pickle that would execute code is
refused, and every other problem (not a checkpoint, truncated, another architecture) raises
:class:`~segdemo.errors.CheckpointError` with a message fit for a user; :func:`build_model` rebuilds
the network a checkpoint describes.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .errors import CheckpointError
from .files import atomic_write
from .models import create, entry
from .runtime import IDENTITY
from .tasks import check_task

FORMAT = "segdemo-checkpoint"
FORMAT_VERSION = 1
MAX_CHECKPOINT_BYTES = 1024 * 2**20


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / DataParallel / ``torch.compile``."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _plain(value: Any) -> Any:
    """Metadata as JSON-like builtins only, so ``weights_only`` loading accepts it."""
    return json.loads(json.dumps(value, default=_to_builtin))


def _to_builtin(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} cannot be stored in checkpoint metadata")


def build_meta(model: nn.Module, *, task: str, classes, colors, normalization=None, **extra) -> dict:
    """The metadata of a checkpoint for ``model`` (which must come from :func:`segdemo.models.create`)."""
    model = unwrap(model)
    spec = getattr(model, "segdemo_spec", None)
    if spec is None:
        raise ValueError("the model was not built by segdemo.models.create, so it cannot describe itself")
    check_task(task)
    meta = {
        "model": dict(spec),
        "task": task,
        "classes": list(classes),
        "colors": [list(c) for c in colors],
        "normalization": normalization or IDENTITY,
        "version": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update(extra)
    return meta


def _check_meta(meta: dict) -> None:
    for key in ("model", "task", "classes", "colors"):
        if key not in meta:
            raise CheckpointError(f"the checkpoint's metadata lacks {key!r}")
    check_task(meta["task"])
    if len(meta["classes"]) != len(meta["colors"]):
        raise CheckpointError("the checkpoint names a different number of classes and colors")


def save(path: str | os.PathLike, model: nn.Module, meta: dict, *, train_state: dict | None = None,
         half: bool = False) -> Path:
    """Write a checkpoint atomically.

    Args:
        path: target file (``.pt``).
        model: the model (wrappers are removed first).
        meta: from :func:`build_meta`, with any recipe/data/metrics/history added.
        train_state: optimizer/scheduler/step state for resuming (omit in shipped files).
        half: store floating-point weights as float16 (half the size; restored to float32 on load).
    """
    _check_meta(meta)
    state_dict = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    if half:
        state_dict = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "meta": _plain(meta),
               "state_dict": state_dict}
    if train_state is not None:
        payload["train_state"] = train_state
    atomic_write(path, lambda file: torch.save(payload, file))
    return Path(path)


def read(path: str | os.PathLike) -> dict:
    """Read and validate a checkpoint file's dict (``meta``, ``state_dict``, maybe ``train_state``)."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise CheckpointError(f"{name}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{name} is empty")
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{name} is {size / 2**20:.0f} MB; the limit is {MAX_CHECKPOINT_BYTES / 2**20:.0f} MB")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        detail = _unpickling_detail(str(error))
        if "GLOBAL" in detail or "global" in detail:
            raise CheckpointError(
                f"{name} was refused: loading it would run code or build objects that a plain "
                f"checkpoint never holds (only tensors and plain data are accepted): {detail}") from error
        raise CheckpointError(f"{name} is not a readable PyTorch checkpoint (it may be truncated or "
                              f"another kind of file): {detail}") from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, TypeError,
            AttributeError, KeyError, IndexError, UnicodeDecodeError) as error:
        detail = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise CheckpointError(f"{name} is not a readable PyTorch checkpoint (it may be truncated or "
                              f"another kind of file): {detail}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        kind = "a bare state dict" if isinstance(payload, dict) and payload and \
            all(isinstance(v, torch.Tensor) for v in payload.values()) else "not a segdemo checkpoint"
        raise CheckpointError(f"{name} is {kind}: it does not say which model and classes it holds. "
                              "Save checkpoints with segdemo (training does) so they describe themselves.")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{name} was written by a newer segdemo (format {payload['format_version']})")
    if not isinstance(payload.get("meta"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"{name} lacks its metadata or weights")
    _check_meta(payload["meta"])
    return payload


def _unpickling_detail(message: str) -> str:
    """The informative line of torch's long ``weights_only`` refusal message."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    informative = [line for line in lines if not line.startswith(("Weights only load failed", "Please file",
                                                                   "Check the documentation", "WeightsUnpickler"))]
    return (informative or lines or ["unknown"])[0][:200]


def build_model(meta: dict, state_dict: dict | None = None, name: str = "checkpoint") -> nn.Module:
    """Rebuild the model that ``meta`` describes and load ``state_dict`` into it."""
    spec = meta["model"]
    try:
        model_entry = entry(spec["name"])
        options = {**spec.get("options", {}), **model_entry.restore_options}
        model = create(spec["name"], spec.get("in_channels", 3), spec.get("num_classes", len(meta["classes"])),
                       **options)
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{name} describes a model segdemo cannot build: {error}") from error
    if state_dict is not None:
        state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            raise CheckpointError(f"{name}: the weights do not fit a {spec['name']} with options "
                                  f"{spec.get('options', {})} (another architecture?): "
                                  f"{' '.join(lines[1:3])[:300]}") from error
    return model
