"""Search-space specs from YAML -> Optuna distributions, and grids."""

from __future__ import annotations

import math
import random
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from hpsearch.config import CategoricalParam, FloatParam, IntParam, StudyConfig
from hpsearch.errors import ConfigError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

__all__ = [
    "ABSENT",
    "MAX_GRID_POINTS",
    "Grid",
    "grid_points",
    "grid_values",
    "perturb_value",
    "resample_value",
    "to_distributions",
]

#: A grid larger than this is refused: it is almost surely a typo in a step.
MAX_GRID_POINTS = 1_000_000

#: A grid value of a conditional param (``when:``) standing for "absent at this point".
ABSENT = "hpsearch:absent"


class Grid(dict[str, list[Any]]):
    """A grid search space (param -> values); ``conditions`` set when params carry ``when:``.

    A conditional param's values end with :data:`ABSENT`; the grid sampler keeps only
    the points the conditions allow (:meth:`hpsearch.search._conditional.Conditions.valid`).
    """

    conditions: Any = None


def to_distributions(cfg: StudyConfig) -> dict[str, BaseDistribution]:
    """One Optuna distribution per search-space entry, in file order."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, BaseDistribution] = {}
    for name, spec in cfg.search_space.items():
        if isinstance(spec, FloatParam):
            out[name] = FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
        elif isinstance(spec, IntParam):
            out[name] = IntDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
        else:
            out[name] = CategoricalDistribution(spec.choices)
    return out


def grid_values(name: str, spec: FloatParam | IntParam | CategoricalParam, file: str) -> list[Any]:
    """The values a grid takes for one parameter.

    Categorical: its choices. Int: low..high by step. Float: needs ``step``;
    values are computed in decimal so ``0.1`` steps do not drift.
    """
    if isinstance(spec, CategoricalParam):
        return list(spec.choices)
    if spec.step is None:
        raise ConfigError(
            f"{file}: search_space.{name}: a grid needs explicit values; add `step:` "
            "to this float range or give `choices: [...]`"
        )
    if isinstance(spec, IntParam):
        return list(range(spec.low, spec.high + 1, spec.step))
    low, high, step = Decimal(str(spec.low)), Decimal(str(spec.high)), Decimal(str(spec.step))
    n = int((high - low) / step)
    if n + 1 > MAX_GRID_POINTS:
        raise ConfigError(f"{file}: search_space.{name}: step gives {n + 1} values; use a larger step")
    return [float(low + i * step) for i in range(n + 1)]


def grid_points(cfg: StudyConfig) -> Grid:
    """The grid search space of a study: parameter -> values (:data:`ABSENT` too for a conditional one)."""
    from hpsearch.search._conditional import Conditions

    file = cfg.file
    if not cfg.search_space:
        raise ConfigError(f"{file}: search_space: the grid sampler needs at least one parameter")
    space = Grid(
        {
            name: grid_values(name, spec, file) + ([ABSENT] if spec.when else [])
            for name, spec in cfg.search_space.items()
        }
    )
    space.conditions = Conditions.of(cfg)
    total = 1
    for values in space.values():
        total *= len(values)
    if total > MAX_GRID_POINTS:
        raise ConfigError(
            f"{file}: search_space: the grid has {total:,} points (over {MAX_GRID_POINTS:,}); "
            "use fewer values or a random/tpe sampler"
        )
    return space


def resample_value(dist: BaseDistribution, rng: random.Random) -> Any:
    """A fresh value from ``dist``, uniform (log-uniform for ``log``), on its step grid."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(dist, CategoricalDistribution):
        return rng.choice(list(dist.choices))
    low, high, log = float(dist.low), float(dist.high), bool(dist.log)  # type: ignore[attr-defined]
    value = math.exp(rng.uniform(math.log(low), math.log(high))) if log else rng.uniform(low, high)
    return _on_grid(dist, value) if isinstance(dist, FloatDistribution) else _on_grid(dist, round(value))


def perturb_value(dist: BaseDistribution, value: Any, factor: float, rng: random.Random) -> Any:
    """``value`` times ``factor``, kept inside ``dist`` and on its step grid; a categorical
    moves to a neighbouring choice (up when ``factor`` > 1, down otherwise), as Ray Tune's PBT does."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices)
        i = choices.index(value) if value in choices else rng.randrange(len(choices))
        return choices[min(len(choices) - 1, i + 1) if factor > 1 else max(0, i - 1)]
    scaled = float(value) * factor
    return _on_grid(dist, scaled) if isinstance(dist, FloatDistribution) else _on_grid(dist, round(scaled))


def _on_grid(dist: Any, value: float) -> Any:
    """``value`` clipped to ``dist``'s range and rounded to its step (an int for an int distribution)."""
    from optuna.distributions import IntDistribution

    low, high = dist.low, dist.high
    value = min(max(value, low), high)
    step = getattr(dist, "step", None)
    if step:
        value = low + round((value - low) / step) * step
        value = min(max(value, low), high)
    return int(value) if isinstance(dist, IntDistribution) else float(value)
