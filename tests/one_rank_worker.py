"""Train through the engine's distributed path in one process and record what happened (for
tests/test_cuda.py).

One GPU allows only a one-process NCCL group (two ranks on one GPU are refused by NCCL), and the
engine turns its distributed path off for one process (``DistributedContext.enabled`` is
``world_size > 1``). Here that path is kept on: the group is joined by the engine's own
:func:`~segdemo.engine.distributed.join_process_group` (NCCL on a GPU, gloo on the CPU), the model is
wrapped in DistributedDataParallel, and every collective the loop uses (stop flags, metric counts,
the mean loss, batch-norm buffers) goes through the group.

    python tests/one_rank_worker.py RECORD.json CONFIG_JSON   # MASTER_ADDR/MASTER_PORT set by the caller
"""
import json
import os
import sys

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from segdemo.engine import StepDone, TrainConfig
from segdemo.engine import setup as setup_module
from segdemo.engine.distributed import DistributedContext, join_process_group
from segdemo.engine.loop import Trainer


class OneRankContext(DistributedContext):
    """A one-process group with the distributed path on, as if torchrun had started one rank of many."""

    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return True

    @classmethod
    def from_env(cls, device_type: str) -> "OneRankContext":
        joined = join_process_group(device_type, 0)
        cls.backend = dist.get_backend()
        return cls(rank=0, world_size=1, local_rank=0, initialized_here=joined)


def main(record: str, config_json: str) -> None:
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    setup_module.DistributedContext = OneRankContext  # what build_setup creates the run's context from
    losses = []
    trainer = Trainer(TrainConfig.from_dict(json.loads(config_json)),
                      [lambda event: losses.append(event.loss) if isinstance(event, StepDone) else None])
    result = trainer.run()
    setup = trainer.setup
    with open(record, "w", encoding="utf-8") as file:
        json.dump({"backend": OneRankContext.backend, "reason": result.reason, "steps": result.steps,
                   "losses": losses, "device": str(setup.device),
                   "wrapped": isinstance(setup.trained, DistributedDataParallel),
                   "mean_dice": (result.last_metrics or {}).get("mean_dice"), "best_path": result.best_path,
                   "group_left": not dist.is_initialized()}, file)


if __name__ == "__main__":
    main(*sys.argv[1:3])
