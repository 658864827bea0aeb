"""The torch training machinery shared by the text and image trainers.

``_settings`` (shared tunables, objectives), ``_devices`` (seeds, devices,
ranks), ``_optim`` (optimisers, schedules, loss), ``_eval`` (one evaluation
pass), ``_loop`` (the training loop), ``_checkpoint`` (the loop's checkpoints
and resume), ``_cost`` (cost metrics: size, latency, compute, memory) and
``_classifier`` (the trainer base that text and image subclass with their data
and model).
"""

from __future__ import annotations

from hpsearch.trainers.torch._checkpoint import RESTORED_ATTR, EpochSampler, LoopCheckpoints
from hpsearch.trainers.torch._classifier import ClassifierRun, TorchClassifierTrainer
from hpsearch.trainers.torch._cost import LATENCY_BATCHES, LATENCY_WARMUP, Latency, count_params, measure_latency
from hpsearch.trainers.torch._devices import DistInfo, seed_everything, select_device
from hpsearch.trainers.torch._eval import EvalResult, Forward, default_forward, evaluate
from hpsearch.trainers.torch._loop import (
    Batch,
    Collate,
    LoopResult,
    loop_metrics,
    store_curve,
    train_loop,
)
from hpsearch.trainers.torch._optim import (
    OPTIMIZERS,
    SCHEDULES,
    build_optimizer,
    build_scheduler,
    l1_penalty,
    l1_weights,
    training_loss,
)
from hpsearch.trainers.torch._settings import (
    COST_METRICS,
    FINAL_METRICS,
    OBJECTIVES,
    TORCH_TUNABLES,
    TorchTrainingSettings,
)

__all__ = [
    "Batch",
    "ClassifierRun",
    "Collate",
    "COST_METRICS",
    "DistInfo",
    "EpochSampler",
    "EvalResult",
    "FINAL_METRICS",
    "Forward",
    "LATENCY_BATCHES",
    "LATENCY_WARMUP",
    "Latency",
    "LoopCheckpoints",
    "LoopResult",
    "OBJECTIVES",
    "OPTIMIZERS",
    "RESTORED_ATTR",
    "SCHEDULES",
    "TORCH_TUNABLES",
    "TorchClassifierTrainer",
    "TorchTrainingSettings",
    "build_optimizer",
    "build_scheduler",
    "count_params",
    "default_forward",
    "evaluate",
    "l1_penalty",
    "l1_weights",
    "loop_metrics",
    "measure_latency",
    "seed_everything",
    "select_device",
    "store_curve",
    "train_loop",
    "training_loss",
]
