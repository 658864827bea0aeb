"""The search space and Optuna's samplers and pruners, built from a study file."""

from __future__ import annotations

from hpsearch.search._algorithms import (
    SAMPLERS,
    PRUNERS,
    SamplerFactory,
    RETRY_ATTR,
    make_sampler,
    make_pruner,
)
from hpsearch.search._space import (
    to_distributions,
    grid_values,
    grid_points,
    MAX_GRID_POINTS,
)

__all__ = [
    "MAX_GRID_POINTS",
    "PRUNERS",
    "RETRY_ATTR",
    "SAMPLERS",
    "SamplerFactory",
    "grid_points",
    "grid_values",
    "make_pruner",
    "make_sampler",
    "to_distributions",
]
