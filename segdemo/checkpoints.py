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

A checkpoint is small and what it describes may not be: 2 KB of metadata can ask for a model of
500 billion parameters, and a 500 KB file can hold a tensor of 1.5 billion values made by
``expand`` (one value, stored once). So nothing is built or converted before it is measured:
:func:`check_weights` reads the model's size from its skeleton on the ``meta`` device (see
:func:`segdemo.models.skeleton`), refuses one past ``segdemo.limits.current().model_parameters``,
and compares the keys, shapes and kinds of the state dict's tensors with the skeleton's (and that
each stores all its values, not one repeated) before a single value is copied. Metadata that
would break every later use of the file (a normalization for other channels, colors that are not
RGB, 200,000 class names) is refused when the file is read and when it is saved, and weights that
are NaN or infinite when they are checked.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import numbers
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__, limits
from .errors import CheckpointError
from .files import atomic_write
from .models import count_parameters, create, entry, skeleton
from .runtime import IDENTITY
from .tasks import BINARY, MAX_CLASS_NAME, MAX_LABELS, TASKS, check_task, max_classes

FORMAT = "segdemo-checkpoint"
FORMAT_VERSION = 1
MAX_CHECKPOINT_BYTES = 1024 * 2**20   # on disk, and unpacked: torch reads compressed zip entries too
# The pickle inside the file (metadata, and the names and shapes of the tensors, whose values are
# stored beside it) is unpickled in Python, about 2.5 MB a second, each small value a Python object:
# shipped files' are 0.2 MB, a 10,000-epoch history of 21 classes about 6 MB.
MAX_PICKLE_BYTES = 16 * 2**20
MAX_ENTRIES = 20_000   # files in the zip (one per tensor): U²-Net with its optimizer's state has ~2,500
# segdemo feeds every model RGB images (image_files reads them so, runtime.normalize scales three
# channels), so a checkpoint for other input channels could never predict.
IMAGE_CHANNELS = 3
MIN_STD = 1e-3   # a normalization divides by its std: a smaller one (ImageNet's are about 0.22) blows inputs up


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


def _check_meta(meta: dict, name: str = "the checkpoint") -> None:
    """Refuse metadata that no later use of the file could work with, naming what is wrong."""
    for key in ("model", "task", "classes", "colors"):
        if key not in meta:
            raise CheckpointError(f"{name}'s metadata lacks {key!r}")
    spec = meta["model"]
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or \
            not isinstance(spec.get("options", {}), dict):
        raise CheckpointError(f"{name}'s metadata does not describe a model (it needs a model name and "
                              "a dict of options)")
    task = meta["task"]
    if task not in TASKS:
        raise CheckpointError(f"{name} is for the task {str(task)[:40]!r}; segdemo knows {', '.join(TASKS)}")
    classes, colors = meta["classes"], meta["colors"]
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(f"{name}'s class names are not a list of names")
    if task == BINARY and len(classes) != 1:
        raise CheckpointError(f"{name} names {len(classes):,} classes; a binary model has exactly one")
    if not 1 <= len(classes) <= max_classes(task):
        raise CheckpointError(f"{name} names {len(classes):,} classes; a {task} model has 1 to "
                              f"{max_classes(task)} (a label map is 8-bit and names at most {MAX_LABELS} labels)")
    for label in classes:
        if not label.strip() or len(label) > MAX_CLASS_NAME:
            raise CheckpointError(f"{name}: class names are 1 to {MAX_CLASS_NAME} characters; one is "
                                  f"{len(label):,} ({label[:24]!r}{'…' if len(label) > 24 else ''})")
    outputs = spec.get("num_classes", len(classes))
    if outputs != len(classes):
        raise CheckpointError(f"{name}'s model has {str(outputs)[:20]} outputs but the file names "
                              f"{len(classes)} classes: they must match, one output per class")
    channels = spec.get("in_channels", IMAGE_CHANNELS)
    if channels != IMAGE_CHANNELS:
        raise CheckpointError(f"{name}'s model takes {str(channels)[:20]} input channels; segdemo gives its "
                              f"models RGB images ({IMAGE_CHANNELS} channels)")
    if not isinstance(colors, (list, tuple)) or len(colors) != len(classes):
        raise CheckpointError(f"{name} names a different number of classes and colors")
    for index, color in enumerate(colors):
        if not isinstance(color, (list, tuple)) or len(color) != 3 or not all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v <= 255 for v in color):
            raise CheckpointError(f"{name}: the color of {classes[index][:24]!r} is {str(color)[:40]}; a color "
                                  "is three numbers from 0 to 255 (red, green, blue)")
    _check_normalization(meta.get("normalization"), name)


def _check_normalization(normalization, name: str) -> None:
    if normalization is None:  # files from before it was recorded: the identity
        return
    if not isinstance(normalization, dict) or set(normalization) != {"mean", "std"}:
        raise CheckpointError(f"{name}'s normalization is not a mean and a std")
    for key in ("mean", "std"):
        values = normalization[key]
        if not isinstance(values, (list, tuple)) or len(values) != IMAGE_CHANNELS:
            count = f"{len(values):,} values" if isinstance(values, (list, tuple)) else "no list"
            raise CheckpointError(f"{name}'s normalization {key} has {count}; it needs one per input "
                                  f"channel ({IMAGE_CHANNELS})")
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise CheckpointError(f"{name}'s normalization {key} is {str(values)[:60]}: it needs finite numbers")
    if min(normalization["std"]) < MIN_STD:
        raise CheckpointError(f"{name}'s normalization std is {normalization['std']}; every value must be at "
                              f"least {MIN_STD} (images are divided by it: 0 would make every input infinite)")


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
    _check_archive(path, name)
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
    _check_meta(payload["meta"], name)
    return payload


def _declared_entries(path: Path) -> int | None:
    """The number of files a zip's end record declares (zip64 too), read from its last 64 KB
    without parsing its directory (a directory of millions of entries takes gigabytes to parse);
    None where there is no end record."""
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(max(0, size - 65_557))  # the end record (22 bytes) and its comment (at most 65,535)
        tail = file.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None
        entries = int.from_bytes(tail[at + 10:at + 12], "little")
        if entries != 0xFFFF:
            return entries
        if at < 20 or tail[at - 20:at - 16] != b"PK\x06\x07":  # zip64: a locator precedes the record
            return None
        file.seek(int.from_bytes(tail[at - 12:at - 4], "little"))
        record = file.read(40)
        return int.from_bytes(record[32:40], "little") if record[:4] == b"PK\x06\x06" else None


def _check_archive(path: Path, name: str) -> None:
    """Refuse a file whose zip directory promises more than it may unpack to, before torch reads
    it: torch's reader inflates compressed entries (40 KB of zeros became a 40 MB tensor) and
    unpickles the pickle in Python. segdemo writes torch's zip format; the legacy format, a bare
    pickle, is refused with the other unreadable files."""
    unreadable = f"{name} is not a readable PyTorch checkpoint (it may be truncated or another kind of file)"
    entries = _declared_entries(path)
    if entries is None:
        raise CheckpointError(f"{unreadable}: it is not in the zip format torch.save writes")
    if entries > MAX_ENTRIES:
        raise CheckpointError(f"{name} holds {entries:,} files; a checkpoint holds at most {MAX_ENTRIES:,}")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{unreadable}: {error}") from error
    unpacked = sum(member.file_size for member in members)
    if unpacked > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{name} unpacks to {limits.size_text(unpacked)}; the limit is "
                              f"{limits.size_text(MAX_CHECKPOINT_BYTES)}")
    pickled = sum(member.file_size for member in members if member.filename.rpartition("/")[2] == "data.pkl")
    if pickled > MAX_PICKLE_BYTES:
        raise CheckpointError(f"{name} holds {limits.size_text(pickled)} of metadata; the limit is "
                              f"{limits.size_text(MAX_PICKLE_BYTES)} (segdemo's own checkpoints hold under 1 MB)")


def _unpickling_detail(message: str) -> str:
    """The informative line of torch's long ``weights_only`` refusal message."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    informative = [line for line in lines if not line.startswith(("Weights only load failed", "Please file",
                                                                   "Check the documentation", "WeightsUnpickler"))]
    return (informative or lines or ["unknown"])[0][:200]


def _spec(meta: dict) -> tuple[str, int, int, dict]:
    """The model a checkpoint describes: name, input channels, classes and the options to rebuild
    it with (the entry's ``restore_options`` on top: never fetch weights the file replaces)."""
    spec = meta["model"]
    options = {**spec.get("options", {}), **entry(spec["name"]).restore_options}
    return (spec["name"], spec.get("in_channels", IMAGE_CHANNELS), spec.get("num_classes", len(meta["classes"])),
            options)


def _shape_text(shape) -> str:
    return "×".join(str(n) for n in shape) or "a single value"


def check_weights(meta: dict, state_dict: dict | None, name: str = "checkpoint") -> nn.Module:
    """Check that ``meta`` describes a model segdemo builds within its limits and that
    ``state_dict`` fits it, without building the model or copying a weight; return the model's
    skeleton (on the ``meta`` device).

    In order: the metadata; the model's parameter count, read from its skeleton, against
    ``segdemo.limits.current().model_parameters``; the state dict's keys; each tensor's shape
    (and so its number of values) and kind against the skeleton's, and that its storage holds every
    value (not one value repeated by ``expand``); only then, tensor by tensor, that every value is
    finite. Raises :class:`~segdemo.errors.CheckpointError` naming what is wrong.
    """
    _check_meta(meta, name)
    try:
        model_name, in_channels, num_classes, options = _spec(meta)
        shape = skeleton(model_name, in_channels, num_classes, **options)
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{name} describes a model segdemo cannot build: {error}") from error
    size, limit = count_parameters(shape), limits.current().model_parameters
    if size > limit:
        raise CheckpointError(f"{name} asks for a {model_name} of {limits.count_text(size)} parameters; segdemo "
                              f"loads models of at most {limits.count_text(limit)} (the server's limit, "
                              "SEGDEMO_MODEL_PARAMETERS)")
    if state_dict is None:
        return shape
    expected = shape.state_dict()
    unfit = f"{name}: the weights do not fit a {model_name} with options {meta['model'].get('options', {})} " \
            "(another architecture?)"
    if not all(isinstance(key, str) for key in state_dict):
        raise CheckpointError(f"{unfit}: its weights are not named")
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        parts = [f"{len(found)} {what} ({', '.join(key[:60] for key in found[:3])}{', …' if len(found) > 3 else ''})"
                 for found, what in ((missing, "missing"), (unexpected, "unexpected")) if found]
        raise CheckpointError(f"{unfit}: {' and '.join(parts)}")
    for key, wanted in expected.items():
        tensor = state_dict[key]
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided or tensor.device.type != "cpu":
            raise CheckpointError(f"{unfit}: {key} is not a plain tensor")
        if tensor.shape != wanted.shape:
            raise CheckpointError(f"{unfit}: {key} is {_shape_text(tensor.shape)} where the model has "
                                  f"{_shape_text(wanted.shape)}")
        if tensor.is_floating_point() != wanted.is_floating_point() or tensor.is_complex():
            raise CheckpointError(f"{unfit}: {key} holds {str(tensor.dtype).replace('torch.', '')} values where "
                                  f"the model has {str(wanted.dtype).replace('torch.', '')}")
        if tensor.numel() and tensor.untyped_storage().nbytes() < tensor.numel() * tensor.element_size():
            # expand() and as_strided() make tensors whose values repeat a few stored ones: a 40 KB
            # file becomes gigabytes once copied into a model. segdemo saves every weight in full.
            raise CheckpointError(f"{name}: {key} holds {limits.count_text(tensor.numel())} values in "
                                  f"{tensor.untyped_storage().nbytes():,} bytes (made by expand?); a checkpoint "
                                  "stores every weight")
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{name}: the weights hold NaN or infinite values ({key}); such a model "
                                  "predicts nothing. Was its training diverging?")
    return shape


def build_model(meta: dict, state_dict: dict | None = None, name: str = "checkpoint") -> nn.Module:
    """Rebuild the model that ``meta`` describes and load ``state_dict`` into it, both checked by
    :func:`check_weights` before the model is built (float16 weights become float32 as they are
    copied in, one tensor at a time)."""
    check_weights(meta, state_dict, name)
    model_name, in_channels, num_classes, options = _spec(meta)
    try:
        model = create(model_name, in_channels, num_classes, **options)
    except ValueError as error:  # a model that builds on the meta device but not for real (pretrained weights)
        raise CheckpointError(f"{name} describes a model segdemo cannot build: {error}") from error
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            raise CheckpointError(f"{name}: the weights do not fit a {model_name} with options "
                                  f"{meta['model'].get('options', {})} (another architecture?): "
                                  f"{' '.join(lines[1:3])[:300]}") from error
    return model
