"""PyTorch distributed (torchrun) for the bundles' ``multi_gpu_train.yaml`` overrides: one process per GPU (NCCL)
or per CPU process (gloo); rank 0 alone logs and writes (every volgan handler asks ``is_rank_zero``)."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from monai.utils import set_determinism

__all__ = ["rank", "is_rank_zero", "distributed_device", "init_distributed", "join_if_launched", "close_distributed",
           "ddp"]


def rank() -> int:
    """This process's rank (0 without torch.distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_rank_zero() -> bool:
    """Whether this process logs and writes files (always true without torch.distributed)."""
    return rank() == 0


def distributed_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` under torchrun on GPUs, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init_distributed(seed: Any = None) -> int:
    """Join the torchrun process group (NCCL on GPUs, gloo on CPUs), select this rank's GPU, and seed this rank
    with ``seed + rank`` (``monai.utils.set_determinism``) so ranks draw different crops; returns the rank."""
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(distributed_device())
    if seed is not None:
        set_determinism(seed=int(seed) + rank())
    return rank()


def join_if_launched() -> int:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1 in the environment), else nothing:
    the bundles' ``inference.yaml`` runs as one process or sharded (``torchrun --nproc_per_node N -m monai.bundle
    run ...``) without an override. Returns the rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        init_distributed()
    return rank()


def close_distributed() -> None:
    """Wait for every rank, then leave the process group (the end of a multi-GPU run)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def ddp(network: torch.nn.Module, device: Any) -> torch.nn.Module:
    """``network`` on ``device`` wrapped in ``DistributedDataParallel`` (device ids on GPUs only)."""
    net = network.to(device)
    ids = [torch.device(device)] if torch.device(device).type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
