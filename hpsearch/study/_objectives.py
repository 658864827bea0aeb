"""Several objectives and constraints: a trial's values from its metrics, feasibility, the Pareto front.

A study has one objective or several (``objective:`` as a list). Constraints
(``constraints: [{metric: latency_ms, max: 5}]``) are written with Optuna's own
:meth:`optuna.trial.Trial.set_constraint` before the trial is told, so every
sampler that reads constraints (TPE, NSGA-II/III, GP) sees them, and Optuna's
``best_trial``/``best_trials`` skip infeasible trials as ours do. (Optuna 5
deprecates the samplers' ``constraints_func`` in favour of it.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from hpsearch.config import ConstraintConfig, StudyConfig

__all__ = [
    "MULTI_OBJECTIVE_SAMPLERS",
    "Objectives",
    "dominates",
    "feasible",
    "hypervolume",
    "pareto_front",
    "study_directions",
    "study_metrics",
]

#: Samplers that take several objectives (Optuna's CmaEsSampler is single-objective).
MULTI_OBJECTIVE_SAMPLERS = ("nsga2", "nsga3", "tpe", "random", "grid", "qmc", "gp")


@dataclass(frozen=True)
class Objectives:
    """A study's objectives (metric and direction each) and constraints."""

    metrics: tuple[str, ...]
    directions: tuple[str, ...]
    constraints: tuple[ConstraintConfig, ...] = ()

    @classmethod
    def of(cls, cfg: StudyConfig) -> Objectives:
        objectives = cfg.objectives
        return cls(tuple(o.metric for o in objectives), tuple(o.direction for o in objectives), tuple(cfg.constraints))

    @property
    def multi(self) -> bool:
        return len(self.metrics) > 1

    def missing(self, metrics: dict[str, float]) -> str | None:
        """Why ``metrics`` cannot be told (a missing or non-finite objective or constraint metric), else None."""
        for metric in [*self.metrics, *(c.metric for c in self.constraints)]:
            value = metrics.get(metric)
            if value is None:
                field = "objective.metric" if metric in self.metrics else "constraints"
                return (
                    f"trainer returned no metric {metric!r} (got: {', '.join(metrics) or 'nothing'}); "
                    f"set {field} to one of those"
                )
            if not math.isfinite(value):
                return f"non-finite {'objective' if metric in self.metrics else 'constraint'} value {metric}={value}"
        return None

    def values(self, metrics: dict[str, float]) -> list[float]:
        """The objective values in order (call :meth:`missing` first)."""
        return [float(metrics[m]) for m in self.metrics]

    def violations(self, metrics: dict[str, float]) -> dict[str, float]:
        """Each constraint's violation (<= 0: satisfied), keyed by its metric."""
        return {c.metric: c.violation(float(metrics[c.metric])) for c in self.constraints}


def feasible(trial: FrozenTrial) -> bool:
    """Whether the trial meets every constraint it was told (a trial without constraints does)."""
    return all(v <= 0.0 for v in trial.constraints.values())


def _losses(values: Sequence[float], directions: Sequence[str]) -> list[float]:
    """``values`` as losses (smaller is better)."""
    return [-v if d == "maximize" else v for v, d in zip(values, directions, strict=True)]


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether values ``a`` Pareto-dominate ``b``: no worse in every objective, better in one."""
    la, lb = _losses(a, directions), _losses(b, directions)
    return all(x <= y for x, y in zip(la, lb, strict=True)) and any(x < y for x, y in zip(la, lb, strict=True))


def pareto_front(trials: Sequence[FrozenTrial], directions: Sequence[str]) -> list[FrozenTrial]:
    """The feasible COMPLETE trials no other feasible COMPLETE trial dominates, by number."""
    from optuna.trial import TrialState

    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None and feasible(t)]
    return sorted(
        (t for t in done if not any(dominates(o.values, t.values, directions) for o in done if o is not t)),
        key=lambda t: t.number,
    )


def hypervolume(points: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]) -> float:
    """The hypervolume ``points`` dominate up to ``reference`` (each objective in its own direction).

    Points that do not strictly beat the reference in every objective add nothing.
    """
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    ref = np.asarray(_losses(reference, directions), dtype=float)
    losses = [_losses(p, directions) for p in points]
    inside = np.asarray([p for p in losses if all(x < r for x, r in zip(p, ref, strict=True))], dtype=float)
    if not len(inside):
        return 0.0
    return float(compute_hypervolume(inside, ref))


def study_metrics(study: optuna.Study) -> list[str]:
    """The objective names of a stored study (Optuna's metric names, else its ``hpsearch.objective``)."""
    n = len(study.directions)
    names = study.metric_names
    if names and len(names) == n:
        return list(names)
    single = study.user_attrs.get("hpsearch.objective")
    return [single] if n == 1 and single else [f"objective {i}" for i in range(n)]


def study_directions(study: optuna.Study) -> list[str]:
    return [d.name.lower() for d in study.directions]
