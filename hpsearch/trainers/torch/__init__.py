"""The torch training machinery shared by the text and image trainers."""

from __future__ import annotations

from hpsearch.trainers.torch._loop import (
    EvalResult,
    LoopResult,
    loop_metrics,
    store_curve,
    OBJECTIVES,
    OPTIMIZERS,
    SCHEDULES,
    TORCH_TUNABLES,
    TorchTrainingSettings,
    build_optimizer,
    build_scheduler,
    default_forward,
    evaluate,
    l1_penalty,
    l1_weights,
    seed_everything,
    select_device,
    train_loop,
    training_loss,
)

__all__ = [
    "EvalResult",
    "LoopResult",
    "OBJECTIVES",
    "OPTIMIZERS",
    "SCHEDULES",
    "TORCH_TUNABLES",
    "TorchTrainingSettings",
    "build_optimizer",
    "build_scheduler",
    "default_forward",
    "evaluate",
    "l1_penalty",
    "l1_weights",
    "loop_metrics",
    "seed_everything",
    "select_device",
    "store_curve",
    "train_loop",
    "training_loss",
]
