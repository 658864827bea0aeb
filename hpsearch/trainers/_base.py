"""The trainer interface: what one trial does.

A trainer is built from the study's ``trainer:`` settings (validated by its
``Settings`` model), checked once in the driver before any trial starts
(:meth:`BaseTrainer.validate`), optionally prepared once per study run
(:meth:`BaseTrainer.prepare`, e.g. a tokenisation cache), then run once per
trial, possibly in another process or on another machine (:meth:`BaseTrainer.run`).

Trainers never write to storage. They talk to the study manager only through
the :class:`TrialContext`: ``report`` sends an intermediate value, ``should_prune``
returns the manager's decision for the last reported step, ``set_user_attr`` and
files written under ``artifact_dir`` travel back with the result.
"""

from __future__ import annotations

import abc
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from hpsearch.checkpoints import TrialCheckpoints

__all__ = [
    "BaseTrainer",
    "TrainerSettings",
    "TrialContext",
    "NonFiniteLoss",
    "TrialPruned",
    "TrialRecord",
    "RECORDS_ATTR",
    "TrialResources",
    "ReportChannel",
    "RecordingChannel",
]


#: Where an ``imports_trials`` trainer leaves its records (a list of TrialRecord dicts).
RECORDS_ATTR = "hpsearch.records"


@dataclass
class TrialRecord:
    """One finished trial computed outside Optuna (e.g. a row of ``cv_results_``).

    ``distributions`` maps each param to Optuna's JSON form
    (``optuna.distributions.distribution_to_json``); ``state`` is ``COMPLETE``
    or ``FAIL`` (then ``user_attrs["fail_reason"]`` says why).
    """

    params: dict[str, Any]
    distributions: dict[str, str]
    state: str
    value: float | None
    user_attrs: dict[str, Any] = field(default_factory=dict)
    duration_s: float | None = None


class TrialPruned(Exception):
    """Raised by a trainer to stop a trial the manager decided to prune (or stop)."""


class NonFiniteLoss(ArithmeticError):
    """Raised by a trainer when the training loss became NaN or infinite.

    The trial is recorded FAIL (or PRUNED with ``on_nonfinite_loss: prune``)
    with reason ``non-finite loss at step N``.
    """

    def __init__(self, step: int, value: float = float("nan")) -> None:
        super().__init__(f"non-finite loss at step {step} ({value})")
        self.step = step
        self.hpsearch_reason = f"non-finite loss at step {step}"


class TrainerSettings(BaseModel):
    """Base for each trainer kind's settings: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class TrialResources:
    """What one trial was given: CPUs per worker, GPUs per worker, workers."""

    cpus: float = 1.0
    gpus: float = 0.0
    workers: int = 1
    custom: dict[str, float] = field(default_factory=dict)

    @property
    def threads(self) -> int:
        """Torch/BLAS threads a worker should use: the CPUs it was given, at least 1."""
        return max(1, int(self.cpus))


class ReportChannel(Protocol):
    """How a running trial talks to the manager (provided by the executor)."""

    def report(self, trial_number: int, step: int, value: float) -> None: ...

    def decision(self, trial_number: int, step: int) -> bool:
        """Block until the manager decided on ``step``; True means stop now."""
        ...


class RecordingChannel:
    """A channel that keeps reports in memory and asks ``prune(step, value)``.

    Used by tests and by trainers run outside a study.
    """

    def __init__(self, prune: Any = None) -> None:
        self.reports: list[tuple[int, float]] = []
        self._prune = prune

    def report(self, trial_number: int, step: int, value: float) -> None:
        self.reports.append((step, value))

    def decision(self, trial_number: int, step: int) -> bool:
        if self._prune is None:
            return False
        return bool(self._prune(step, dict(self.reports)[step]))


class TrialContext:
    """The running trial's view of the study.

    Thread safety: one context belongs to one trial; in a data-parallel trial
    only rank 0 reports, and ``should_prune`` is broadcast by the trainer.
    """

    def __init__(
        self,
        *,
        trial_number: int,
        params: dict[str, Any],
        resources: TrialResources,
        channel: ReportChannel,
        study_name: str = "",
        objective: str = "value",
        work_dir: Path | None = None,
        cache_dir: Path | None = None,
        checkpoints: TrialCheckpoints | None = None,
    ) -> None:
        #: A local folder that outlives the trial and the run (the study's checkpoint folder's
        #: ``cache/``), for work a re-run may reuse (e.g. ``sklearn_search``'s finished fits);
        #: None when the study's checkpoints are not on a local path.
        self.cache_dir = cache_dir
        #: ``time.perf_counter()`` when the trial started in this process.
        self.started = time.perf_counter()
        self.trial_number = trial_number
        #: Name of the metric the study optimises; report this one.
        self.objective = objective
        self.params = dict(params)
        self.resources = resources
        self.study_name = study_name
        self.user_attrs: dict[str, Any] = {}
        self._channel = channel
        self._last_step: int | None = None
        #: What this trial reported (step -> value): saved with each checkpoint, so a re-run
        #: carries the whole curve up to it even when the driver missed the last reports.
        self._reports: dict[int, float] = {}
        self._pruned = False
        self._work_dir = work_dir
        self._artifact_dir: Path | None = None
        #: The trial's checkpoints (None: the study keeps none, e.g. a bare TrialContext in a test).
        self.checkpoints = checkpoints

    @property
    def artifact_dir(self) -> Path:
        """A private local folder; files left here are stored as the trial's artifacts."""
        if self._artifact_dir is None:
            base = self._work_dir or Path(tempfile.gettempdir())
            base.mkdir(parents=True, exist_ok=True)
            self._artifact_dir = Path(tempfile.mkdtemp(prefix=f"trial{self.trial_number}-", dir=base))
        return self._artifact_dir

    @property
    def has_artifacts(self) -> bool:
        return self._artifact_dir is not None and any(os.scandir(self._artifact_dir))

    def report(self, value: float, step: int) -> None:
        """Send an intermediate objective value for ``step`` (an epoch, or N steps)."""
        step = int(step)
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(f"report(step={step}) after step {self._last_step}: steps must increase")
        self._last_step = step
        self._reports[step] = float(value)
        self._channel.report(self.trial_number, step, float(value))

    def should_prune(self) -> bool:
        """The manager's decision for the last reported step (waits for it).

        In a data-parallel trial every rank must call this at the same
        points: rank 0 asks the manager and the answer is broadcast, so all
        ranks stop together and none waits in a collective.
        """
        if self._pruned:
            return True
        decision = False
        if self._last_step is not None:
            decision = self._channel.decision(self.trial_number, self._last_step)
        if _world_size() > 1:
            decision = _broadcast_from_rank0(decision)
        self._pruned = decision
        return decision

    def save_checkpoint(self, obj_or_dir: Any, step: int) -> None:
        """Checkpoint the trial at ``step``: a folder's files, or any picklable object.

        The write is atomic (a kill during it leaves the previous checkpoint usable) and
        only the newest ``checkpoints.keep`` are kept. In a data-parallel trial only rank 0
        writes. Without a checkpoint store this does nothing.
        """
        if self.checkpoints is not None:
            self.checkpoints.save(obj_or_dir, step, reports=self._reports)

    def load_checkpoint(self) -> Any:
        """What :meth:`save_checkpoint` stored last before this trial's predecessor stopped.

        None on a fresh start, or when the checkpoint cannot be loaded (the trial then
        starts fresh and the reason is stored as ``checkpoint_error``). A folder comes back
        as a local path to read, an object unpickled. :attr:`resumed_step` says its step.
        """
        if self.checkpoints is None:
            return None
        value = self.checkpoints.load()
        if self.checkpoints.error is not None:
            self.user_attrs["checkpoint_error"] = self.checkpoints.error
        return value

    @property
    def resumed_step(self) -> int | None:
        """The step of the checkpoint :meth:`load_checkpoint` returned (None: a fresh start)."""
        return None if self.checkpoints is None else self.checkpoints.loaded_step

    def set_user_attr(self, key: str, value: Any) -> None:
        """Record a JSON-serialisable attribute with the trial."""
        self.user_attrs[key] = value


def _world_size() -> int:
    """torch.distributed's world size, without importing torch if nobody did."""
    import sys

    if "torch.distributed" not in sys.modules:
        return 1
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _broadcast_from_rank0(flag: bool) -> bool:
    import torch
    import torch.distributed as dist

    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


class BaseTrainer(abc.ABC):
    """What one trial does.

    Subclasses set ``kind`` (the YAML ``trainer.kind``) and ``Settings`` (a
    :class:`TrainerSettings` model of the other ``trainer:`` keys) and implement
    :meth:`run`. Heavy imports (torch, transformers) belong inside methods, so
    that loading a study stays fast.

    Instances are pickled to the worker that runs a trial: keep them small and
    put caches on disk or in module globals, not on ``self``.
    """

    kind: ClassVar[str]
    Settings: ClassVar[type[TrainerSettings]]
    #: True when the trainer can run one trial on several data-parallel workers.
    supports_workers: ClassVar[bool] = False
    #: True for a trainer that runs a whole search itself (e.g. GridSearchCV):
    #: the manager runs it once, as one job, and imports the
    #: :class:`TrialRecord` list it leaves in ``ctx.user_attrs[RECORDS_ATTR]``
    #: as trials; other user attrs become study attributes.
    imports_trials: ClassVar[bool] = False
    #: True when trials checkpoint (``ctx.save_checkpoint``) at each report and resume from
    #: ``ctx.load_checkpoint``: what population-based training needs.
    can_checkpoint: ClassVar[bool] = False
    #: True for a light trainer (nothing heavy to import, short trials) whose first trials may
    #: run on the driver's threads while a private Ray is not started (``ray.driver_first_s``).
    runs_on_driver: ClassVar[bool] = False
    #: Parameter names this trainer understands (None: any, as for ``python``).
    tunable: ClassVar[frozenset[str] | None] = None

    def __init__(self, settings: TrainerSettings, *, study_dir: Path, objective: str = "value") -> None:
        self.settings = settings
        self.study_dir = Path(study_dir)
        #: The study's ``objective.metric``: validate() can check the trainer produces it.
        self.objective = objective

    def warm(self) -> None:  # noqa: B027 - an optional hook, a no-op by default
        """Import what a trial imports, in a fresh worker process, before its first trial.

        The ``ray`` executor calls it once in each worker it starts, during
        start-up, so the first trial of each worker does not pay for importing
        torch or transformers. Never needed for correctness: an error is logged
        as a warning and the trials run as they would have.
        """

    def validate(self, param_names: set[str]) -> None:
        """Check, in the driver and before any trial, that the trainer can run.

        Raise :class:`hpsearch.ConfigError` (naming ``trainer.<field>``) or
        :class:`hpsearch.TrainerError` otherwise. The default checks that every
        searched parameter is one this trainer understands.
        """
        if self.tunable is None:
            return
        unknown = sorted(param_names - self.tunable)
        if unknown:
            from hpsearch.errors import ConfigError

            raise ConfigError(
                f"search_space.{unknown[0]}: trainer {self.kind!r} has no parameter "
                f"{unknown[0]!r}; tunable parameters are: {', '.join(sorted(self.tunable))}"
            )

    def validate_space(self, space: Mapping[str, Any]) -> None:  # noqa: B027 - an optional hook
        """Check the search space's values against what the trainer can run (e.g. a layer count
        within the model's); raise :class:`hpsearch.ConfigError` naming ``search_space.<name>``."""

    def metrics(self) -> frozenset[str] | None:
        """The metric names a trial returns that ``objective.metric`` may name.

        None (the default) means they are known only when a trial returns, as
        for ``python``. A trainer that knows them from its settings says so,
        and the study manager refuses any other ``objective.metric`` before
        anything is written.
        """
        return None

    def prepare(self) -> None:  # noqa: B027 - an optional hook, a no-op by default
        """Driver-side work done once per study run before trials (e.g. caches)."""

    @abc.abstractmethod
    def run(self, params: dict[str, Any], ctx: TrialContext) -> dict[str, float] | float:
        """Run one trial and return its final metrics (or the objective value).

        Call ``ctx.report(value, step)`` for intermediate values and raise
        :class:`TrialPruned` when ``ctx.should_prune()`` is true.
        """
