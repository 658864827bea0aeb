"""Torch training machinery shared by the torch-based trainers (text now, images later).

Nothing here knows about text: a task hands :func:`train_loop` a model, two
map-style datasets, collate functions that yield ``dict`` batches with a
``labels`` tensor, and (optionally) a ``forward(model, inputs) -> logits``.

The loop is rank-aware: when ``torch.distributed`` is initialised it wraps the
model in ``DistributedDataParallel``, shards training data with a
``DistributedSampler``, evaluates and talks to the manager on rank 0 only, and
broadcasts rank 0's prune decision so every rank stops at the same step.

``torch`` is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from hpsearch.trainers._base import NonFiniteLoss, TrialContext, TrialPruned

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "EvalResult",
    "LoopResult",
    "loop_metrics",
    "store_curve",
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
    "seed_everything",
    "select_device",
    "train_loop",
    "training_loss",
]


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


#: Settings that are switches of the run, not hyperparameters: never searched.
_NOT_TUNABLE = frozenset({"verify_ranks"})
#: Names of the shared tunables (part of each torch trainer's ``tunable`` set).
TORCH_TUNABLES: frozenset[str] = frozenset(TorchTrainingSettings.model_fields) - _NOT_TUNABLE

#: Study objective name -> key of the metric reported for it.
OBJECTIVES: dict[str, str] = {
    "accuracy": "accuracy",
    "f1_macro": "f1_macro",
    "loss": "val_loss",
    "val_loss": "val_loss",
}


# ---------------------------------------------------------------- seeds and devices


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class _Dist:
    active: bool
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def current() -> _Dist:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return _Dist(True, dist.get_rank(), dist.get_world_size())
        return _Dist(False)


def select_device(gpus: float) -> torch.device:
    """``cuda`` (this rank's ``LOCAL_RANK`` under DDP) when GPUs were given and exist, else cpu."""
    import os

    import torch

    if gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


# ---------------------------------------------------------------- optimizers and schedules


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices (ndim >= 2) only, never on biases or norm scales."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


OptimizerFactory = Callable[[list[dict[str, Any]], TorchTrainingSettings, "torch.device"], Any]


def _fused(device: torch.device) -> bool:
    # The fused kernels exist for CUDA and (torch >= 2.4) CPU; on CPU they are ~8x faster.
    return device.type in {"cuda", "cpu"}


def _adam(groups: list[dict[str, Any]], s: TorchTrainingSettings, device: torch.device) -> Any:
    import torch

    return torch.optim.Adam(groups, lr=s.lr, fused=_fused(device))


def _adamw(groups: list[dict[str, Any]], s: TorchTrainingSettings, device: torch.device) -> Any:
    import torch

    return torch.optim.AdamW(groups, lr=s.lr, fused=_fused(device))


def _sgd(groups: list[dict[str, Any]], s: TorchTrainingSettings, device: torch.device) -> Any:
    import torch

    return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum)


#: ``optimizer`` setting -> factory(param_groups, settings, device).
OPTIMIZERS: dict[str, OptimizerFactory] = {"adam": _adam, "adamw": _adamw, "sgd": _sgd}


def build_optimizer(
    model: nn.Module, settings: TorchTrainingSettings, *, device: torch.device
) -> torch.optim.Optimizer:
    """The optimizer named by ``settings.optimizer`` over ``model``'s trainable parameters."""
    groups = _parameter_groups(model, settings.weight_decay)
    return OPTIMIZERS[settings.optimizer](groups, settings, device)


#: ``lr_schedule`` setting -> multiplier as a function of progress after warmup (0 to 1).
SCHEDULES: dict[str, Callable[[float], float]] = {
    "linear": lambda progress: max(0.0, 1.0 - progress),
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))),
    "constant": lambda progress: 1.0,
}


def build_scheduler(
    optimizer: torch.optim.Optimizer, settings: TorchTrainingSettings, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup_ratio`` of ``total_steps``, then ``lr_schedule``."""
    import torch

    warmup = int(round(settings.warmup_ratio * total_steps))
    decay = SCHEDULES[settings.lr_schedule]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return decay((step - warmup) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------- loss


def l1_weights(model: nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the L1 penalty covers: trainable weight matrices/tables (ndim >= 2)."""
    return [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]


def l1_penalty(weights: Iterable[torch.Tensor], l1: float) -> torch.Tensor:
    """λ·Σ|w| over ``weights`` (a zero tensor when λ is 0)."""
    import torch

    weights = list(weights)
    if l1 == 0 or not weights:
        return torch.zeros((), device=weights[0].device if weights else None)
    return l1 * torch.stack([w.abs().sum() for w in weights]).sum()


def training_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    settings: TorchTrainingSettings,
    l1_params: Iterable[torch.Tensor] = (),
) -> torch.Tensor:
    """Cross-entropy with ``label_smoothing`` plus the L1 penalty: what the loop minimises."""
    import torch.nn.functional as F

    loss = F.cross_entropy(logits.float(), labels, label_smoothing=settings.label_smoothing)
    if settings.l1:
        loss = loss + l1_penalty(l1_params, settings.l1)
    return loss


def default_forward(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``model(**inputs)``, unwrapping a ``.logits`` attribute (Hugging Face outputs)."""
    out = model(**inputs)
    return getattr(out, "logits", out)


# ---------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    """Metrics of one evaluation pass (``val_loss`` is plain cross-entropy, no smoothing)."""

    val_loss: float
    accuracy: float
    f1_macro: float
    confusion: list[list[int]]
    n: int

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Scalar metrics, keys optionally prefixed (``test_``); val loss becomes ``<prefix>loss``."""
        loss_key = f"{prefix}loss" if prefix else "val_loss"
        return {
            loss_key: self.val_loss,
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}f1_macro": self.f1_macro,
        }


def _to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    collate_fn: Callable[[list[Any]], dict[str, torch.Tensor]],
    num_classes: int,
    batch_size: int = 64,
    device: torch.device | None = None,
    forward: Callable[[nn.Module, Mapping[str, torch.Tensor]], torch.Tensor] = default_forward,
) -> EvalResult:
    """Loss, accuracy, macro F1 and confusion matrix of ``model`` on ``dataset``."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import confusion_matrix, f1_score
    from torch.utils.data import DataLoader

    device = device or next(model.parameters()).device
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
    )
    was_training = model.training
    model.eval()
    loss_sum, preds, golds = 0.0, [], []
    with torch.inference_mode():
        for batch in loader:
            batch = _to_device(batch, device)
            labels = batch.pop("labels")
            with _autocast(device):
                logits = forward(model, batch)
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
            preds.append(logits.argmax(-1).cpu())
            golds.append(labels.cpu())
    model.train(was_training)
    y_pred = torch.cat(preds).numpy() if preds else []
    y_true = torch.cat(golds).numpy() if golds else []
    n = len(y_true)
    classes = list(range(num_classes))
    return EvalResult(
        val_loss=loss_sum / max(1, n),
        accuracy=float((y_pred == y_true).mean()) if n else 0.0,
        f1_macro=float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0))
        if n
        else 0.0,
        confusion=confusion_matrix(y_true, y_pred, labels=classes).tolist() if n else [],
        n=n,
    )


# ---------------------------------------------------------------- the loop


@dataclass
class LoopResult:
    """What :func:`train_loop` returns: final metrics, curve and timings."""

    metrics: dict[str, float]
    curve: list[dict[str, float]]
    confusion: list[list[int]]
    epochs_run: float
    steps: int
    time_train: float
    time_eval: float
    device: str
    #: Seconds from the trial's start (``ctx.started``) to the end of its first optimizer step.
    time_to_first_step: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def loop_metrics(result: LoopResult, ctx: TrialContext) -> dict[str, float]:
    """The metrics a torch trainer returns from :func:`train_loop`'s result.

    Final validation metrics (and the objective under its own name, e.g.
    ``loss``), ``train_loss``, ``epochs_run``, ``steps``, ``time_train`` and
    ``time_to_first_step``; the trainer adds its own timings and test metrics.
    """
    metrics = {
        k: result.metrics[k] for k in ("accuracy", "f1_macro", "val_loss", "train_loss") if k in result.metrics
    }
    if ctx.objective in result.metrics:  # e.g. "loss", the validation loss
        metrics[ctx.objective] = result.metrics[ctx.objective]
    metrics["epochs_run"] = result.epochs_run
    metrics["steps"] = float(result.steps)
    metrics["time_train"] = result.time_train
    if result.time_to_first_step is not None:
        metrics["time_to_first_step"] = result.time_to_first_step
    return metrics


def store_curve(ctx: TrialContext, result: LoopResult, label_names: Iterable[str], *, write: bool) -> None:
    """Keep the device and confusion matrix as attributes; with ``write`` (rank 0),
    the curve and confusion matrix as artifact files."""
    ctx.set_user_attr("device", result.device)
    ctx.set_user_attr("confusion_matrix", result.confusion)
    if write:
        out = ctx.artifact_dir
        (out / "curve.json").write_text(json.dumps(result.curve, indent=1))
        (out / "confusion_matrix.json").write_text(
            json.dumps({"labels": list(label_names), "matrix": result.confusion})
        )


def train_loop(
    model: nn.Module,
    train_dataset: Any,
    val_dataset: Any,
    settings: TorchTrainingSettings,
    ctx: TrialContext,
    *,
    num_classes: int,
    train_collate: Callable[[list[Any]], dict[str, torch.Tensor]],
    eval_collate: Callable[[list[Any]], dict[str, torch.Tensor]],
    forward: Callable[[nn.Module, Mapping[str, torch.Tensor]], torch.Tensor] = default_forward,
    device: torch.device | None = None,
    train_transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> LoopResult:
    """Train ``model``, evaluating and reporting ``ctx.objective`` each epoch or N steps.

    ``train_transform`` (e.g. image augmentation) gets each *training* batch,
    labels included, after it is moved to the device, and returns the batch
    to train on (labels may become soft ``(N, classes)`` targets, as with
    mixup). Evaluation batches never pass through it.

    After each report the manager's prune decision is fetched (rank 0) and
    broadcast; on "prune" :class:`TrialPruned` is raised on every rank. The curve
    so far is kept in ``ctx.user_attrs["curve"]`` and ``["epochs_run"]``.

    Raises:
        TrialPruned: the manager decided to stop the trial.
        ValueError: ``ctx.objective`` is not one of :data:`OBJECTIVES`.
    """
    import torch
    from torch.utils.data import DataLoader

    if ctx.objective not in OBJECTIVES:
        raise ValueError(
            f"objective {ctx.objective!r} is not reported by torch trainers; "
            f"expected one of {', '.join(OBJECTIVES)}"
        )
    metric_key = OBJECTIVES[ctx.objective]
    torch.set_num_threads(ctx.resources.threads)
    dist_info = _Dist.current()
    device = device or select_device(ctx.resources.gpus)
    model.to(device)
    train_model: nn.Module = model
    sampler = None
    if dist_info.active:
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data.distributed import DistributedSampler

        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        sampler = DistributedSampler(
            train_dataset,
            num_replicas=dist_info.world_size,
            rank=dist_info.rank,
            shuffle=True,
            seed=settings.seed,
        )
    generator = torch.Generator().manual_seed(settings.seed)
    train_loader = DataLoader(
        train_dataset,
        batch_size=settings.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=train_collate,
        generator=generator,
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = max(1, len(train_loader))
    total_steps = steps_per_epoch * settings.epochs
    optimizer = build_optimizer(model, settings, device=device)
    scheduler = build_scheduler(optimizer, settings, total_steps)
    l1_params = l1_weights(model) if settings.l1 else []
    every = settings.report_every_steps

    curve: list[dict[str, float]] = []
    last_eval: EvalResult | None = None
    time_eval = 0.0
    step = 0
    loss_sum, loss_n = 0.0, 0
    started = time.perf_counter()
    first_step: float | None = None

    def checkpoint(report_step: int) -> None:
        nonlocal time_eval, last_eval, loss_sum, loss_n
        t0 = time.perf_counter()
        record: dict[str, float] = {
            "step": report_step,
            "global_step": step,
            "epoch": round(step / steps_per_epoch, 4),
            "train_loss": loss_sum / max(1, loss_n),
            "lr": optimizer.param_groups[0]["lr"],
        }
        loss_sum, loss_n = 0.0, 0
        if dist_info.is_main:
            last_eval = evaluate(
                model,
                val_dataset,
                collate_fn=eval_collate,
                num_classes=num_classes,
                batch_size=max(settings.batch_size, 64),
                device=device,
                forward=forward,
            )
            record.update(last_eval.metrics())
            curve.append(record)
            ctx.set_user_attr("curve", curve)
            ctx.set_user_attr("epochs_run", record["epoch"])
            ctx.report(record[metric_key], report_step)
        time_eval += time.perf_counter() - t0
        # Every rank asks: rank 0 gets the manager's decision and it is
        # broadcast inside should_prune(), so all ranks stop together.
        if ctx.should_prune():
            raise TrialPruned(f"pruned after step {report_step} ({record['epoch']} epochs)")

    train_model.train()
    for epoch in range(settings.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for batch in train_loader:
            batch = _to_device(batch, device)
            if train_transform is not None:
                batch = train_transform(batch)
            labels = batch.pop("labels")
            with _autocast(device):
                logits = forward(train_model, batch)
            loss = training_loss(logits, labels, settings, l1_params)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise NonFiniteLoss(step + 1, loss_value)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            if step == 1:
                first_step = time.perf_counter() - ctx.started
            loss_sum += loss_value
            loss_n += 1
            if every is not None and step % every == 0:
                checkpoint(step)
        if every is None:
            checkpoint(epoch + 1)
    if every is not None and step % every != 0:
        checkpoint(step)

    if dist_info.active and settings.verify_ranks:  # off the hot path unless asked for
        import hashlib

        flat = torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])
        ctx.set_user_attr("weights_checksum", hashlib.sha256(flat.numpy().tobytes()).hexdigest())
    final = curve[-1] if curve else {}
    metrics = {k: float(v) for k, v in final.items() if k not in {"step", "global_step", "lr"}}
    if metric_key in metrics:
        metrics[ctx.objective] = metrics[metric_key]  # e.g. objective "loss" -> val_loss
    metrics["epochs_run"] = step / steps_per_epoch
    metrics["steps"] = float(step)
    return LoopResult(
        metrics=metrics,
        curve=curve,
        confusion=last_eval.confusion if last_eval is not None else [],
        epochs_run=step / steps_per_epoch,
        steps=step,
        time_train=time.perf_counter() - started - time_eval,
        time_eval=time_eval,
        device=str(device),
        time_to_first_step=first_step,
    )
