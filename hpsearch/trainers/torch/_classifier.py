"""One base for the torch classification trainers: text and image give data and a model.

:class:`TorchClassifierTrainer` owns what every torch classifier shares: the
shared tunables and objectives, applying a trial's params to the settings
(with one error mapping), the objective check, seeding, the training loop
(:func:`~hpsearch.trainers.torch._loop.train_loop`), the optional test pass,
the curve files, the timings and the cost metrics (``params``, ``latency_ms``,
``train_compute_s``, ``peak_memory_mb``: :mod:`~hpsearch.trainers.torch._cost`).
A subclass implements two hooks:

* :meth:`~TorchClassifierTrainer.start_run` loads the data and builds the
  model of one trial, returning a :class:`ClassifierRun`;
* :meth:`~TorchClassifierTrainer.save_outputs` writes the trained model (and
  anything else) into the trial's artifact folder, on rank 0 only.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from pydantic import ValidationError

from hpsearch.errors import ConfigError, HpsearchError, TrainerError
from hpsearch.trainers._base import BaseTrainer, TrialContext
from hpsearch.trainers.torch._cost import (
    PEAK_MEMORY_SOURCE,
    count_params,
    measure_latency,
    peak_memory_mb,
    reset_peak_memory,
    train_compute_seconds,
)
from hpsearch.trainers.torch._devices import DistInfo, seed_everything, select_device
from hpsearch.trainers.torch._eval import Forward, default_forward, evaluate
from hpsearch.trainers.torch._loop import Batch, Collate, LoopResult, loop_metrics, store_curve, train_loop
from hpsearch.trainers.torch._settings import FINAL_METRICS, TORCH_TUNABLES, TorchTrainingSettings

if TYPE_CHECKING:
    import torch

__all__ = ["ClassifierRun", "TorchClassifierTrainer", "settings_error"]

S = TypeVar("S", bound=TorchTrainingSettings)


def settings_error(err: ValidationError, params: dict[str, Any]) -> ConfigError:
    """The first validation error as one line, blamed on ``search_space.<name>`` when a
    sampled param caused it, else on ``trainer.<field>``."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    prefix = "search_space" if first["loc"] and first["loc"][0] in params else "trainer"
    return ConfigError(f"{prefix}.{where}: {first['msg']} (got {first.get('input')!r})")


@dataclass
class ClassifierRun:
    """What a subclass hands the shared run: data, model and how to batch them."""

    model: Any
    train: Any
    val: Any
    #: The test split, or None when there is none (``test_fraction`` 0).
    test: Any | None
    label_names: Sequence[str]
    train_collate: Collate
    eval_collate: Collate
    forward: Forward = default_forward
    train_transform: Callable[[Batch], Batch] | None = None
    test_batch_size: int = 64
    #: Timed phases besides loading (e.g. ``time_tokenize``), subtracted from ``time_load``.
    timings: dict[str, float] = field(default_factory=dict)
    #: Metrics the task adds to the loop's (the shared cost metrics are added by the base).
    extra_metrics: dict[str, float] = field(default_factory=dict)
    #: Whatever :meth:`TorchClassifierTrainer.save_outputs` needs (tokenizer, config...).
    state: dict[str, Any] = field(default_factory=dict)


class TorchClassifierTrainer(BaseTrainer, Generic[S]):
    """A classifier trained by the shared torch loop; subclasses provide data and model.

    Subclasses set ``kind``, ``Settings`` (mixing in :class:`TorchTrainingSettings`)
    and ``task_tunables``, and implement :meth:`start_run` and :meth:`save_outputs`.
    """

    supports_workers = True
    #: The shared loop checkpoints at each report and resumes (``_checkpoint``).
    can_checkpoint = True
    #: The subclass's own searchable names, added to :data:`TORCH_TUNABLES`.
    task_tunables: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.tunable = TORCH_TUNABLES | cls.task_tunables

    # ------------------------------------------------------------ settings

    def merged_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The settings as a dict with a trial's ``params`` applied (before validation)."""
        return {**self.settings.model_dump(by_alias=True), **params}

    def hyperparameters(self, params: dict[str, Any]) -> S:
        """The settings with a trial's sampled ``params`` applied (and validated).

        Raises:
            ConfigError: naming ``search_space.<name>`` or ``trainer.<field>``.
        """
        try:
            return cast(S, self.Settings.model_validate(self.merged_params(params)))
        except ValidationError as err:
            raise settings_error(err, params) from err

    def require_objective(self, objective: str, *, error: type[HpsearchError], field: str) -> None:
        """Raise ``error`` naming ``field`` unless ``objective`` is a metric of this trainer."""
        if objective not in FINAL_METRICS:
            article = "an" if self.kind[0] in "aeiou" else "a"
            raise error(
                f"{field}: {objective!r} is not {article} {self.kind} metric; "
                f"use one of {', '.join(sorted(FINAL_METRICS))}"
            )

    def metrics(self) -> frozenset[str]:
        """The validation metrics reported each epoch (``loss`` is ``val_loss``) and the cost metrics."""
        return FINAL_METRICS

    def warm(self) -> None:
        """Import torch and the shared loop."""
        import torch  # noqa: F401

        import hpsearch.trainers.torch._loop  # noqa: F401

    # ------------------------------------------------------------ hooks

    @abc.abstractmethod
    def start_run(self, s: S, ctx: TrialContext, rank: int) -> ClassifierRun:
        """Load the data and build the model of one trial (settings ``s`` already applied)."""

    @abc.abstractmethod
    def save_outputs(self, job: ClassifierRun, s: S, ctx: TrialContext) -> None:
        """Write the trained model (when ``s.save_model``) into ``ctx.artifact_dir``; rank 0 only."""

    # ------------------------------------------------------------ the trial

    def run(self, params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
        """Train one model with ``params`` over the settings; return final metrics.

        Metrics: accuracy, f1_macro, val_loss, train_loss, epochs_run, steps,
        test_* when ``test_fraction`` > 0, the task's own, time_load /
        time_train / time_eval / time_save (plus the task's timings) in seconds,
        and on rank 0 the cost metrics (:meth:`_costs`).
        """
        import torch

        self.require_objective(ctx.objective, error=TrainerError, field="objective")
        t_start = time.perf_counter()
        s = self.hyperparameters(params)
        torch.set_num_threads(ctx.resources.threads)
        seed_everything(s.seed)
        rank, device = DistInfo.current().rank, select_device(ctx.resources.gpus)
        reset_peak_memory(device)
        job = self.start_run(s, ctx, rank)
        time_load = time.perf_counter() - t_start - sum(job.timings.values())
        result = train_loop(
            job.model,
            job.train,
            job.val,
            s,
            ctx,
            num_classes=len(job.label_names),
            train_collate=job.train_collate,
            eval_collate=job.eval_collate,
            forward=job.forward,
            train_transform=job.train_transform,
            device=device,
        )
        metrics = {**loop_metrics(result, ctx), **job.extra_metrics}
        if rank == 0:  # in a data-parallel trial, rank 0 measures
            metrics.update(self._costs(job, s, ctx, result, device))
        time_eval = result.time_eval + (self._test(job, metrics) if rank == 0 else 0.0)
        time_save = self._finish(job, s, ctx, result, rank)
        metrics.update(time_load=time_load, **job.timings, time_eval=time_eval, time_save=time_save)
        return metrics

    @staticmethod
    def _costs(
        job: ClassifierRun, s: TorchTrainingSettings, ctx: TrialContext, result: LoopResult, device: torch.device
    ) -> dict[str, float]:
        """``params``, ``latency_ms``, ``train_compute_s`` and ``peak_memory_mb`` of the trained model.

        Peak memory is read first, so the latency pass does not count; how latency and peak
        memory were measured is kept in the ``latency_*`` and ``peak_memory_source`` attributes.
        """
        costs = {"peak_memory_mb": peak_memory_mb(device), "params": float(count_params(job.model))}
        ctx.set_user_attr("peak_memory_source", PEAK_MEMORY_SOURCE.get(device.type, PEAK_MEMORY_SOURCE["cpu"]))
        costs["train_compute_s"] = train_compute_seconds(
            result.time_train, device=device, workers=DistInfo.current().world_size, gpus=ctx.resources.gpus
        )
        latency = measure_latency(
            job.model, job.val, collate_fn=job.eval_collate, batch_size=s.latency_batch_size, forward=job.forward
        )
        if latency is not None:
            costs["latency_ms"] = latency.ms_per_example
            ctx.set_user_attr("latency_batch_size", latency.batch_size)
            ctx.set_user_attr("latency_examples", latency.examples)
            ctx.set_user_attr("latency_device", latency.device)
        return costs

    @staticmethod
    def _test(job: ClassifierRun, metrics: dict[str, float]) -> float:
        """Add ``test_*`` metrics when there is a test split; return the seconds it took."""
        if job.test is None:
            return 0.0
        t0 = time.perf_counter()
        test = evaluate(
            job.model,
            job.test,
            collate_fn=job.eval_collate,
            num_classes=len(job.label_names),
            batch_size=job.test_batch_size,
            forward=job.forward,
        )
        metrics.update(test.metrics("test_"))
        return time.perf_counter() - t0

    def _finish(self, job: ClassifierRun, s: S, ctx: TrialContext, result: LoopResult, rank: int) -> float:
        """Store the curve and, on rank 0, the task's outputs; return the seconds it took."""
        t0 = time.perf_counter()
        store_curve(ctx, result, job.label_names, write=rank == 0)
        if rank == 0:
            self.save_outputs(job, s, ctx)
        return time.perf_counter() - t0
