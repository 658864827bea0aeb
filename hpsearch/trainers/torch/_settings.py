"""The tunables every torch trainer shares, and the metrics a study may optimise.

:data:`OBJECTIVES` are validation metrics, reported each epoch (or every N steps) so
a pruner can act on them; :data:`COST_METRICS` are measured once, after training
(:mod:`~hpsearch.trainers.torch._cost`), and appear only in the final metrics.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["COST_METRICS", "FINAL_METRICS", "OBJECTIVES", "TORCH_TUNABLES", "TorchTrainingSettings"]


class TorchTrainingSettings(BaseModel):
    """Tunables common to every torch trainer (mix into a trainer's ``Settings``).

    Every field may be searched; a trial's sampled value overrides the setting.
    """

    lr: float = Field(5e-5, gt=0, description="Peak learning rate.")
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    weight_decay: float = Field(0.0, ge=0, description="L2 (adam, sgd) / decoupled (adamw).")
    l1: float = Field(0.0, ge=0, description="λ of the λ·Σ|w| penalty added to the loss.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(3, ge=1)
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="Share of steps warming up.")
    lr_schedule: Literal["linear", "cosine", "constant"] = "linear"
    grad_clip: float | None = Field(1.0, gt=0, description="Max gradient norm; None: off.")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    seed: int = 0
    report_every_steps: int | None = Field(
        None, ge=1, description="Evaluate and report every N optimizer steps; None: each epoch."
    )
    verify_ranks: bool = Field(
        False,
        description="Data-parallel check: hash every rank's final weights (SHA-256, all weights copied "
        "to the CPU) into the trial's `ranks` attribute. Costs a full copy of the model per trial.",
    )
    latency_batch_size: int = Field(
        32, ge=1, description="Batch size of the `latency_ms` measurement (the same for every trial)."
    )


#: Settings that are switches of the run, not hyperparameters: never searched.
_NOT_TUNABLE = frozenset({"verify_ranks", "latency_batch_size"})
#: Names of the shared tunables (part of each torch trainer's ``tunable`` set).
TORCH_TUNABLES: frozenset[str] = frozenset(TorchTrainingSettings.model_fields) - _NOT_TUNABLE

#: Study objective name -> key of the validation metric reported for it each epoch (or N steps).
OBJECTIVES: dict[str, str] = {
    "accuracy": "accuracy",
    "f1_macro": "f1_macro",
    "loss": "val_loss",
    "val_loss": "val_loss",
}

#: Cost metrics, measured once after training on rank 0 -> what each one is.
COST_METRICS: dict[str, str] = {
    "params": "parameters of the trained model, trainable and frozen",
    "latency_ms": "inference milliseconds per validation example (eval mode, no_grad, after a warm-up)",
    "train_compute_s": "training seconds (time_train) times the workers, times the GPUs per worker on GPU",
    "peak_memory_mb": "CUDA: torch.cuda.max_memory_allocated; CPU: the worker process's peak RSS",
}

#: Every metric ``objective.metric`` may name for a torch trainer.
FINAL_METRICS: frozenset[str] = frozenset(OBJECTIVES) | frozenset(COST_METRICS)
