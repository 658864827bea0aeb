"""The training loop shared by the torch-based trainers.

Nothing here knows about text or images: a task hands :func:`train_loop` a
model, two map-style datasets, collate functions that yield ``dict`` batches
with a ``labels`` tensor, and (optionally) a ``forward(model, inputs) -> logits``.

The loop is rank-aware: when ``torch.distributed`` is initialised it wraps the
model in ``DistributedDataParallel``, shards training data across ranks
(:class:`~hpsearch.trainers.torch._checkpoint.EpochSampler`), evaluates and talks
to the manager on rank 0 only, and broadcasts rank 0's prune decision so every
rank stops at the same step.

It checkpoints itself at each report through ``ctx.save_checkpoint`` and, when the
trial continues a stopped one, restores everything from ``ctx.load_checkpoint()``
before training (:mod:`~hpsearch.trainers.torch._checkpoint`), so the resumed run
ends with the same weights and metrics as an uninterrupted one.

``torch`` is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpsearch.trainers._base import NonFiniteLoss, TrialContext, TrialPruned
from hpsearch.trainers.torch._checkpoint import EpochSampler, LoopCheckpoints
from hpsearch.trainers.torch._devices import DistInfo, autocast, select_device, to_device
from hpsearch.trainers.torch._eval import EvalResult, Forward, default_forward, evaluate
from hpsearch.trainers.torch._optim import (
    build_optimizer,
    build_scheduler,
    l1_weights,
    training_loss,
)
from hpsearch.trainers.torch._settings import FINAL_METRICS, OBJECTIVES, TorchTrainingSettings

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["Batch", "Collate", "LoopResult", "loop_metrics", "store_curve", "train_loop"]

#: A batch: named tensors, ``labels`` among them.
Batch = dict[str, "torch.Tensor"]
#: Turns a list of dataset items into a :data:`Batch`.
Collate = Callable[[list[Any]], Batch]


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
    #: Seconds spent writing checkpoints (not part of ``time_train``).
    time_checkpoint: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def loop_metrics(result: LoopResult, ctx: TrialContext) -> dict[str, float]:
    """The metrics a torch trainer returns from :func:`train_loop`'s result.

    Final validation metrics (and the objective under its own name, e.g.
    ``loss``), ``train_loss``, ``epochs_run``, ``steps``, ``time_train``,
    ``time_to_first_step`` and ``time_checkpoint`` (when checkpoints were saved);
    the trainer adds its own timings and test metrics.
    """
    metrics: dict[str, float] = {
        k: result.metrics[k] for k in ("accuracy", "f1_macro", "val_loss", "train_loss") if k in result.metrics
    }
    if ctx.objective in result.metrics:  # e.g. "loss", the validation loss
        metrics[ctx.objective] = result.metrics[ctx.objective]
    metrics["epochs_run"] = result.epochs_run
    metrics["steps"] = float(result.steps)
    metrics["time_train"] = result.time_train
    if result.time_to_first_step is not None:
        metrics["time_to_first_step"] = result.time_to_first_step
    if result.time_checkpoint:
        metrics["time_checkpoint"] = result.time_checkpoint
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


class _TrainLoop:
    """One trial's training run; :meth:`run` does the work, the constructor only stores."""

    def __init__(
        self,
        model: nn.Module,
        val_dataset: Any,
        settings: TorchTrainingSettings,
        ctx: TrialContext,
        num_classes: int,
        eval_collate: Collate,
        forward: Forward,
        train_transform: Callable[[Batch], Batch] | None,
    ) -> None:
        self.model, self.val_dataset, self.s, self.ctx = model, val_dataset, settings, ctx
        self.num_classes, self.eval_collate, self.forward = num_classes, eval_collate, forward
        self.train_transform = train_transform
        #: The validation metric reported for the objective; None for a cost metric
        #: (``latency_ms``...), measured once after training: nothing is reported each epoch.
        self.metric_key = OBJECTIVES.get(ctx.objective)
        self.curve: list[dict[str, float]] = []
        self.last_eval: EvalResult | None = None
        self.time_eval = 0.0
        self.step = 0
        #: The optimizer step of the last report (a resumed run starts at its checkpoint's).
        self.reported_step = 0
        self.loss_sum, self.loss_n = 0.0, 0
        self.first_step: float | None = None

    # ------------------------------------------------------------ set-up

    def setup(self, train_dataset: Any, train_collate: Collate, device: torch.device) -> None:
        """Place the model, wrap it for DDP, build loader, optimizer and schedule, and resume."""
        import torch
        from torch.utils.data import DataLoader

        self.dist, self.device = DistInfo.current(), device
        self.model.to(device)
        self.train_model = self._wrap()
        self.sampler = EpochSampler(
            len(train_dataset), seed=self.s.seed, rank=self.dist.rank, world_size=self.dist.world_size
        )
        self.loader = DataLoader(
            train_dataset,
            batch_size=self.s.batch_size,
            sampler=self.sampler,
            collate_fn=train_collate,
            generator=torch.Generator().manual_seed(self.s.seed),
            pin_memory=device.type == "cuda",
        )
        self.steps_per_epoch = max(1, len(self.loader))
        self.build_optimizer()
        self.l1_params = l1_weights(self.model) if self.s.l1 else []
        #: The stateful parts of the data path whose generators a checkpoint keeps.
        self.rng_holders = {
            "loader": self.loader.generator,
            "collate": train_collate,
            "transform": self.train_transform,
        }
        self.checkpoints = LoopCheckpoints(self)
        self.checkpoints.resume()

    def build_optimizer(self) -> None:
        """A fresh optimizer and learning-rate schedule over the model."""
        self.optimizer = build_optimizer(self.model, self.s, device=self.device)
        self.scheduler = build_scheduler(self.optimizer, self.s, self.steps_per_epoch * self.s.epochs)

    def _wrap(self) -> nn.Module:
        """The model to train: DDP under torch.distributed (a resume loads into ``self.model``)."""
        if not self.dist.active:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        device = self.device
        return DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)

    # ------------------------------------------------------------ training

    def run(self) -> LoopResult:
        """Train every epoch, reporting each epoch or every ``report_every_steps`` steps.

        A resumed run starts at its checkpoint's step: the epoch it was in, after the
        batches already trained on.
        """
        self.started = time.perf_counter()
        every = self.s.report_every_steps
        self.train_model.train()
        first_epoch, skip = divmod(self.step, self.steps_per_epoch)
        for epoch in range(first_epoch, self.s.epochs):
            self.sampler.set_epoch(epoch, skip * self.s.batch_size if epoch == first_epoch else 0)
            for batch in self.loader:
                self._train_step(batch)
                if every is not None and self.step % every == 0:
                    self._checkpoint(self.step)
            if every is None:
                self._checkpoint(epoch + 1)
        if every is not None and self.step != self.reported_step:
            self._checkpoint(self.step)
        self._verify_ranks()
        return self._result()

    def _train_step(self, batch: Batch) -> None:
        """One optimizer step; a non-finite loss raises :class:`NonFiniteLoss` before it."""
        import torch

        batch = to_device(batch, self.device)
        if self.train_transform is not None:
            batch = self.train_transform(batch)
        labels = batch.pop("labels")
        with autocast(self.device):
            logits = self.forward(self.train_model, batch)
        loss = training_loss(logits, labels, self.s, self.l1_params)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLoss(self.step + 1, loss_value)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.s.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.s.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        if self.step == 1:
            self.first_step = time.perf_counter() - self.ctx.started
        self.loss_sum += loss_value
        self.loss_n += 1

    # ------------------------------------------------------------ reports

    def _checkpoint(self, report_step: int) -> None:
        """Evaluate and report on rank 0, ask (every rank) whether to stop, save a checkpoint, stop if told."""
        t0 = time.perf_counter()
        record: dict[str, float] = {
            "step": report_step,
            "global_step": self.step,
            "epoch": round(self.step / self.steps_per_epoch, 4),
            "train_loss": self.loss_sum / max(1, self.loss_n),
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        self.loss_sum, self.loss_n = 0.0, 0
        self.reported_step = self.step
        if self.dist.is_main:
            self._evaluate_and_report(record, report_step)
        self.time_eval += time.perf_counter() - t0
        # Every rank asks: rank 0 gets the manager's decision and it is
        # broadcast inside should_prune(), so all ranks stop together.
        stop = self.ctx.should_prune()
        # After the decision (so the report it follows is stored) and before stopping (a
        # PBT segment ends with a stop, and the next generation starts from this checkpoint).
        self.checkpoints.save(report_step)
        if stop:
            raise TrialPruned(f"pruned after step {report_step} ({record['epoch']} epochs)")

    def _evaluate_and_report(self, record: dict[str, float], report_step: int) -> None:
        self.last_eval = evaluate(
            self.model,
            self.val_dataset,
            collate_fn=self.eval_collate,
            num_classes=self.num_classes,
            batch_size=max(self.s.batch_size, 64),
            device=self.device,
            forward=self.forward,
        )
        record.update(self.last_eval.metrics())
        self.curve.append(record)
        self.ctx.set_user_attr("curve", self.curve)
        self.ctx.set_user_attr("epochs_run", record["epoch"])
        if self.metric_key is not None:
            self.ctx.report(record[self.metric_key], report_step)

    def _verify_ranks(self) -> None:
        if not (self.dist.active and self.s.verify_ranks):  # off the hot path unless asked for
            return
        import hashlib

        import torch

        flat = torch.cat([p.detach().float().flatten().cpu() for p in self.model.parameters()])
        self.ctx.set_user_attr("weights_checksum", hashlib.sha256(flat.numpy().tobytes()).hexdigest())

    def _result(self) -> LoopResult:
        final = self.curve[-1] if self.curve else {}
        metrics = {k: float(v) for k, v in final.items() if k not in {"step", "global_step", "lr"}}
        if self.metric_key is not None and self.metric_key in metrics:
            metrics[self.ctx.objective] = metrics[self.metric_key]  # e.g. objective "loss" -> val_loss
        epochs_run = self.step / self.steps_per_epoch
        metrics["epochs_run"] = epochs_run
        metrics["steps"] = float(self.step)
        return LoopResult(
            metrics=metrics,
            curve=self.curve,
            confusion=self.last_eval.confusion if self.last_eval is not None else [],
            epochs_run=epochs_run,
            steps=self.step,
            time_train=time.perf_counter() - self.started - self.time_eval - self.checkpoints.seconds,
            time_eval=self.time_eval,
            device=str(self.device),
            time_to_first_step=self.first_step,
            time_checkpoint=self.checkpoints.seconds,
        )


def _require_objective(objective: str) -> None:
    if objective not in FINAL_METRICS:
        raise ValueError(
            f"objective {objective!r} is not a torch trainer metric; expected one of {', '.join(sorted(FINAL_METRICS))}"
        )


def train_loop(
    model: nn.Module,
    train_dataset: Any,
    val_dataset: Any,
    settings: TorchTrainingSettings,
    ctx: TrialContext,
    *,
    num_classes: int,
    train_collate: Collate,
    eval_collate: Collate,
    forward: Forward = default_forward,
    device: torch.device | None = None,
    train_transform: Callable[[Batch], Batch] | None = None,
) -> LoopResult:
    """Train ``model``, evaluating (and reporting ``ctx.objective``) each epoch or N steps.

    A cost objective (:data:`COST_METRICS`, e.g. ``latency_ms``) is measured after
    training, not by the loop: the loop still evaluates and keeps the curve, but
    reports nothing, so a pruner never stops such a trial.

    ``train_transform`` (e.g. image augmentation) gets each *training* batch,
    labels included, after it is moved to the device, and returns the batch
    to train on (labels may become soft ``(N, classes)`` targets, as with
    mixup). Evaluation batches never pass through it.

    After each report the manager's prune decision is fetched (rank 0) and
    broadcast; on "prune" :class:`TrialPruned` is raised on every rank. The curve
    so far is kept in ``ctx.user_attrs["curve"]`` and ``["epochs_run"]``.

    Raises:
        TrialPruned: the manager decided to stop the trial.
        ValueError: ``ctx.objective`` is not one of :data:`FINAL_METRICS`.
    """
    import torch

    _require_objective(ctx.objective)
    torch.set_num_threads(ctx.resources.threads)
    loop = _TrainLoop(model, val_dataset, settings, ctx, num_classes, eval_collate, forward, train_transform)
    loop.setup(train_dataset, train_collate, device or select_device(ctx.resources.gpus))
    return loop.run()
