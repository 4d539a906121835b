"""Data-parallel training under `torchrun`: gloo on CPU, nccl on GPU.

Without torchrun's environment everything here degrades to a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessGroup:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start(device: str) -> ProcessGroup:
    """Join torchrun's process group if launched by it; a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessGroup(0, 1, 0)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return ProcessGroup(dist.get_rank(), world_size, local_rank)


def barrier(group: ProcessGroup) -> None:
    if group.distributed:
        dist.barrier()


def broadcast_flag(group: ProcessGroup, flag: bool) -> bool:
    """Rank 0's boolean, seen by every rank (so all stop together)."""
    if not group.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.broadcast(value, src=0)
    return bool(value.item())


def finish(group: ProcessGroup) -> None:
    if group.distributed and dist.is_initialized():
        dist.destroy_process_group()
