"""Running the same training under ``torchrun --nproc_per_node N``.

:class:`DistributedContext` reads torchrun's environment; with one process everything is a
no-op, so the loop has a single code path. NCCL is used on GPUs, gloo on CPUs; only rank 0 writes
checkpoints and logs; metric counts are summed across ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_type: str) -> "DistributedContext":
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return cls(rank, world_size, local_rank, join_process_group(device_type, local_rank))

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks (in place, returned)."""
        if not self.enabled:
            return tensor
        if dist.get_backend() == "nccl" and tensor.device.type == "cpu":  # NCCL reduces GPU tensors only
            reduced = tensor.cuda()
            dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
            tensor.copy_(reduced.cpu())
        else:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def mean(self, value: float, device) -> float:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        self.all_reduce_sum(tensor)
        return float(tensor.item() / self.world_size)

    def mean_of_ranks(self, values: list[float]) -> list[float]:
        """Each of ``values`` averaged over ranks (so that every rank decides alike)."""
        if not self.enabled:
            return list(values)
        tensor = self.all_reduce_sum(torch.tensor(values, dtype=torch.float64))
        return (tensor / self.world_size).tolist()

    def sync_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's buffers (batch-norm statistics) to every rank, so all ranks hold the same
        model (DDP keeps gradients in step, but each rank updates its own running statistics)."""
        if self.enabled:
            for buffer in model.buffers():
                dist.broadcast(buffer.data, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def join_process_group(device_type: str, local_rank: int) -> bool:
    """Join the process group that torchrun's environment describes (NCCL on GPUs, gloo on CPUs),
    unless this process is in one already; True when it joined here (and so leaves it in ``close``).

    Separate from :meth:`DistributedContext.from_env` so that a one-process group (the only NCCL run
    a single GPU allows) can be tested through the same call (``tests/one_rank_worker.py``)."""
    if dist.is_initialized():
        return False
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return True
