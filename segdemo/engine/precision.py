"""Which precision trains fastest on this machine: measured on the run's own first steps.

``precision="auto"`` used to be a rule (bf16 autocast on GPUs and on CPUs with native bf16). The rule
was wrong both ways on the project's machines: on a 2-core Xeon with AMX, bf16 made 23 % more steps
than fp32; on an H200 the small U-Nets trained 4–15 % *slower* in bf16 than in fp32/TF32. So a run
whose precision is ``auto`` now times its own first steps in each precision worth trying and keeps
the faster (:class:`PrecisionTrial`).

The trial costs almost nothing: its steps are ordinary training steps (autocast changes the
arithmetic, not what is learned), so only the slower precision's extra time on a few steps is
spent. Where bf16 would be emulated (a CPU without AVX512-BF16 or AMX, measured many times slower
than fp32) there is nothing to try and fp32 is used at once.
"""

from __future__ import annotations

import statistics

import torch

from ..runtime import autocast_dtype, cpu_has_native_bf16

WARMUP_STEPS = 1   # per precision, not timed: the first step builds the kernels (oneDNN, cuDNN)
TIMED_STEPS = 3    # per precision, timed; the median decides


def precision_name(dtype: torch.dtype | None) -> str:
    """``"fp32"``, ``"bfloat16"`` … as the run's events and the CLI say it."""
    return str(dtype or "fp32").replace("torch.", "")


def candidates(device: torch.device, precision: str) -> list[torch.dtype | None]:
    """The autocast dtypes worth timing for ``precision`` on ``device`` (None is fp32): one entry
    where there is no choice (a named precision, or a CPU that would emulate bf16)."""
    if precision != "auto":
        return [autocast_dtype(device, precision)]
    if device.type == "cuda":
        # fp16 would need a gradient scaler switched on and off mid-run; bf16 is the GPU's candidate.
        return [None, torch.bfloat16] if torch.cuda.is_bf16_supported() else [None]
    if device.type == "cpu" and cpu_has_native_bf16():
        return [None, torch.bfloat16]
    return [None]


class PrecisionTrial:
    """Hands out the dtype of each of a run's first steps, round-robin over ``options``, and keeps
    the one whose timed steps were fastest.

    Use: ``dtype = trial.next()`` before a step, ``trial.record(seconds)`` after it; once
    :attr:`decided` is True, :attr:`choice` is the precision to keep. ``agree`` turns this rank's
    median step times into everyone's (under torchrun all ranks must choose the same).
    """

    def __init__(self, options: list[torch.dtype | None], agree=None):
        self.options = list(options)
        self.times: dict[torch.dtype | None, list[float]] = {option: [] for option in self.options}
        self.agree = agree
        self._turn = 0
        self.choice: torch.dtype | None = self.options[0] if len(self.options) == 1 else None
        self.decided = len(self.options) == 1
        self.medians: dict[str, float] = {}

    def next(self) -> torch.dtype | None:
        """The dtype the next step should use."""
        if self.decided:
            return self.choice
        return self.options[self._turn % len(self.options)]

    def record(self, seconds: float) -> None:
        """The step just taken with :meth:`next`'s dtype took ``seconds``."""
        if self.decided:
            return
        option = self.options[self._turn % len(self.options)]
        self.times[option].append(seconds)
        self._turn += 1
        if all(len(t) >= WARMUP_STEPS + TIMED_STEPS for t in self.times.values()):
            medians = [statistics.median(self.times[o][WARMUP_STEPS:]) for o in self.options]
            if self.agree is not None:
                medians = self.agree(medians)
            best = min(range(len(self.options)), key=medians.__getitem__)
            self.choice = self.options[best]
            self.medians = {precision_name(o): m for o, m in zip(self.options, medians)}
            self.decided = True
