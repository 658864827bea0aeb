"""Cost metrics of a trained model: size, inference latency, training compute and peak memory.

They cost the user nothing: the shared trainer measures them on rank 0 after training
(:data:`~hpsearch.trainers.torch._settings.COST_METRICS` says what each one is), so a study
can trade accuracy against ``latency_ms`` or ``params`` with no code of its own.

Latency is timed on the trained model in eval mode under ``torch.no_grad`` (and the same
autocast as evaluation), on the first :data:`LATENCY_BATCHES` validation batches of
``latency_batch_size`` examples, collated and on the device before the clock starts, after
:data:`LATENCY_WARMUP` untimed batches; CUDA is synchronised around the timed loop.

Peak memory on CUDA is ``torch.cuda.max_memory_allocated`` since :func:`reset_peak_memory`
(called when the trial starts); on the CPU it is the process's peak resident set size
(``getrusage``'s ``ru_maxrss``), which covers the interpreter and everything the process
ran before, other trials included. :data:`PEAK_MEMORY_SOURCE` names which one a trial got.
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpsearch.trainers.torch._devices import autocast, to_device
from hpsearch.trainers.torch._eval import Forward, default_forward

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "LATENCY_BATCHES",
    "LATENCY_WARMUP",
    "PEAK_MEMORY_SOURCE",
    "Latency",
    "count_params",
    "measure_latency",
    "peak_memory_mb",
    "reset_peak_memory",
    "train_compute_seconds",
]

#: Validation batches timed for ``latency_ms`` (fewer when the split is smaller).
LATENCY_BATCHES = 8
#: Untimed batches run first (kernels chosen, caches and allocator warm).
LATENCY_WARMUP = 2
#: Device type -> what ``peak_memory_mb`` measured there (the trial's ``peak_memory_source``).
PEAK_MEMORY_SOURCE: dict[str, str] = {
    "cuda": "torch.cuda.max_memory_allocated",
    "cpu": "process peak RSS (getrusage ru_maxrss)",
}


def count_params(model: nn.Module) -> int:
    """Every parameter of ``model``, trainable and frozen."""
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Latency:
    """One latency measurement: milliseconds per example, and how it was taken."""

    ms_per_example: float
    batch_size: int
    examples: int
    device: str


def _batches(dataset: Any, collate_fn: Any, batch_size: int, device: torch.device) -> list[tuple[dict[str, Any], int]]:
    """Up to :data:`LATENCY_BATCHES` batches (labels removed) on ``device``, with their sizes."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    out = []
    for batch in itertools.islice(loader, LATENCY_BATCHES):
        inputs = to_device(batch, device)
        labels = inputs.pop("labels")
        out.append((inputs, int(labels.shape[0])))
    return out


def _synchronize(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: nn.Module,
    dataset: Any,
    *,
    collate_fn: Any,
    batch_size: int,
    forward: Forward = default_forward,
    device: torch.device | None = None,
) -> Latency | None:
    """Inference milliseconds per example of ``model`` on ``dataset`` (None when it is empty).

    The model's train/eval mode is restored afterwards.
    """
    import torch

    device = device or next(model.parameters()).device
    batches = _batches(dataset, collate_fn, batch_size, device)
    if not batches:
        return None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(device):
            for i in range(LATENCY_WARMUP):
                forward(model, batches[i % len(batches)][0])
            _synchronize(device)
            t0 = time.perf_counter()
            for inputs, _ in batches:
                forward(model, inputs)
            _synchronize(device)
            elapsed = time.perf_counter() - t0
    finally:
        model.train(was_training)
    examples = sum(n for _, n in batches)
    return Latency(1000.0 * elapsed / examples, batch_size, examples, str(device))


def reset_peak_memory(device: torch.device) -> None:
    """Start counting ``peak_memory_mb`` afresh (CUDA; the CPU's process peak cannot be reset)."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: CUDA's allocator peak on a GPU, else the process's peak RSS."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def train_compute_seconds(time_train: float, *, device: torch.device, workers: int, gpus: float) -> float:
    """``time_train`` times the workers that trained, times the GPUs (or GPU share) of each on GPU."""
    per_worker = gpus if device.type == "cuda" and gpus > 0 else 1.0
    return time_train * workers * per_worker
