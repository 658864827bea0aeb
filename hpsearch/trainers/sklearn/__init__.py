"""scikit-learn trainers: cross-validated estimators and scikit-learn's own searches."""

from __future__ import annotations

from hpsearch.trainers.sklearn._common import (
    PipelineStep,
    SklearnSettings,
    TEXT_DATASETS,
    import_estimator,
    make_estimator,
    estimator_name,
    check_params,
    check_scoring,
    load_xy,
    make_cv,
    coerce_params,
)
from hpsearch.trainers.sklearn._cv import (
    SklearnCVTrainer,
    SklearnCVSettings,
    import_estimator,
)
from hpsearch.trainers.sklearn._search import (
    SklearnSearchTrainer,
    SklearnSearchSettings,
    STRATEGIES,
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
