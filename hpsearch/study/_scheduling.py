"""The scheduling seam: what runs next.

The loop asks its scheduler for the next trial whenever the executor has a free
slot, and tells it when a trial ends. Today's behaviour is two schedulers:

* :class:`SamplerScheduler`: Optuna's ``ask`` (which serves queued retries, with
  their fixed params, before sampling), up to the study's target, and no
  further once a grid is exhausted;
* :class:`ImportScheduler`: one job that runs a whole search (trainers with
  ``imports_trials``), its records imported when it ends.

A population-based scheduler or a warm-start queue is one more subclass of
:class:`BaseScheduler`.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpsearch.search import grid_size
from hpsearch.storage import _optuna as ox
from hpsearch.study._recovery import DRIVER_ATTR

if TYPE_CHECKING:
    import optuna

    from hpsearch.study._prepare import Prepared

__all__ = ["BaseScheduler", "ImportScheduler", "SamplerScheduler", "TrialToRun", "make_scheduler"]

#: The job number of a whole-search import (it is no trial of the study).
IMPORT_NUMBER = -1


@dataclass
class TrialToRun:
    """A trial the scheduler chose: its number, params and attempt, and the live Optuna trial.

    ``trial`` is None for a whole-search import (``imports``), whose records
    become trials only when it ends.
    """

    number: int
    params: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    trial: optuna.trial.Trial | None = None
    imports: bool = False
    #: Stop the trial once it has reported this step (a PBT segment's end); None: run to its end.
    stop_at: int | None = None
    #: The trial whose checkpoint this one starts from (a PBT segment's parent); None: see ``resume_point``.
    parent: int | None = None
    #: Load a checkpoint written with other params (PBT's explore changes them).
    any_params: bool = False


class BaseScheduler(abc.ABC):
    """Decides what runs next. The loop calls it under the study lock, from one thread."""

    def start(self, study: optuna.Study) -> int | None:
        """Called once the study is open and recovered; returns the number of trials aimed at, if known."""
        return None

    @abc.abstractmethod
    def wants_more(self, study: optuna.Study) -> bool:
        """Whether the study wants another trial now."""

    @abc.abstractmethod
    def next_trial(self, study: optuna.Study) -> TrialToRun | None:
        """The next trial to run, created in storage; None when the study wants no more now."""

    def requeue(self, study: optuna.Study, params: dict[str, Any], number: int, attempt: int) -> None:
        """Queue ``params`` of trial ``number`` to run next, as attempt number ``attempt``."""
        study.enqueue_trial(params, user_attrs={"hpsearch.retry_of": number, "hpsearch.attempt": attempt})

    def on_trial_end(self, study: optuna.Study, number: int) -> None:  # noqa: B027 - optional hook
        """Trial ``number`` was told its final state."""


def finished_and_running(study: optuna.Study) -> tuple[int, int]:
    """(COMPLETE + PRUNED, RUNNING) trials of the study."""
    from optuna.trial import TrialState

    done = active = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            done += 1
        elif t.state == TrialState.RUNNING:
            active += 1
    return done, active


def _target(study: optuna.Study, prepared: Prepared, more: int | None) -> float:
    """Finished trials the run aims at: ``more`` beyond those done, else ``n_trials``, capped by a grid."""
    cfg = prepared.config
    if more is not None:
        target: float = finished_and_running(study)[0] + more
    elif cfg.n_trials is not None:
        target = cfg.n_trials
    else:
        target = math.inf
    if cfg.sampler.name == "grid" and more is None:
        target = min(target, grid_size(prepared.sampler))
    return target


class SamplerScheduler(BaseScheduler):
    """Optuna's ``ask`` up to the target; queued retries come first (``enqueue_trial``).

    Args:
        prepared: The checked study (sampler, distributions).
        more: Run this many trials beyond those finished, instead of up to ``n_trials``.
        driver: This driver's id, stamped on every trial it claims.
    """

    def __init__(self, prepared: Prepared, *, more: int | None, driver: str) -> None:
        self.prepared = prepared
        self.more = more
        self.driver = driver
        self._target: float = math.inf

    @property
    def _grid(self) -> bool:
        return self.prepared.config.sampler.name == "grid"

    def start(self, study: optuna.Study) -> int | None:
        self._target = _target(study, self.prepared, self.more)
        return None if self._target == math.inf else int(self._target)

    def wants_more(self, study: optuna.Study) -> bool:
        if self._grid and self.prepared.sampler.is_exhausted(study):
            return False
        done, active = finished_and_running(study)
        return done + active < self._target

    def next_trial(self, study: optuna.Study) -> TrialToRun | None:
        if not self.wants_more(study):
            return None
        # The new trial's params and attributes commit together, before the job leaves.
        with ox.batch(study):
            trial = study.ask(self.prepared.distributions)
            if ox.trial_system_attrs(study, trial).get(DRIVER_ATTR) != self.driver:  # queued: claim it
                ox.set_trial_system_attr(study, trial, DRIVER_ATTR, self.driver)
        attempt = int(trial.user_attrs.get("hpsearch.attempt", 1))
        if self._grid:
            attempt += self._grid_failures(study, trial)
        return TrialToRun(trial.number, dict(trial.params), attempt, trial)

    def requeue(self, study: optuna.Study, params: dict[str, Any], number: int, attempt: int) -> None:
        if self._grid:
            return  # the grid sampler re-runs failed points marked for retry first
        super().requeue(study, params, number, attempt)

    @staticmethod
    def _grid_failures(study: optuna.Study, trial: optuna.trial.Trial) -> int:
        """Earlier runs of this grid point that failed by their own fault (for max_retries)."""
        from optuna.trial import TrialState

        gid = ox.trial_system_attrs(study, trial).get("grid_id")
        return sum(
            1
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if t.system_attrs.get("grid_id") == gid
            and t.user_attrs.get("fail_reason") not in ("orphaned", "interrupted")
        )


class ImportScheduler(SamplerScheduler):
    """One whole-search job per study (again only with ``more``); its records are imported when it ends."""

    def __init__(self, prepared: Prepared, *, more: int | None, driver: str) -> None:
        super().__init__(prepared, more=more, driver=driver)
        self._submitted = False

    def wants_more(self, study: optuna.Study) -> bool:
        return not self._submitted and (self.more is not None or not study.get_trials(deepcopy=False))

    def next_trial(self, study: optuna.Study) -> TrialToRun | None:
        if not self.wants_more(study):
            return None
        self._submitted = True
        return TrialToRun(IMPORT_NUMBER, imports=True)


def make_scheduler(prepared: Prepared, *, more: int | None, driver: str) -> BaseScheduler:
    """The scheduler for ``prepared``: PBT, an import for whole-search trainers, else the sampler's asks."""
    if prepared.config.scheduler.name == "pbt":
        from hpsearch.study._pbt import PBTScheduler

        return PBTScheduler(prepared, driver=driver)
    cls = ImportScheduler if prepared.trainer.imports_trials else SamplerScheduler
    return cls(prepared, more=more, driver=driver)
