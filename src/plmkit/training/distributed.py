"""Distributed helpers: process-group set-up from torchrun's environment, DDP / FSDP wrapping, reductions.

``torchrun --nproc_per_node N -m plmkit pretrain ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``;
:func:`init_distributed` starts the process group (gloo on CPU, NCCL on GPU). The model is wrapped from
outside (torchtitan ``parallelize_fn``): :func:`wrap_model` applies DDP (``DistributedDataParallel``) or
FSDP2 (``torch.distributed.fsdp.fully_shard``, Zhao et al. 2023 "PyTorch FSDP").
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Start the process group if launched by torchrun with WORLD_SIZE > 1 (idempotent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return current()


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj) -> list:
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def wrap_model(model: torch.nn.Module, kind: str, device: torch.device, info: DistInfo) -> torch.nn.Module:
    """DDP- or FSDP2-wrap ``model`` (already on ``device``) for a world of ``info.world_size`` processes."""
    if not info.enabled:
        return model
    if kind == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (info.world_size,))
        # Root-level sharding only: objectives may call model.head_logits(...) after the forward, so the
        # parameters stay gathered until backward (reshard_after_forward=False). FSDP2 finds the output
        # tensors to hook its gradient reduce-scatter on by walking tuples, dicts and dataclasses: the
        # model's output must be one of those.
        fully_shard(model, mesh=mesh, reshard_after_forward=False)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    # Buffers (position ids, rotary tables) are constants here: no need to broadcast them every forward.
    return DDP(model, device_ids=ids, broadcast_buffers=False)
