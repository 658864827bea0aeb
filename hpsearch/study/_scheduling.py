"""The scheduling seam: what runs next.

The loop asks its scheduler for the next trial whenever the executor has a free
slot, and tells it when a trial ends. Today's behaviour is two schedulers:

* :class:`SamplerScheduler`: Optuna's ``ask`` (which serves queued retries, with
  their fixed params, before sampling), up to the study's target, and no
  further once a grid is exhausted (or, with ``sampler.dedupe``, a finite space);
* :class:`ImportScheduler`: one job that runs a whole search (trainers with
  ``imports_trials``), its records imported when it ends.

A population-based scheduler or a warm-start queue is one more subclass of
:class:`BaseScheduler`.

No point run twice (``sampler.dedupe``, after Syne Tune's ``allow_duplicates=False``;
:class:`Dedupe`). On a finite space (every parameter categorical, an int range, or a
float range with a ``step``) a sampled point that is COMPLETE, PRUNED or RUNNING in
this study is not run again. A FAILed point is not "seen": it may be sampled again
(``max_failures`` bounds a point that always fails), and queued retries (a worker
that died, an orphan, an interrupted trial: ``enqueue_trial`` with fixed params) are
served by a plain ``ask`` before any draw and are never deduped. Warm-start history
is not this study's runs and does not count either.

How a draw is rejected without a trial row that looks like a run: Optuna's samplers
need a real trial (``before_trial``, and some write the trial's system attributes
while sampling), so the scheduler first counts the distinct points seen and, when
they cover the space, creates nothing and says "search space exhausted after N
distinct points" (once per run; the run ends normally). Otherwise it asks for a
trial *without* distributions (a RUNNING row with no params), lets the sampler
propose up to :data:`MAX_REDRAWS` points in memory (:func:`hpsearch.search.draw`,
what ``optuna.Trial`` does, minus the write), and writes the params of the first
unseen one. When the sampler keeps proposing seen points, an unseen point is picked
uniformly at random (as Syne Tune falls back to a random configuration): one
exists, since the space is not covered. Every asked trial thus runs; a rejected
draw leaves nothing in storage. The trial records ``hpsearch:dedupe`` (true),
``hpsearch:redraws`` (rejected draws) and, for the fallback, ``hpsearch:dedupe_fallback``
as system attributes.
"""

from __future__ import annotations

import abc
import logging
import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpsearch.search import FiniteSpace, draw, grid_size
from hpsearch.search._conditional import ConditionalSpace, Conditions
from hpsearch.storage import _optuna as ox
from hpsearch.study._recovery import DRIVER_ATTR

if TYPE_CHECKING:
    import optuna

    from hpsearch.study._prepare import Prepared

__all__ = [
    "MAX_REDRAWS",
    "WARM_START_ATTR",
    "BaseScheduler",
    "Dedupe",
    "ImportScheduler",
    "SamplerScheduler",
    "TrialToRun",
    "finished_and_running",
    "make_scheduler",
]

#: The job number of a whole-search import (it is no trial of the study).
IMPORT_NUMBER = -1

#: With ``sampler.dedupe``: draws the sampler gets for one trial before an unseen point is picked at random.
MAX_REDRAWS = 100

log = logging.getLogger("hpsearch.study")


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


#: User attribute of a trial copied from an earlier study as history (warm start): it informs
#: the sampler but is not one of this study's trials for ``n_trials``.
WARM_START_ATTR = "warm_start_from"


def finished_and_running(study: optuna.Study) -> tuple[int, int]:
    """(COMPLETE + PRUNED, RUNNING) trials of the study, warm-start history left out."""
    from optuna.trial import TrialState

    done = active = 0
    for t in study.get_trials(deepcopy=False):
        if WARM_START_ATTR in t.user_attrs:
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            done += 1
        elif t.state == TrialState.RUNNING:
            active += 1
    return done, active


class Dedupe:
    """``sampler.dedupe`` on a finite space: asks for trials whose point this study has not run.

    On a conditional space (``when:``) a point is the dict of the params present: the
    sampler's full draw is cut to the params its conditions allow before it is compared.

    Args:
        space: The study's finite search space.
        seed: Seeds the random fallback (with the trial's number), so a seeded study repeats.
        name: The study's name, for the message.
    """

    def __init__(self, space: FiniteSpace | ConditionalSpace, seed: int | None, name: str) -> None:
        self.space = space
        self.seed = seed
        self.name = name
        self._said = False

    def seen(self, study: optuna.Study) -> set[tuple[int, ...]]:
        """The points of this study's COMPLETE, PRUNED and RUNNING trials (warm-start history left out)."""
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        trials = study.get_trials(deepcopy=False, states=states)
        keys = (self.space.key(t.params) for t in trials if WARM_START_ATTR not in t.user_attrs)
        return {k for k in keys if k is not None}

    def exhausted(self, study: optuna.Study) -> bool:
        """Whether every point has run or is running (said once per run); queued retries still run."""
        from optuna.trial import TrialState

        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return False
        n = len(self.seen(study))
        if n < self.space.size:
            return False
        if not self._said:
            self._said = True
            log.warning("%s: search space exhausted after %d distinct points", self.name, n)
        return True

    def ask(self, study: optuna.Study) -> optuna.trial.Trial:
        """A new trial with an unseen point (the caller checked :meth:`exhausted`); rejected draws write nothing."""
        import optuna

        seen = self.seen(study)
        trial = study.ask()  # a RUNNING row, no params yet
        frozen = ox.storage_of(study).get_trial(ox.trial_id(trial))
        params, redraws = None, 0
        while params is None and redraws < MAX_REDRAWS:
            proposed = draw(study, frozen, self.space.distributions)
            if isinstance(self.space, ConditionalSpace):  # a full draw: keep the params its conditions allow
                proposed = self.space.conditions.present(proposed)
            if self.space.key(proposed) in seen:
                redraws += 1
            else:
                params = proposed
        if params is None:  # the sampler keeps proposing seen points: any unseen one
            params = self.space.unseen(seen, random.Random(f"{self.seed}:{trial.number}"))
            assert params is not None, "exhausted() is checked before ask()"
            ox.set_trial_system_attr(study, trial, "hpsearch:dedupe_fallback", True)
        storage = ox.storage_of(study)
        for name, value in params.items():  # in the space's order; a conditional space's absent params left out
            dist = self.space.distributions[name]
            storage.set_trial_param(ox.trial_id(trial), name, dist.to_internal_repr(value), dist)
        ox.set_trial_system_attr(study, trial, "hpsearch:dedupe", True)
        ox.set_trial_system_attr(study, trial, "hpsearch:redraws", redraws)
        return optuna.trial.Trial(study, ox.trial_id(trial))  # re-read: the params as stored


def _finite_space(prepared: Prepared, conditions: Conditions | None) -> FiniteSpace | ConditionalSpace | None:
    """The finite space dedupe works on (the valid points of a conditional one); None: not finite."""
    if conditions is None:
        return FiniteSpace.of(prepared.distributions)
    space = ConditionalSpace.of(conditions, prepared.distributions)
    if space is None and FiniteSpace.of(prepared.distributions) is not None:
        log.warning(
            "%s: sampler.dedupe is off: the conditional space has too many points to list", prepared.config.name
        )
    return space


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
        cfg = prepared.config
        #: The ``when:`` of the search space; None: no conditional params (``study.ask(distributions)``).
        self.conditions = Conditions.of(cfg)
        space = _finite_space(prepared, self.conditions) if cfg.sampler.dedupe and not self._grid else None
        self.dedupe = None if space is None else Dedupe(space, cfg.sampler.seed, cfg.name)

    @property
    def _grid(self) -> bool:
        return self.prepared.config.sampler.name == "grid"

    def start(self, study: optuna.Study) -> int | None:
        self._target = _target(study, self.prepared, self.more)
        # The total shown (and "finished" in the status): a deduped finite space has no more points.
        total = self._target if self.dedupe is None else min(self._target, self.dedupe.space.size)
        return None if total == math.inf else int(total)

    def wants_more(self, study: optuna.Study) -> bool:
        if self._grid and self.prepared.sampler.is_exhausted(study):
            return False
        done, active = finished_and_running(study)
        if done + active >= self._target:
            return False
        return self.dedupe is None or not self.dedupe.exhausted(study)

    def next_trial(self, study: optuna.Study) -> TrialToRun | None:
        from optuna.trial import TrialState

        if not self.wants_more(study):
            return None
        # The new trial's params and attributes commit together, before the job leaves.
        with ox.batch(study):
            if self.dedupe is not None and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                trial = self.dedupe.ask(study)
            elif self.conditions is None:  # queued retries (fixed params) come first and are never deduped
                trial = study.ask(self.prepared.distributions)
            else:  # define-by-run: each param in dependency order, only where its condition holds
                trial = study.ask()
                self.conditions.suggest(trial, self.prepared.distributions)
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
