"""Seeds, devices and the data-parallel rank of the running process."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["DistInfo", "autocast", "seed_everything", "select_device", "to_device"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a ``torch.distributed`` group (inactive: rank 0 of 1)."""

    active: bool
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def current() -> DistInfo:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return DistInfo(True, dist.get_rank(), dist.get_world_size())
        return DistInfo(False)


def select_device(gpus: float) -> torch.device:
    """``cuda`` (this rank's ``LOCAL_RANK`` under DDP) when GPUs were given and exist, else cpu."""
    import os

    import torch

    if gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Every tensor of ``batch`` moved to ``device`` (non-blocking)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on a CUDA device that supports it, else a no-op."""
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
