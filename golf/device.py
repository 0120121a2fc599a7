"""Devices, precision and processes: which device a run uses, its autocast, and the torchrun process group.

One module for what the trainer, evaluation, TTT and `golf run` all need, so none of them imports another
for it (evaluation used to import `autocast` from the trainer). Nothing here knows about models or data.

- `pick_device(name)`: "auto" is CUDA when there is one (the rank's own GPU under torchrun), else CPU.
- `autocast(device)`: bf16 autocast on CUDA, as the baseline trains and scores; CPU runs in float32 (the
  same code path with different numerics, so a CPU number is not a GPU number).
- `init_distributed(device)` / `Dist`: rank, world size and local rank, from torchrun's environment.
"""

from __future__ import annotations

import os
import platform
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from golf.errors import GolfError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the torchrun process group if launched by torchrun (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise GolfError("train.device=cuda but no CUDA device is available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def autocast(device: torch.device):
    """bf16 autocast on CUDA; CPU runs in float32 (same code path, different numerics)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def device_name(device: torch.device) -> str:
    """What result.json's `env.device` says: the GPU's name, or the CPU and its core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
