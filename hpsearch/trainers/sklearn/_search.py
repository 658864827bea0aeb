"""Trainer ``sklearn_search``: scikit-learn's own GridSearchCV, RandomizedSearchCV
or HalvingGridSearchCV, imported into the study as Optuna trials.

The trainer runs the whole search once (``imports_trials``); the manager turns
each row of ``cv_results_`` into one trial of the study, in the same storage
as every other study, so ``hpsearch compare`` puts the classical baseline next
to TPE or a fine-tune on equal terms. Cross-validation, failed fits
(``error_score``) and the refit are scikit-learn's; this module only maps the
YAML in and the results out, exactly (float64 values are stored unchanged).

Each row becomes a trial with

* ``params``: the candidate's params (tuples and other non-scalars as JSON text);
* ``value``: ``mean_test_<objective>``;
* user attrs: every other ``cv_results_`` column (``std_test_<m>``,
  ``rank_test_<m>``, ``split<k>_test_<m>``, ``mean_fit_time`` ...), plus
  ``strategy``, ``sklearn_version``, ``metrics`` and ``evaluation`` (what the folds were:
  ``validation: holdout`` scores on the text trainer's validation split, as one
  ``PredefinedSplit`` fold). With one scorer,
  scikit-learn's ``..._score`` keys are renamed ``..._<scorer name>``.

States: a row with a non-finite mean score (failed fits) is ``FAIL`` with a
``fail_reason``; in a halving search the rows of rounds before the last one
are ``PRUNED`` (their candidates were scored on fewer resources), the last
round's rows are ``COMPLETE``, so the study's best trial is scikit-learn's
``best_index_``. ``best_params_``, ``best_score_`` and friends become study
attributes (``sklearn.*``) and the refit estimator the study artifact
``refit_estimator.joblib``.

Resuming: scikit-learn's searches cannot resume (scikit-learn#17069), so with a cache
folder (``ctx.cache_dir``, the study's checkpoint folder's ``cache/``) every finished
fit (one candidate on one fold, and the refit) is kept in ``cache/sklearn_search``
(:mod:`hpsearch.trainers.sklearn._fitcache`), keyed by the settings, the candidate's
params and the rows it was fitted on. A search killed halfway and run again loads
those fits and fits only the others; its ``cv_results_`` (bar the ``*_time``
columns), best candidate and trials equal an uninterrupted run's. The study
attributes ``sklearn.cached_fits`` and ``sklearn.new_fits`` count them.
``cache_fits: false`` turns it off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import re
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from hpsearch.data._splits import EVALUATION_ATTR
from hpsearch.errors import ConfigError, TrainerError, one_line
from hpsearch.trainers._base import RECORDS_ATTR, BaseTrainer, TrialContext, TrialRecord
from hpsearch.trainers.sklearn._common import (
    SklearnSettings,
    check_params,
    check_scoring,
    coerce_params,
    make_estimator,
    metric_key,
)
from hpsearch.trainers.sklearn._evaluation import check_validation, evaluation_data
from hpsearch.trainers.sklearn._fitcache import FitCache, FitCounts, cached_estimator, plain_estimator

__all__ = ["SklearnSearchTrainer", "SklearnSearchSettings", "STRATEGIES"]

#: strategy -> (module, class, name of its space argument)
STRATEGIES: dict[str, tuple[str, str, str]] = {
    "grid_search_cv": ("sklearn.model_selection", "GridSearchCV", "param_grid"),
    "randomized_search_cv": ("sklearn.model_selection", "RandomizedSearchCV", "param_distributions"),
    "halving_grid_search_cv": ("sklearn.model_selection", "HalvingGridSearchCV", "param_grid"),
}

#: Arguments the trainer sets itself; ``search_options`` may not override them.
_OWN_ARGS = frozenset(
    {
        "estimator",
        "param_grid",
        "param_distributions",
        "scoring",
        "refit",
        "cv",
        "n_jobs",
        "error_score",
        "return_train_score",
        "n_iter",
        "random_state",
    }
)
ARTIFACT = "refit_estimator.joblib"
#: The fit cache's folder under ``ctx.cache_dir``.
CACHE_FOLDER = "sklearn_search"

log = logging.getLogger("hpsearch.sklearn")


class SklearnSearchSettings(SklearnSettings):
    strategy: Literal["grid_search_cv", "randomized_search_cv", "halving_grid_search_cv"] = "grid_search_cv"
    #: One scorer name or several; the search refits on ``objective.metric``.
    scoring: str | list[str] = "accuracy"
    #: Parameter -> list of values, or a list of such grids (checked in validate).
    param_grid: Any = None
    #: Parameter -> list of values, or ``{type: float|int, low, high, log}``.
    param_distributions: Any = None
    n_iter: int = Field(10, ge=1)
    #: random_state of RandomizedSearchCV / HalvingGridSearchCV.
    seed: int = 0
    #: Score of a failed fit (scikit-learn's ``error_score``); "raise" stops the search.
    error_score: float | Literal["raise"] = math.nan
    return_train_score: bool = False
    #: Other keyword arguments of the search class (e.g. factor, min_resources).
    search_options: dict[str, Any] = Field(default_factory=dict)
    #: Keep each finished fit in the study's cache folder, so that a re-run of a killed
    #: search fits only what it had not finished (false: refit everything, store nothing).
    cache_fits: bool = True


class _LogIntUniform:
    """Integers drawn log-uniformly in [low, high] (an ``rvs`` object for RandomizedSearchCV)."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def rvs(self, random_state: Any = None) -> int:
        from scipy.stats import loguniform

        value = loguniform(self.low, self.high + 1).rvs(random_state=random_state)
        return int(min(self.high, max(self.low, math.floor(value))))


def _search_class(strategy: str) -> type:
    import importlib

    if strategy == "halving_grid_search_cv":
        import sklearn.experimental.enable_halving_search_cv  # noqa: F401
    module, name, _ = STRATEGIES[strategy]
    return getattr(importlib.import_module(module), name)


def optuna_value(value: Any) -> Any:
    """A param value as Optuna stores it: scalars as they are, anything else as JSON text."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple)):
        with contextlib.suppress(TypeError, ValueError):  # not a one-element array: keep it
            value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        try:
            return json.dumps(list(value))
        except (TypeError, ValueError):
            pass
    return repr(value)


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers (float64 -> float is exact); containers recursively."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _add_choice(choices: list[Any], value: Any) -> None:
    if not any(c == value and type(c) is type(value) for c in choices):
        choices.append(value)


class SklearnSearchTrainer(BaseTrainer):
    """Runs scikit-learn's search class once and leaves one record per ``cv_results_`` row."""

    kind = "sklearn_search"
    Settings = SklearnSearchSettings
    imports_trials = True
    settings: SklearnSearchSettings

    # ------------------------------------------------------------ checks

    @property
    def _space_field(self) -> str:
        return STRATEGIES[self.settings.strategy][2]

    def _grids(self) -> list[tuple[str, dict[str, Any]]]:
        """(field path, grid) pairs, each grid checked to be a mapping of non-empty lists."""
        s = self.settings
        field = f"trainer.{self._space_field}"
        space = getattr(s, self._space_field)
        other = "param_distributions" if self._space_field == "param_grid" else "param_grid"
        if getattr(s, other) is not None:
            raise ConfigError(
                f"trainer.{other}: not used by strategy {s.strategy!r}, which searches "
                f"trainer.{self._space_field}; rename it or change the strategy"
            )
        if space is None:
            raise ConfigError(f"{field}: strategy {s.strategy!r} needs {field}, e.g. {{max_depth: [3, 5, 10]}}")
        if isinstance(space, dict):
            grids = [(field, space)]
        elif isinstance(space, list) and self._space_field == "param_grid":
            if not space:
                raise ConfigError(f"{field}: must be a mapping of parameter -> list of values, got []")
            grids = [(f"{field}[{i}]", g) for i, g in enumerate(space)]
        else:
            raise ConfigError(
                f"{field}: must be a mapping of parameter -> list of values, got {type(space).__name__} {space!r:.80}"
            )
        for where, grid in grids:
            if not isinstance(grid, dict) or not grid:
                raise ConfigError(
                    f"{where}: must be a non-empty mapping of parameter -> list of values, got {grid!r:.80}"
                )
            for name, values in grid.items():
                if isinstance(values, dict) and self._space_field == "param_distributions":
                    self._range(f"{where}.{name}", values)
                elif not isinstance(values, list) or not values:
                    raise ConfigError(f"{where}.{name}: must be a non-empty list of values, got {values!r:.80}")
        return grids

    def _range(self, where: str, spec: dict[str, Any]) -> Any:
        """A ``{type: float|int, low, high, log}`` spec -> (scipy-like sampler, Optuna distribution)."""
        from optuna.distributions import FloatDistribution, IntDistribution

        from hpsearch.config import FloatParam, IntParam

        kind = spec.get("type")
        models: dict[Any, type[FloatParam] | type[IntParam]] = {"float": FloatParam, "int": IntParam}
        model = models.get(kind)
        if model is None:
            raise ConfigError(
                f"{where}: expected a list of values or {{type: float|int, low, high, log}}, got type {kind!r}"
            )
        try:
            p = model.model_validate(spec)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise ConfigError(
                f"{where}{'.' + loc if loc else ''}: {err['msg'].removeprefix('Value error, ')}"
            ) from None
        if (kind == "float" and p.step is not None) or (kind == "int" and p.step != 1):
            raise ConfigError(f"{where}.step: not supported in param_distributions; list the values instead")
        import scipy.stats

        if kind == "float":
            rv = scipy.stats.loguniform(p.low, p.high) if p.log else scipy.stats.uniform(p.low, p.high - p.low)
            return rv, FloatDistribution(p.low, p.high, log=p.log)
        low, high = int(p.low), int(p.high)  # an IntParam: already ints
        rv = _LogIntUniform(low, high) if p.log else scipy.stats.randint(low, high + 1)
        return rv, IntDistribution(low, high, log=p.log)

    def metrics(self) -> frozenset[str]:
        """The scorers: each imported trial's value is the mean test score of one of them."""
        scoring = self.settings.scoring
        return frozenset([scoring] if isinstance(scoring, str) else scoring)

    def validate(self, param_names: set[str]) -> None:
        s = self.settings
        if param_names:
            raise ConfigError(
                f"search_space.{sorted(param_names)[0]}: trainer 'sklearn_search' searches "
                f"trainer.{self._space_field}; move the parameter there and remove search_space"
            )
        metrics = check_scoring(s.scoring)
        if self.objective not in metrics:
            raise ConfigError(
                f"objective.metric: {self.objective!r} is not one of trainer.scoring {metrics}; "
                "the search refits on the objective, so name a scorer as the objective"
            )
        if s.strategy == "halving_grid_search_cv" and len(metrics) > 1:
            raise ConfigError(f"trainer.scoring: HalvingGridSearchCV supports one scorer, got {metrics}; keep one")
        grids = self._grids()
        check_params(
            s.estimator,
            {"trainer.estimator_params": sorted(s.estimator_params), **{w: sorted(g) for w, g in grids}},
        )
        check_validation(s)
        import inspect

        allowed = set(inspect.signature(_search_class(s.strategy)).parameters) - _OWN_ARGS - {"self"}
        for key in s.search_options:
            if key not in allowed:
                raise ConfigError(
                    f"trainer.search_options.{key}: not an option of {STRATEGIES[s.strategy][1]} "
                    f"that can be set here; valid: {', '.join(sorted(allowed))}"
                )
        evaluation_data(s, self.study_dir, make_estimator(s.estimator, s.estimator_params))

    # ------------------------------------------------------------ the search

    def _space(self, estimator: Any) -> tuple[Any, dict[str, Any]]:
        """scikit-learn's space argument, and each param's Optuna distribution."""
        from optuna.distributions import BaseDistribution, CategoricalDistribution

        defaults = estimator.get_params(deep=True)
        choices: dict[str, list[Any]] = {}
        ranges: dict[str, BaseDistribution] = {}
        sk_grids = []
        for where, grid in self._grids():
            sk: dict[str, Any] = {}
            for name, values in grid.items():
                if isinstance(values, dict):
                    sk[name], ranges[name] = self._range(f"{where}.{name}", values)
                    continue
                sk[name] = [coerce_params(defaults, {name: v})[name] for v in values]
                for v in sk[name]:
                    _add_choice(choices.setdefault(name, []), optuna_value(v))
            sk_grids.append(sk)
        dists: dict[str, Any] = {k: CategoricalDistribution(v) for k, v in choices.items()}
        dists.update(ranges)
        space: Any = sk_grids[0] if isinstance(getattr(self.settings, self._space_field), dict) else sk_grids
        return space, dists

    def run(self, params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
        """Run the whole search once; leave one :class:`TrialRecord` per candidate in
        ``ctx.user_attrs[RECORDS_ATTR]`` and the search's summary as study attributes.

        Returns the best candidate's mean test score for each scorer (and the objective).
        """
        import joblib

        s = self.settings
        metrics = check_scoring(s.scoring)
        objective = _require_objective(ctx.objective, metrics)
        search, failures, counts = self.fit_search(ctx)
        _, dists = self._space(search.estimator)
        evaluation = evaluation_data(s, self.study_dir, search.estimator).record
        records = _Candidates(search, s, metrics, objective, dists, failures, evaluation).records()
        ctx.user_attrs[RECORDS_ATTR] = records
        ctx.user_attrs.update(_study_attrs(search, s.strategy, metrics, objective, failures, len(records)))
        if counts is not None:
            ctx.user_attrs["sklearn.cached_fits"] = counts.cached
            ctx.user_attrs["sklearn.new_fits"] = counts.fitted + counts.failed + counts.uncached
        joblib.dump(search.best_estimator_, ctx.artifact_dir / ARTIFACT)
        results, best, single = search.cv_results_, int(search.best_index_), len(metrics) == 1
        return {m: float(results[_result_key(m, single)][best]) for m in metrics} | {
            objective: float(search.best_score_)
        }

    def fit_search(self, ctx: TrialContext) -> tuple[Any, list[str], FitCounts | None]:
        """The fitted scikit-learn search, the reasons of its failed fits, and how its fits were
        served when ``ctx.cache_dir`` is set (None otherwise: no cache, as without one).

        With a cache, the fits (and the refit) an earlier run of the same settings finished
        are loaded from ``ctx.cache_dir / "sklearn_search"`` instead of fitted again.
        """
        s = self.settings
        metrics = check_scoring(s.scoring)
        objective = _require_objective(ctx.objective, metrics)
        estimator = make_estimator(s.estimator, s.estimator_params)
        data = evaluation_data(s, self.study_dir, estimator)
        X, y = data.X, data.y
        space, _ = self._space(estimator)
        cache = self._fit_cache(ctx, metrics)
        fitted = estimator if cache is None else cached_estimator(estimator, cache)
        search = self._search(fitted, space, metrics, objective, threads=ctx.resources.threads, cv=data.cv)
        if cache is None:
            return search, _fit(search, X, y), None
        try:
            failures = _fit(search, X, y)
        finally:
            counts = cache.close(prune=hasattr(search, "cv_results_"))
        search.estimator = estimator
        if hasattr(search, "best_estimator_"):
            search.best_estimator_ = plain_estimator(search.best_estimator_)
        total = counts.cached + counts.fitted + counts.failed + counts.uncached
        log.info("sklearn_search: %d of %d fits loaded from the cache %s", counts.cached, total, cache.folder)
        return search, failures, counts

    def _fit_cache(self, ctx: TrialContext, metrics: list[str]) -> FitCache | None:
        """The fit cache of this search's settings, or None (no ``ctx.cache_dir``, or ``cache_fits: false``)."""
        if ctx.cache_dir is None or not self.settings.cache_fits:
            return None
        context = self.settings.model_dump(mode="json", include={"estimator", "estimator_params"})
        folder = Path(ctx.cache_dir) / CACHE_FOLDER
        try:
            return FitCache.open(folder, {**context, "scoring": metrics})
        except OSError as err:
            log.warning("sklearn_search: no fit cache (%s): a re-run will fit everything again", err)
            return None

    def _search(self, estimator: Any, space: Any, metrics: list[str], objective: str, *, threads: int, cv: Any) -> Any:
        """The unfitted scikit-learn search object of ``trainer.strategy``, scoring on the folds ``cv``."""
        s = self.settings
        kwargs: dict[str, Any] = {
            self._space_field: space,
            "scoring": metrics if len(metrics) > 1 else metrics[0],
            "refit": objective if len(metrics) > 1 else True,
            "cv": cv,
            "n_jobs": threads,
            "error_score": s.error_score,
            "return_train_score": s.return_train_score,
            **s.search_options,
        }
        if s.strategy == "randomized_search_cv":
            kwargs["n_iter"] = s.n_iter
        if s.strategy != "grid_search_cv":
            kwargs["random_state"] = s.seed
        return _search_class(s.strategy)(estimator, **kwargs)


def _require_objective(objective: str, metrics: list[str]) -> str:
    if objective not in metrics:  # validate() refuses this; a direct run() may not
        raise TrainerError(
            f"objective.metric: {objective!r} is not one of trainer.scoring {metrics}; "
            "the search refits on the objective, so name a scorer as the objective"
        )
    return objective


def _fit(search: Any, X: Any, y: Any) -> list[str]:
    """Fit ``search``; return the reasons of failed fits and re-emit every other warning."""
    from sklearn.exceptions import FitFailedWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FitFailedWarning)
        search.fit(X, y)
    failures = _fit_errors([w for w in caught if issubclass(w.category, FitFailedWarning)])
    for w in caught:
        if not issubclass(w.category, FitFailedWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return failures


class _Candidates:
    """The fitted search's ``cv_results_`` as trial records; the constructor only stores."""

    def __init__(
        self,
        search: Any,
        settings: SklearnSearchSettings,
        metrics: list[str],
        objective: str,
        dists: dict[str, Any],
        failures: list[str],
        evaluation: dict[str, Any],
    ) -> None:
        self.search, self.s, self.metrics, self.objective = search, settings, metrics, objective
        self.dists, self.failures, self.evaluation = dists, failures, evaluation

    def records(self) -> list[dict[str, Any]]:
        """One :class:`TrialRecord` (as a dict) per candidate, in ``cv_results_`` order."""
        import sklearn

        results = self.search.cv_results_
        self.version = sklearn.__version__
        self.last_iter = max(results["iter"]) if "iter" in results else None
        self.n_splits = int(self.search.n_splits_)
        return [self._record(i, cand) for i, cand in enumerate(results["params"])]

    def _attrs(self, i: int) -> dict[str, Any]:
        single = len(self.metrics) == 1
        attrs: dict[str, Any] = {"strategy": self.s.strategy, "sklearn_version": self.version}
        for col, values in self.search.cv_results_.items():
            if col == "params" or col.startswith("param_"):
                continue
            attrs[metric_key(col, self.metrics[0]) if single else col] = _plain(values[i])
        attrs["metrics"] = {m: attrs[f"mean_test_{m}"] for m in self.metrics if math.isfinite(attrs[f"mean_test_{m}"])}
        attrs[EVALUATION_ATTR] = self.evaluation
        return attrs

    def _state(self, attrs: dict[str, Any], value: float) -> str:
        """COMPLETE, FAIL (non-finite score; the reason goes into ``attrs``) or PRUNED (halving)."""
        if not math.isfinite(value):
            n_splits = self.n_splits
            splits = [attrs.get(f"split{k}_test_{self.objective}") for k in range(n_splits)]
            bad = sum(1 for v in splits if v is None or not math.isfinite(v))
            attrs["fail_reason"] = one_line(
                f"{bad} of {n_splits} fits failed (error_score={self.s.error_score}): "
                + ("; ".join(self.failures) or "non-finite score")
            )[:1000]
            return "FAIL"
        if self.last_iter is not None and attrs["iter"] < self.last_iter:
            return "PRUNED"
        return "COMPLETE"

    def _record(self, i: int, cand: dict[str, Any]) -> dict[str, Any]:
        attrs = self._attrs(i)
        value = attrs[f"mean_test_{self.objective}"]
        state = self._state(attrs, value)
        record = TrialRecord(
            params={k: optuna_value(v) for k, v in cand.items()},
            distributions={k: _dist_json(self.dists[k]) for k in cand},
            state=state,
            value=value,
            user_attrs=attrs,
            duration_s=(attrs["mean_fit_time"] + attrs["mean_score_time"]) * self.n_splits,
        )
        return dataclasses.asdict(record)


def _study_attrs(
    search: Any, strategy: str, metrics: list[str], objective: str, failures: list[str], n_candidates: int
) -> dict[str, Any]:
    """The search's summary, kept as study attributes (``sklearn.*``)."""
    import sklearn

    attrs = {
        "sklearn.strategy": strategy,
        "sklearn.version": sklearn.__version__,
        "sklearn.scoring": metrics,
        "sklearn.refit_metric": objective,
        "sklearn.best_params": _plain(search.best_params_),
        "sklearn.best_score": float(search.best_score_),
        "sklearn.best_index": int(search.best_index_),
        "sklearn.n_splits": int(search.n_splits_),
        "sklearn.n_candidates": n_candidates,
        "sklearn.refit_time": float(getattr(search, "refit_time_", 0.0)),
        "sklearn.fit_failures": failures,
    }
    if "iter" in search.cv_results_:
        attrs["sklearn.n_iterations"] = int(search.n_iterations_)
        attrs["sklearn.n_resources"] = _plain(search.n_resources_)
    return attrs


def _result_key(metric: str, single: bool) -> str:
    return "mean_test_score" if single else f"mean_test_{metric}"


def _dist_json(dist: Any) -> str:
    from optuna.distributions import distribution_to_json

    return distribution_to_json(dist)


_ERROR_LINE = re.compile(r"^\w[\w.]*(Error|Exception|Warning)\b.*")


def _fit_errors(caught: list[warnings.WarningMessage]) -> list[str]:
    """The distinct exception lines of scikit-learn's FitFailedWarning messages."""
    out: list[str] = []
    for w in caught:
        blocks = str(w.message).split("fits failed with the following error:")
        for block in blocks[1:]:
            lines = [ln.strip() for ln in block.split("-" * 20)[0].strip().splitlines() if ln.strip()]
            errors = [ln for ln in lines if _ERROR_LINE.match(ln)]
            text = errors[-1] if errors else (lines[-1] if lines else "")
            if text and text not in out:
                out.append(text[:300])
    return out
