"""Search-space specs from YAML -> Optuna distributions, and grids."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from hpsearch.config import CategoricalParam, FloatParam, IntParam, StudyConfig
from hpsearch.errors import ConfigError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

__all__ = ["MAX_GRID_POINTS", "grid_points", "grid_values", "to_distributions"]

#: A grid larger than this is refused: it is almost surely a typo in a step.
MAX_GRID_POINTS = 1_000_000


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


def grid_points(cfg: StudyConfig) -> dict[str, list[Any]]:
    """The grid search space of a study: parameter -> values."""
    file = cfg.file
    if not cfg.search_space:
        raise ConfigError(f"{file}: search_space: the grid sampler needs at least one parameter")
    space = {name: grid_values(name, spec, file) for name, spec in cfg.search_space.items()}
    total = 1
    for values in space.values():
        total *= len(values)
    if total > MAX_GRID_POINTS:
        raise ConfigError(
            f"{file}: search_space: the grid has {total:,} points (over {MAX_GRID_POINTS:,}); "
            "use fewer values or a random/tpe sampler"
        )
    return space
