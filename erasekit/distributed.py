"""Data parallelism across processes started by ``accelerate launch --multi_gpu`` or ``torchrun``.

The process group is initialised from the launcher's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``): NCCL on CUDA, gloo on CPU (accelerate itself only starts multi-CPU groups through
MPI/oneCCL, hence this small module). A group someone else initialised (e.g. accelerate) is reused. Single-process
runs never touch ``torch.distributed``.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init() -> bool:
    """Join the launcher's process group if there is one; returns whether this run is distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Only the main process writes files and shows progress bars."""
    return rank() == 0


def shard(n: int) -> range:
    """This process's contiguous share of ``n`` global items (the first ``n % world`` ranks get one more)."""
    return range(*_bounds(n, rank()))


def all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    """Average ``tensors`` in place across processes (one flattened all-reduce)."""
    if world_size() == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def gather_cat(tensor: torch.Tensor, n: int) -> torch.Tensor:
    """Concatenate every process's :func:`shard` of an ``n``-item batch, in global order, on every process."""
    if world_size() == 1:
        return tensor
    sizes = [len(range(*_bounds(n, r))) for r in range(world_size())]
    padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])


def _bounds(n: int, r: int) -> tuple[int, int]:
    base, extra = divmod(n, world_size())
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)
