"""Population-based training (Jaderberg et al. 2017) as a scheduler: every decision lives in SQL.

``scheduler: {name: pbt, population: P, interval: I}`` trains P members in
generations of I steps. Each member's segment of a generation is one Optuna trial
with the user attributes ``pbt_member``, ``pbt_generation``, ``pbt_parent`` (the
trial whose checkpoint it starts from; None in generation 0) and ``start_step``.
The manager stops a segment once it has reported step ``start_step + I`` (its
checkpoint of that step is saved first) and records it COMPLETE with that value;
when the generations come from the trainer's ``epochs``, the last generation runs
to the trainer's own end instead and keeps all its final metrics.

Generations are synchronous: generation g starts once every member's segment of
g - 1 is final (COMPLETE, or failed for good). Then, ranked by value, the bottom
``quantile`` (and any member that failed) copies the checkpoint of a random member
of the top ``quantile`` (exploit) and changes its params (explore); the others go
on from their own checkpoint with the same params. Every choice is drawn from a
RNG seeded by (sampler seed, generation, member), so a driver killed anywhere
rebuilds the same population from storage and finishes the same schedule.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpsearch.errors import ConfigError
from hpsearch.search import RETRY_ATTR
from hpsearch.storage import _optuna as ox
from hpsearch.study._recovery import DRIVER_ATTR
from hpsearch.study._scheduling import BaseScheduler, TrialToRun

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from hpsearch.config import StudyConfig
    from hpsearch.study._prepare import Prepared
    from hpsearch.trainers import BaseTrainer

__all__ = ["PBT_ATTRS", "PBTScheduler", "pbt_generations"]

#: The user attributes of a PBT segment.
PBT_ATTRS = ("pbt_member", "pbt_generation", "pbt_parent", "start_step")


def pbt_generations(cfg: StudyConfig, trainer: BaseTrainer) -> int:
    """Generations of the study's PBT: ``scheduler.generations``, else the trainer's epochs / interval."""
    sch = cfg.scheduler
    if sch.generations is not None:
        return sch.generations
    epochs = getattr(trainer.settings, "epochs", None)
    if not isinstance(epochs, int):
        raise ConfigError(f"{cfg.file}: scheduler.generations: set how many generations PBT runs")
    if epochs < sch.interval:
        raise ConfigError(
            f"{cfg.file}: scheduler.interval: {sch.interval} is more than trainer.epochs ({epochs}); lower it"
        )
    return epochs // sch.interval


@dataclass
class _Segment:
    member: int
    generation: int
    params: dict[str, Any] | None  # None: sampled (generation 0)
    parent: int | None
    attempt: int = 1
    retry_of: int | None = None

    def attrs(self, interval: int) -> dict[str, Any]:
        return {
            "pbt_member": self.member,
            "pbt_generation": self.generation,
            "pbt_parent": self.parent,
            "start_step": self.generation * interval,
            "hpsearch.attempt": self.attempt,
        }


@dataclass
class _State:
    """The segments of one member in one generation, as stored."""

    complete: FrozenTrial | None = None
    active: bool = False
    failed: list[FrozenTrial] = field(default_factory=list)

    def final(self) -> bool:
        return self.complete is not None or (bool(self.failed) and not self.failed[-1].system_attrs.get(RETRY_ATTR))


class PBTScheduler(BaseScheduler):
    """Population-based training over the study's sampler (generation 0) and checkpoints.

    Args:
        prepared: The checked study (``scheduler:`` block, sampler, distributions, checkpoints).
        driver: This driver's id, stamped on every trial it claims.
    """

    def __init__(self, prepared: Prepared, *, driver: str) -> None:
        self.prepared = prepared
        self.driver = driver
        self.cfg = prepared.config.scheduler
        self.generations = pbt_generations(prepared.config, prepared.trainer)
        self.seed = prepared.config.sampler.seed or 0
        self.maximize = prepared.config.first_objective.direction == "maximize"
        self.mutate = self.cfg.mutate if self.cfg.mutate is not None else list(prepared.distributions)

    @property
    def total(self) -> int:
        return self.cfg.population * self.generations

    def start(self, study: optuna.Study) -> int | None:
        return self.total

    def wants_more(self, study: optuna.Study) -> bool:
        states = self._states(study)
        return self._generation(states) < self.generations

    def requeue(self, study: optuna.Study, params: dict[str, Any], number: int, attempt: int) -> None:
        """Nothing: a stopped segment is planned again from storage (see :meth:`next_trial`)."""

    # -- reading storage ---------------------------------------------------------
    def _states(self, study: optuna.Study) -> dict[tuple[int, int], _State]:
        from optuna.trial import TrialState

        states: dict[tuple[int, int], _State] = {}
        for t in study.get_trials(deepcopy=False):
            if "pbt_member" not in t.user_attrs:
                continue
            s = states.setdefault((int(t.user_attrs["pbt_member"]), int(t.user_attrs["pbt_generation"])), _State())
            if t.state == TrialState.COMPLETE:
                s.complete = t
            elif t.state in (TrialState.RUNNING, TrialState.WAITING):
                s.active = True
            else:  # FAIL, or PRUNED by the trainer itself: no value to rank by
                s.failed.append(t)
        return states

    def _generation(self, states: dict[tuple[int, int], _State]) -> int:
        """The first generation with a member whose segment is not final (``generations`` when all are)."""
        for g in range(self.generations):
            if not all(states.get((m, g), _State()).final() for m in range(self.cfg.population)):
                return g
        return self.generations

    # -- choosing ----------------------------------------------------------------
    def next_trial(self, study: optuna.Study) -> TrialToRun | None:
        if self._waiting(study):
            return self._ask(study, None)  # a segment queued by an earlier run: run it first
        segment = self._next_segment(self._states(study))
        return None if segment is None else self._ask(study, segment)

    @staticmethod
    def _waiting(study: optuna.Study) -> bool:
        from optuna.trial import TrialState

        return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def _next_segment(self, states: dict[tuple[int, int], _State]) -> _Segment | None:
        g = self._generation(states)
        if g >= self.generations:
            return None
        plan = self._plan(states, g) if g > 0 else {}
        for m in range(self.cfg.population):
            s = states.get((m, g), _State())
            if s.final() or s.active:
                continue
            if g > 0 and m not in plan:
                return None  # every member failed in the last generation: nothing to copy
            seg = plan.get(m) or _Segment(m, 0, None, None)
            if s.failed:  # a re-run: the same params and parent, one attempt more
                last = s.failed[-1]
                seg = _Segment(m, g, dict(last.params) or seg.params, last.user_attrs.get("pbt_parent"))
                seg.attempt, seg.retry_of = len(s.failed) + 1, last.number
            return seg
        return None

    def _plan(self, states: dict[tuple[int, int], _State], g: int) -> dict[int, _Segment]:
        """Generation ``g``'s segments from generation ``g - 1``'s results: exploit and explore."""
        done: dict[int, FrozenTrial] = {}
        for m in range(self.cfg.population):
            complete = states.get((m, g - 1), _State()).complete
            if complete is not None:
                done[m] = complete
        ranked = sorted(done, key=lambda m: (-_signed(done[m], self.maximize), m))
        if not ranked:
            return {}
        n = max(1, math.floor(self.cfg.population * self.cfg.quantile))
        top = ranked[:n]
        bottom = set(ranked[-n:]) - set(top) | (set(range(self.cfg.population)) - set(done))
        plan: dict[int, _Segment] = {}
        for m in range(self.cfg.population):
            if m in bottom:
                rng = random.Random(f"{self.seed}:{g}:{m}")
                donor = done[rng.choice(top)]
                plan[m] = _Segment(m, g, self._explore(dict(donor.params), rng), donor.number)
            else:
                own = done[m]
                plan[m] = _Segment(m, g, dict(own.params), own.number)
        return plan

    def _explore(self, params: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        from hpsearch.search import perturb_value, resample_value

        out = dict(params)
        for name in self.mutate:
            dist = self.prepared.distributions[name]
            if rng.random() < self.cfg.resample_probability:
                out[name] = resample_value(dist, rng)
            else:
                out[name] = perturb_value(dist, out[name], rng.choice(self.cfg.perturb), rng)
        return out

    def _ask(self, study: optuna.Study, segment: _Segment | None) -> TrialToRun:
        """Create the segment's trial (its params fixed, or sampled in generation 0) and claim it."""
        interval = self.cfg.interval
        with ox.batch(study):
            if segment is not None and segment.params is not None:
                study.enqueue_trial(segment.params, user_attrs=segment.attrs(interval))
            trial = study.ask(self.prepared.distributions)
            ox.set_trial_system_attr(study, trial, DRIVER_ATTR, self.driver)
            if segment is not None and segment.params is None:
                for key, value in segment.attrs(interval).items():
                    trial.set_user_attr(key, value)
            if segment is not None and segment.retry_of is not None:
                trial.set_user_attr("hpsearch.retry_of", segment.retry_of)
        attrs = trial.user_attrs
        start = int(attrs["start_step"])
        # The last generation of a trainer whose epochs set the generations runs to its own
        # end: it returns its final metrics (test accuracy, the saved model) as a trial does.
        last = int(attrs["pbt_generation"]) == self.generations - 1 and self.cfg.generations is None
        return TrialToRun(
            trial.number,
            dict(trial.params),
            int(attrs.get("hpsearch.attempt", 1)),
            trial,
            stop_at=None if last else start + interval,
            parent=attrs.get("pbt_parent"),
            any_params=True,
        )


def _signed(t: FrozenTrial, maximize: bool) -> float:
    value = float(t.value) if t.value is not None else -math.inf
    return value if maximize else -value
