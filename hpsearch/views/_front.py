"""Pareto fronts of multi-objective studies side by side: each front's size and hypervolume.

The hypervolume of a front is the volume of objective space it dominates up to
a reference point; a larger one is a better front. It is comparable only
between studies of the same objectives against the same point, so ``compare``
uses one point for all of them: ``--reference`` as given, or else, for each
objective, the worst value among every compared study's feasible COMPLETE
trials, moved 10% of that objective's range further out (so that the fronts'
extreme points count too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpsearch.errors import ConfigError
from hpsearch.study._objectives import hypervolume, pareto_front, study_directions, study_metrics

if TYPE_CHECKING:
    import optuna

__all__ = ["FrontSummary", "front_cell", "front_summaries", "parse_reference"]


@dataclass
class FrontSummary:
    """One study's Pareto front against the shared reference point."""

    metrics: list[str]
    directions: list[str]
    size: int
    hypervolume: float | None
    reference: list[float] | None


def parse_reference(text: str | None, n: int | None = None) -> list[float] | None:
    """``--reference 0.5,10`` as numbers (one per objective when ``n`` is known)."""
    if text is None:
        return None
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise ConfigError(f"--reference: expected numbers separated by commas, e.g. 0.5,10; got {text!r}") from None
    if n is not None and len(values) != n:
        raise ConfigError(f"--reference: give one value per objective ({n}), got {len(values)}")
    return values


def _own_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    from hpsearch.study._scheduling import WARM_START_ATTR

    return [t for t in study.get_trials(deepcopy=False) if WARM_START_ATTR not in t.user_attrs]


def _nadir(fronts: Sequence[list[optuna.trial.FrozenTrial]], directions: list[str]) -> list[float] | None:
    """The worst value per objective over every front, 10% of the range further out."""
    points = [t.values for front in fronts for t in front]
    if not points:
        return None
    out = []
    for i, d in enumerate(directions):
        column = [p[i] for p in points]
        lo, hi = min(column), max(column)
        margin = 0.1 * (hi - lo) or 0.1 * abs(hi) or 1e-9
        out.append(lo - margin if d == "maximize" else hi + margin)
    return out


def front_summaries(
    studies: Sequence[optuna.Study], reference: Sequence[float] | None = None
) -> list[FrontSummary | None]:
    """Each study's front size and hypervolume (None for a single-objective study).

    Studies whose objectives differ from the first multi-objective one get a size but no hypervolume.

    Raises:
        ConfigError: ``reference`` does not have one value per objective.
    """
    keys = [(study_metrics(s), study_directions(s)) for s in studies]
    fronts = [pareto_front(_own_trials(s), d) if len(d) > 1 else [] for s, (_, d) in zip(studies, keys, strict=True)]
    multi = [k for k in keys if len(k[1]) > 1]
    if not multi:
        return [None] * len(studies)
    metrics, directions = multi[0]
    same = [k == (metrics, directions) for k in keys]
    if reference is not None and len(reference) != len(directions):
        raise ConfigError(f"--reference: give one value per objective ({', '.join(metrics)}), got {len(reference)}")
    ref = (
        list(reference)
        if reference is not None
        else _nadir([f for f, s in zip(fronts, same, strict=True) if s], directions)
    )
    out: list[FrontSummary | None] = []
    for (m, d), front, comparable in zip(keys, fronts, same, strict=True):
        if len(d) < 2:
            out.append(None)
            continue
        hv = hypervolume([t.values for t in front], d, ref) if comparable and ref is not None else None
        out.append(FrontSummary(m, d, len(front), hv, ref if comparable else None))
    return out


def front_cell(summary: FrontSummary | None) -> dict[str, Any]:
    """The compare row's ``front`` and ``hypervolume`` values."""
    if summary is None:
        return {"front": None, "hypervolume": None}
    return {"front": summary.size, "hypervolume": summary.hypervolume}
