"""Trainer ``sklearn_cv``: an estimator scored by cross-validation, fold by fold.

Each fold's running mean score is reported, so a pruner can stop a bad
configuration after its first folds. Cross-validation itself is scikit-learn's.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import Field

from hpsearch.data._tabular import load_tabular
from hpsearch.errors import ConfigError, one_line
from hpsearch.trainers._base import BaseTrainer, TrainerSettings, TrialContext, TrialPruned

__all__ = ["SklearnCVTrainer", "import_estimator"]


def import_estimator(path: str, field: str) -> type:
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise ConfigError(f"{field}: expected an import path like sklearn.tree.DecisionTreeClassifier, got {path!r}")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise ConfigError(f"{field}: cannot import {path!r}; check the module and class name") from None
    if not (isinstance(cls, type) and hasattr(cls, "fit") and hasattr(cls, "get_params")):
        raise ConfigError(f"{field}: {path!r} is not a scikit-learn estimator class")
    return cls


class SklearnCVSettings(TrainerSettings):
    estimator: str
    estimator_params: dict[str, Any] = Field(default_factory=dict)
    dataset: str = "digits"
    target_column: str | None = None
    cv: int = Field(5, ge=2)
    scoring: str = "accuracy"
    shuffle: bool = True
    data_seed: int = 0


class SklearnCVTrainer(BaseTrainer):
    """Cross-validated score of a scikit-learn estimator for each trial's params."""

    kind = "sklearn_cv"
    Settings = SklearnCVSettings
    settings: SklearnCVSettings

    def validate(self, param_names: set[str]) -> None:
        s = self.settings
        cls = import_estimator(s.estimator, "trainer.estimator")
        valid = set(cls().get_params())
        for name in sorted(param_names | set(s.estimator_params)):
            if name not in valid:
                where = "search_space" if name in param_names else "trainer.estimator_params"
                raise ConfigError(
                    f"{where}.{name}: {cls.__name__} has no parameter {name!r}; valid: "
                    f"{', '.join(sorted(valid))}"
                )
        from sklearn.metrics import get_scorer_names

        if s.scoring not in get_scorer_names():
            raise ConfigError(
                f"trainer.scoring: unknown scoring {s.scoring!r}; use a scikit-learn scorer name "
                "such as accuracy, f1_macro, roc_auc, neg_log_loss"
            )
        load_tabular(s.dataset, base_dir=self.study_dir, target_column=s.target_column)

    def run(self, params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
        import numpy as np
        from sklearn.model_selection import check_cv, cross_validate
        from sklearn.base import is_classifier

        s = self.settings
        X, y = load_tabular(s.dataset, base_dir=self.study_dir, target_column=s.target_column)
        est = import_estimator(s.estimator, "trainer.estimator")(**{**s.estimator_params, **params})
        splitter = check_cv(s.cv, y, classifier=is_classifier(est))
        if s.shuffle and hasattr(splitter, "shuffle"):
            splitter.shuffle, splitter.random_state = True, s.data_seed
        scores: list[float] = []
        fit_time = 0.0
        for k, split in enumerate(splitter.split(X, y)):
            try:
                res = cross_validate(est, X, y, cv=[split], scoring=s.scoring, error_score="raise")
            except Exception as e:  # noqa: BLE001 - make the reason name the estimator
                raise RuntimeError(one_line(f"{type(est).__name__} fit failed: {e}")) from e
            scores.append(float(res["test_score"][0]))
            fit_time += float(res["fit_time"][0])
            ctx.report(float(np.mean(scores)), step=k + 1)
            if ctx.should_prune():
                raise TrialPruned()
        ctx.set_user_attr("cv_scores", scores)
        return {
            s.scoring: float(np.mean(scores)),
            f"{s.scoring}_std": float(np.std(scores)),
            "fit_time": fit_time,
        }
