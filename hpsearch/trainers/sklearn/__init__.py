"""scikit-learn trainers: cross-validated estimators and scikit-learn's own searches."""

from __future__ import annotations

from hpsearch.trainers.sklearn._common import (
    TEXT_DATASETS,
    PipelineStep,
    SklearnSettings,
    check_params,
    check_scoring,
    coerce_params,
    estimator_name,
    import_estimator,
    load_xy,
    make_cv,
    make_estimator,
)
from hpsearch.trainers.sklearn._cv import (
    SklearnCVSettings,
    SklearnCVTrainer,
)
from hpsearch.trainers.sklearn._search import (
    STRATEGIES,
    SklearnSearchSettings,
    SklearnSearchTrainer,
)

__all__ = [
    "PipelineStep",
    "STRATEGIES",
    "SklearnCVSettings",
    "SklearnCVTrainer",
    "SklearnSearchSettings",
    "SklearnSearchTrainer",
    "SklearnSettings",
    "TEXT_DATASETS",
    "check_params",
    "check_scoring",
    "coerce_params",
    "estimator_name",
    "import_estimator",
    "load_xy",
    "make_cv",
    "make_estimator",
]
