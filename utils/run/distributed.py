"""Data-parallel training across processes started by torchrun (used by Clothing.py; docs/clothing1m.md, "Train").

A plain `python Clothing.py` is world size 1: no process group, every helper is a no-op.
Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set) each process drives one GPU (NCCL) or
runs on the CPU (gloo). Evaluation and extraction are sharded so that every example is
predicted exactly once, then gathered back into the full order on every rank, so that all
ranks take the same decisions. Only rank 0 writes files and logs.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from utils.engine import select_device
from utils.errors import UserError

STOP_POLL_EVERY = 8  # batches between collective checks for a stop request under torchrun (each costs a sync)


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def single_process(device_name: str = "auto") -> DistContext:
    """A run of one process (main.py): world size 1, the device --device names."""
    return DistContext(0, 1, 0, 1, select_device(device_name))


def init_distributed(device_name: str = "auto", timeout_minutes: int = 60) -> DistContext:
    """Read torchrun's environment, pick this process's device and join the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    if world_size == 1:
        return single_process(device_name)
    device = select_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)  # one GPU per process, whatever --device names
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise UserError(f"distributed runs support CUDA (NCCL) or CPU (gloo), not {device.type}; "
                        f"pass --device cpu or run a single process")
    if dist.is_initialized():  # already joined (e.g. a script that calls Clothing.main)
        return DistContext(rank, world_size, local_rank, local_world_size, device)
    # A long timeout: rank 0 writes checkpoints while the others wait at the next collective.
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistContext(rank, world_size, local_rank, local_world_size, device)


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all ranks, in place; returns it."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on at least one (a stop request must be taken by all)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    return bool(all_reduce_sum(value).item() > 0)


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. a download into a shared cache), then the others."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


def gather_objects(value: object) -> list[object]:
    """`value` of every rank, in rank order, on every rank (a list of one without a process group)."""
    if world_size() == 1:
        return [value]
    gathered: list[object] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def shard_indices(n: int, rank: int, world: int) -> np.ndarray:
    """Positions 0..n-1 this rank handles: rank, rank+world, ... (every position exactly once overall)."""
    return np.arange(rank, n, world, dtype=np.int64)


def gather_sharded(local: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of `shard_indices`: every rank's values of its shard, placed back in full order on all ranks.

    `local` holds, in order, the values for `shard_indices(n, rank, world)`; the result has `n` rows.
    """
    world = world_size()
    if world == 1:
        return local
    longest = -(-n // world)
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[:len(local)] = local
    pieces = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(pieces, padded)
    full = torch.empty((n, *local.shape[1:]), dtype=local.dtype, device=local.device)
    for rank, piece in enumerate(pieces):
        count = len(shard_indices(n, rank, world))
        full[rank::world] = piece[:count]
    return full


def shard_for_training(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's part of one epoch's order, padded by wrapping around so all ranks take as many steps.

    Equal step counts are required by DDP (a rank with one batch more would wait forever); the
    padding repeats at most world - 1 examples per epoch, as torch's DistributedSampler does.
    """
    if world == 1:
        return order
    total = -(-len(order) // world) * world
    padded = np.concatenate([order, order[:total - len(order)]]) if total > len(order) else order
    return padded[rank::world]


def wrap_model(model: nn.Module, context: DistContext, sync_batchnorm: bool) -> nn.Module:
    """DistributedDataParallel when world > 1 (SyncBatchNorm on CUDA on request); the model itself otherwise."""
    if not context.distributed:
        return model
    if sync_batchnorm and context.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's BatchNorm statistics (the ones rank 0 saves) before evaluating."""
    if not dist.is_initialized():
        return
    for buffer in unwrap_model(model).buffers():
        dist.broadcast(buffer, src=0)
