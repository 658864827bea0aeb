"""Trainer ``sklearn_cv``: an estimator scored by cross-validation, fold by fold.

Each fold's running mean score is reported, so a pruner can stop a bad
configuration after its first folds. Cross-validation itself is scikit-learn's.
The estimator may be a Pipeline (search-space names are then ``step__param``)
and the data a built-in text set; see :mod:`hpsearch.trainers.sklearn._common`.
Folds come from :func:`~hpsearch.trainers.sklearn._evaluation.evaluation_data`, the same as
the ``sklearn_search`` trainer's, so both score a candidate identically; with
``validation: holdout`` the one fold is the text trainer's validation split.
"""

from __future__ import annotations

from typing import Any

from hpsearch.data._splits import EVALUATION_ATTR
from hpsearch.errors import one_line
from hpsearch.trainers._base import BaseTrainer, TrialContext, TrialPruned
from hpsearch.trainers.sklearn._common import (
    SklearnSettings,
    check_params,
    check_scoring,
    import_estimator,
    make_estimator,
)
from hpsearch.trainers.sklearn._evaluation import check_validation, evaluation_data

__all__ = ["SklearnCVTrainer", "SklearnCVSettings", "import_estimator"]


class SklearnCVSettings(SklearnSettings):
    scoring: str = "accuracy"


class SklearnCVTrainer(BaseTrainer):
    """Cross-validated score of a scikit-learn estimator for each trial's params."""

    kind = "sklearn_cv"
    Settings = SklearnCVSettings
    runs_on_driver = True
    settings: SklearnCVSettings

    def validate(self, param_names: set[str]) -> None:
        s = self.settings
        check_params(
            s.estimator,
            {"search_space": sorted(param_names), "trainer.estimator_params": sorted(s.estimator_params)},
        )
        check_scoring(s.scoring)
        check_validation(s)
        evaluation_data(s, self.study_dir, make_estimator(s.estimator, dict(s.estimator_params)))

    def metrics(self) -> frozenset[str]:
        """The keys :meth:`run` returns: the scorer, its spread over folds and the fit time."""
        scoring = self.settings.scoring
        return frozenset({scoring, f"{scoring}_std", "fit_time"})

    def warm(self) -> None:
        """Import scikit-learn's cross-validation and the estimator; read the data."""
        import sklearn.model_selection  # noqa: F401

        est = make_estimator(self.settings.estimator, dict(self.settings.estimator_params))
        evaluation_data(self.settings, self.study_dir, est)

    def run(self, params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
        """Score ``params`` fold by fold (one fold: the holdout), reporting the running mean.

        Leaves ``cv_scores`` (each fold's score, in fold order) and ``evaluation`` (what the
        folds were) as trial attributes.
        """
        import numpy as np
        from sklearn.model_selection import cross_validate

        s = self.settings
        est = make_estimator(s.estimator, {**s.estimator_params, **params})
        data = evaluation_data(s, self.study_dir, est)
        ctx.set_user_attr(EVALUATION_ATTR, data.record)
        scores: list[float] = []
        fit_time = 0.0
        for k, split in enumerate(data.splits()):
            try:
                res = cross_validate(
                    est, data.X, data.y, cv=[split], scoring=s.scoring, error_score="raise", n_jobs=None
                )
            except Exception as e:
                raise RuntimeError(one_line(f"{type(est).__name__} fit failed: {e}")) from e
            scores.append(float(res["test_score"][0]))
            fit_time += float(res["fit_time"][0])
            ctx.report(float(np.mean(scores)), step=k + 1)
            if ctx.should_prune():
                ctx.set_user_attr("cv_scores", scores)
                raise TrialPruned()
        ctx.set_user_attr("cv_scores", scores)
        return {
            s.scoring: float(np.mean(scores)),
            f"{s.scoring}_std": float(np.std(scores)),
            "fit_time": fit_time,
        }
