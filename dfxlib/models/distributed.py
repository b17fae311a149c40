"""One model on several processes: `torchrun` starts them, `setup()` joins them, and `train.fit` trains with
DistributedDataParallel over dfx's own seeded batches.

Every process draws the same global batch; process r keeps its share (`Dist.shard`), so the averaged
gradient is the whole batch's (for a model without batch norm, the same as one process with the whole batch).
Losses and counts are summed over processes, so every process sees the same validation loss; whether an epoch
is the best and whether to stop is decided on rank 0 and broadcast. Only rank 0 writes checkpoints, from the
unwrapped model (no `module.` prefix, so `dfx predict` reads them). Batch norm is synchronised only on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as td
from torch import nn


@dataclass(frozen=True)
class Dist:
    """This process's place among the processes training one model (rank 0 of 1 when alone)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """True on the process that writes (rank 0)."""
        return self.rank == 0

    def shard(self, batch: Any) -> Any:
        """This process's share of a batch (a tensor or a tuple of tensors sharing their first dimension): near
        equal, contiguous parts; a batch smaller than the number of processes is kept whole by every one."""
        if self.world == 1:
            return batch
        items = batch if isinstance(batch, (tuple, list)) else (batch,)
        if len(items[0]) < self.world:
            return batch
        part = tuple(torch.tensor_split(t, self.world)[self.rank] for t in items)
        return part if isinstance(batch, (tuple, list)) else part[0]

    def total(self, values: Sequence[float]) -> list[float]:
        """`values` summed over every process (float64)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=_comm_device())
        td.all_reduce(t)
        return t.tolist()

    def agree(self, flag: bool) -> bool:
        """Rank 0's `flag`, on every process."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)], device=_comm_device())
        td.broadcast(t, src=0)
        return bool(t.item())

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to train: `model` itself alone, else DistributedDataParallel around it (batch norm
        synchronised on CUDA). `model` keeps the weights: save it, not the wrapper. The graph is declared static,
        which lets the Siamese step run the shared network twice before one backward."""
        if self.world == 1:
            return model
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, static_graph=True)

    def barrier(self) -> None:
        if self.world > 1:
            td.barrier()


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if td.get_backend() == "nccl" else torch.device("cpu")


def current() -> Dist:
    """The processes this one trains with (`setup` joined them), or rank 0 of 1."""
    if td.is_available() and td.is_initialized():
        return Dist(rank=td.get_rank(), world=td.get_world_size())
    return Dist()


def setup() -> Dist:
    """Join the processes `torchrun` started (NCCL on CUDA, gloo on CPU; each process on its LOCAL_RANK's
    GPU); alone (no WORLD_SIZE above 1) nothing is done."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not td.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(gpu_index(int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()))
        td.init_process_group(backend="nccl" if cuda else "gloo")
    return current()


def gpu_index(local_rank: int, visible: int) -> int:
    """The GPU of the process `local_rank` of a node that sees `visible` GPUs: the one at its rank when every
    process sees all of the node's GPUs (torchrun, submitit), the only one when the scheduler bound one GPU to
    each process; ValueError, saying so, when there are fewer GPUs than processes."""
    if visible == 1:
        return 0
    if local_rank >= visible:
        raise ValueError(f"process {local_rank} of this node sees {visible} GPU(s): start at most {visible} "
                         "processes per node (torchrun --nproc_per_node, dfx submit --tasks / --gpus)")
    return local_rank

