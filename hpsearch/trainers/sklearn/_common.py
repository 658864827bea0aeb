"""What the scikit-learn trainers share: estimators from YAML, data, folds, scorers.

An estimator is an import path (``sklearn.tree.DecisionTreeClassifier``) or a
Pipeline given as a list of steps::

    estimator:
      - {name: tfidf, estimator: sklearn.feature_extraction.text.TfidfVectorizer,
         params: {analyzer: char, ngram_range: [1, 2]}}
      - {name: clf, estimator: sklearn.linear_model.LogisticRegression, params: {max_iter: 1000}}

Parameters of a Pipeline use scikit-learn's ``step__param`` names everywhere
(``estimator_params``, ``search_space``, ``param_grid``). YAML has no tuples:
a list given for a parameter whose default is a tuple (``ngram_range``,
``hidden_layer_sizes``) is turned into a tuple.

Data is a bundled tabular set (digits, iris, wine, breast_cancer), a built-in
text set (bbc_news, chinese_reviews: raw texts, so the estimator must start
with a vectorizer), or a CSV/TSV file (tabular; text when ``text_column`` is set).
Both trainers build their folds with :func:`make_cv`, so a GridSearchCV study
and a TPE study on the same settings score every candidate on the same folds;
with ``validation: holdout`` both score on the text trainer's validation split
instead (:mod:`hpsearch.trainers.sklearn._evaluation`).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hpsearch.errors import ConfigError
from hpsearch.trainers._base import TrainerSettings

__all__ = [
    "PipelineStep",
    "SklearnSettings",
    "TEXT_DATASETS",
    "import_estimator",
    "make_estimator",
    "estimator_name",
    "check_params",
    "check_scoring",
    "load_xy",
    "make_cv",
    "coerce_params",
]

#: Built-in text datasets (raw strings; read by hpsearch.data._text).
TEXT_DATASETS = ("bbc_news", "chinese_reviews")

_STEP_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class PipelineStep(BaseModel):
    """One step of a Pipeline: a name, an estimator import path, its fixed params."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_STEP_NAME)
    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)


class SklearnSettings(TrainerSettings):
    """``trainer:`` keys shared by ``sklearn_cv`` and ``sklearn_search``."""

    estimator: str | list[PipelineStep]
    estimator_params: dict[str, Any] = Field(default_factory=dict)
    dataset: str = "digits"
    #: Label column of a CSV/TSV file (tabular default: the last column; text: ``label``).
    target_column: str | None = None
    #: Set for a CSV/TSV/JSONL of raw texts (the estimator then starts with a vectorizer).
    text_column: str | None = None
    #: Stratified subsample of at most this many examples (None: all).
    max_examples: int | None = Field(None, ge=10)
    #: ``cv``: ``cv``-fold cross-validation; ``holdout``: the text trainer's validation split
    #: of the same ``max_examples``/``val_fraction``/``test_fraction``/``data_seed``.
    validation: Literal["cv", "holdout"] = "cv"
    cv: int = Field(5, ge=2)
    shuffle: bool = True
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.0, ge=0, lt=1)
    data_seed: int = 0


def import_estimator(path: str, field: str) -> type:
    """The estimator class at ``path``, or a ConfigError naming ``field``."""
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


def coerce_params(defaults: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with YAML lists made tuples where the default value is a tuple."""
    out = {}
    for key, value in params.items():
        if isinstance(value, list) and isinstance(defaults.get(key), tuple):
            value = tuple(value)
        out[key] = value
    return out


def _check_names(valid: set[str], names: list[str], owner: str, where: str) -> None:
    for name in names:
        if name not in valid:
            raise ConfigError(f"{where}.{name}: {owner} has no parameter {name!r}; valid: {', '.join(sorted(valid))}")


def make_estimator(
    spec: str | list[PipelineStep], params: dict[str, Any] | None = None, *, field: str = "trainer.estimator"
) -> Any:
    """A fresh estimator (or Pipeline) from its YAML spec, with ``params`` set."""
    if isinstance(spec, str):
        est = import_estimator(spec, field)()
    else:
        from sklearn.pipeline import Pipeline

        if not spec:
            raise ConfigError(f"{field}: a Pipeline needs at least one step, got []")
        steps = []
        for i, step in enumerate(spec):
            cls = import_estimator(step.estimator, f"{field}[{i}].estimator")
            defaults = cls().get_params(deep=False)
            _check_names(set(defaults), list(step.params), cls.__name__, f"{field}[{i}].params")
            steps.append((step.name, cls(**coerce_params(defaults, step.params))))
        names = [n for n, _ in steps]
        if len(set(names)) != len(names):
            raise ConfigError(f"{field}: step names must be unique, got {names}")
        est = Pipeline(steps)
    if params:
        est.set_params(**coerce_params(est.get_params(deep=True), params))
    return est


def estimator_name(spec: str | list[PipelineStep]) -> str:
    if isinstance(spec, str):
        return spec.rpartition(".")[2]
    return "Pipeline"


def check_params(spec: str | list[PipelineStep], names: dict[str, list[str]]) -> set[str]:
    """Check parameter names against the estimator; ``names`` maps a field path to its names.

    Returns the valid names (``step__param`` for a Pipeline).
    """
    est = make_estimator(spec)
    valid = set(est.get_params(deep=True))
    for where, keys in names.items():
        _check_names(valid, keys, estimator_name(spec), where)
    return valid


def check_scoring(scoring: str | list[str], field: str = "trainer.scoring") -> list[str]:
    """The scoring names as a list; each must be a scikit-learn scorer name."""
    from sklearn.metrics import get_scorer_names

    names = [scoring] if isinstance(scoring, str) else list(scoring)
    if not names:
        raise ConfigError(f"{field}: give at least one scorer name, got []")
    known = set(get_scorer_names())
    for name in names:
        if name not in known:
            raise ConfigError(
                f"{field}: unknown scoring {name!r}; use a scikit-learn scorer name "
                "such as accuracy, f1_macro, roc_auc, neg_log_loss"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"{field}: a scorer is listed twice in {names}")
    return names


# ---------------------------------------------------------------- data

_CACHE: dict[tuple[Any, ...], tuple[Any, Any]] = {}


def _load_text(s: SklearnSettings, base_dir: Path) -> tuple[Any, Any]:
    import numpy as np

    from hpsearch.data._text import DataSourceError, load_text_examples

    try:
        examples, _ = load_text_examples(
            s.dataset,
            text_column=s.text_column or "text",
            label_column=s.target_column or "label",
            base_dir=base_dir,
        )
    except DataSourceError as err:
        field = {"label_column": "target_column"}.get(err.field, err.field)
        raise ConfigError(f"trainer.{field}: {err}") from None
    return np.asarray(examples.texts, dtype=object), np.asarray(examples.labels)


def load_xy(s: SklearnSettings, base_dir: Path) -> tuple[Any, Any]:
    """Features (or raw texts) and labels, subsampled to ``max_examples``; cached per process."""
    from hpsearch.data._tabular import BUNDLED

    builtin = s.dataset in TEXT_DATASETS or (s.dataset in BUNDLED and s.text_column is None)
    where = "" if builtin else str(base_dir)
    key = (s.dataset, where, s.target_column, s.text_column, s.max_examples, s.data_seed)
    if key in _CACHE:
        return _CACHE[key]
    if s.dataset in TEXT_DATASETS or s.text_column is not None:
        X, y = _load_text(s, base_dir)
    else:
        from hpsearch.data._tabular import load_tabular

        X, y = load_tabular(s.dataset, base_dir=base_dir, target_column=s.target_column)
    if s.max_examples is not None and s.max_examples < len(y):
        from sklearn.model_selection import train_test_split

        try:
            X, _, y, _ = train_test_split(X, y, train_size=s.max_examples, stratify=y, random_state=s.data_seed)
        except ValueError as err:
            raise ConfigError(f"trainer.max_examples: cannot subsample {len(y)} examples: {err}") from None
    _CACHE[key] = (X, y)
    return X, y


def make_cv(s: SklearnSettings, estimator: Any, y: Any) -> Any:
    """The folds: (Stratified)KFold with ``cv`` splits, shuffled with ``data_seed``."""
    from sklearn.base import is_classifier
    from sklearn.model_selection import check_cv

    splitter = check_cv(s.cv, y, classifier=is_classifier(estimator))
    if s.shuffle and hasattr(splitter, "shuffle"):
        splitter.shuffle, splitter.random_state = True, s.data_seed
    return splitter


_SCORE_KEY = re.compile(r"^(.*_(?:test|train))_score$")


def metric_key(key: str, metric: str) -> str:
    """A single-metric ``cv_results_`` key with ``score`` renamed to the metric name."""
    return _SCORE_KEY.sub(lambda m: f"{m[1]}_{metric}", key)
