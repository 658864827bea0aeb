"""The search space, Optuna's samplers and pruners built from a study file, and the resume-safe grid."""

from __future__ import annotations

from hpsearch.search._algorithms import (
    PRUNERS,
    SAMPLERS,
    SamplerFactory,
    make_pruner,
    make_sampler,
)
from hpsearch.search._dedupe import FiniteSpace, draw
from hpsearch.search._grid import (
    RETRY_ATTR,
    grid_sampler_class,
    grid_size,
)
from hpsearch.search._space import (
    MAX_GRID_POINTS,
    grid_points,
    grid_values,
    perturb_value,
    resample_value,
    to_distributions,
)

__all__ = [
    "FiniteSpace",
    "MAX_GRID_POINTS",
    "PRUNERS",
    "RETRY_ATTR",
    "SAMPLERS",
    "SamplerFactory",
    "draw",
    "grid_points",
    "grid_sampler_class",
    "grid_size",
    "grid_values",
    "make_pruner",
    "make_sampler",
    "perturb_value",
    "resample_value",
    "to_distributions",
]
