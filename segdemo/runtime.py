"""How a network is fed and run on this machine: input normalization, device and precision.

Training and inference both come here, so that a model sees the same input scaling and runs at
the same precision whichever of them runs it.

- **Normalization**: images are scaled to 0..1, then ``(x - mean) / std``. A checkpoint records
  the pair it was trained with; the shapes use :data:`IDENTITY` (white on black, 0..1 as is),
  photos and pretrained trunks :data:`IMAGENET`.
- **Device**: ``auto`` is the GPU when there is one.
- **Cores**: on a shared app, training and serving can be given cores of their own
  (:func:`split_cores`, :func:`pin_this_thread`, :func:`train_on`), so that a class's requests do not slow the run;
  a request's prediction can be given fewer threads than the cores (:func:`use_threads`).
- **Precision**: :func:`autocast_dtype`'s ``auto`` is bf16 autocast on CUDA (fp16 where bf16 is
  missing) and on CPUs with native bf16 (AVX512-BF16/AMX), fp32 elsewhere: on CPUs without native
  bf16 it is emulated and was measured many times slower than fp32 (BENCHMARKS.md). Inference checks
  that choice against fp32 on a probe image; a training run with ``auto`` times its first steps in
  fp32 and in bf16 and keeps the faster (:mod:`segdemo.engine.precision`).

torch is imported inside the functions, not with this module: the data sources and the app's page
refer to the normalizations before torch is loaded.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

IDENTITY = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def normalize(images: torch.Tensor, normalization: dict | None) -> torch.Tensor:
    """``(N, 3, H, W)`` uint8 images as the network's float input: ``(x / 255 - mean) / std``.

    ``normalization`` is a checkpoint's ``{"mean": [...], "std": [...]}``; None means
    :data:`IDENTITY` (checkpoints written before it was recorded)."""
    import torch

    normalization = normalization or IDENTITY
    mean = torch.tensor(normalization["mean"], dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(normalization["std"], dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return images.to(torch.float32, copy=True).div_(255.0).sub_(mean).div_(std)


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """The device ``name`` names (``auto``: CUDA when available, else the CPU); under torchrun,
    ``local_rank`` picks this process's GPU. Asking for CUDA without a GPU is a settings error."""
    import torch

    from .errors import SettingsError

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(f"device {name!r} was asked for but no GPU is available")
        if local_rank is not None and device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def process_cores() -> set[int] | None:
    """The cores this process may run on (its affinity, which taskset or a container may have
    narrowed), or None where the platform does not say (macOS, Windows)."""
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def core_count() -> int:
    """How many cores this process may use: its affinity's, else the machine's."""
    cores = process_cores()
    return len(cores) if cores else os.cpu_count() or 1


def split_cores(serving: int) -> tuple[set[int], set[int]] | None:
    """This process's cores as ``(serving, training)``: the first ``serving`` for answering
    requests, the rest for a training run; None where that leaves training no core (or the
    platform cannot pin threads)."""
    cores = process_cores()
    if serving < 1 or not cores:
        return None
    cores = sorted(cores)
    if len(cores) <= serving:
        return None
    return set(cores[:serving]), set(cores[serving:])


def pin_this_thread(cores: set[int]) -> None:
    """Keep the calling thread (and the threads it starts from now on, which inherit it) on
    ``cores``. On Linux an affinity set through pid 0 is the calling thread's alone."""
    os.sched_setaffinity(0, cores)


def train_on(cores: set[int] | None, threads: int | None = None) -> None:
    """Make the calling thread a training run's: keep it to ``cores`` (None: the process's), then
    give torch ``threads`` threads (default: one per core it keeps to; None: torch's default).
    Pinned first, so that the OpenMP team torch starts here inherits the cores."""
    if cores:
        pin_this_thread(cores)
    threads = threads or (len(cores) if cores else None)
    if threads:
        use_threads(threads)  # OpenMP: applies to this thread's parallel regions


def synchronize(device) -> None:
    """Wait for ``device``'s queued work: CUDA calls return before they finish, so a clock read
    without waiting times only the launches. Nothing to wait for on a CPU."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class DeviceClock:
    """Wall time of work on ``device``, synchronized at both ends (see :func:`synchronize`): a
    training step of the precision trial, an inference path on the probe image."""

    def __init__(self, device):
        self.device = device
        self._start = 0.0

    def start(self) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def stop(self) -> float:
        synchronize(self.device)
        return time.perf_counter() - self._start


def use_threads(count: int) -> None:
    """Give torch ``count`` threads in the calling thread (OpenMP keeps the number per thread),
    unless it has that many already: each change also empties oneDNN's cache of prepared kernels
    (the next 192×192 prediction of the default U-Net took 2.7 ms more CPU), so a thread keeps its
    number until told another."""
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


def cpu_has_native_bf16() -> bool:
    """True where oneDNN has bf16 instructions (AVX512-BF16/AMX); elsewhere bf16 is emulated."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or None for plain fp32 (see the module
    docstring for ``auto``). fp16 on a CPU is a settings error."""
    import torch

    from .errors import SettingsError

    if precision not in PRECISIONS:
        raise SettingsError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise SettingsError("fp16 needs a GPU; use bf16 or fp32 on the CPU")
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None
