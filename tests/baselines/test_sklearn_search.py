"""sklearn_search: cv_results_ lands in the study exactly, failed fits are FAIL trials.

Every test runs the real trainer into a real SQLite file, then runs the same
scikit-learn search class directly and compares the stored numbers with its
``cv_results_`` using ``==`` (no tolerance).
"""

from __future__ import annotations

import math
import textwrap
import warnings

import joblib
import numpy as np
import optuna
import pytest
import sklearn
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, StratifiedKFold

import hpsearch
from tests.conftest import run_cli

TREE = """
name: {name}
objective: {{metric: accuracy, direction: maximize}}
executor: {executor}
trainer:
  kind: sklearn_search
  strategy: grid_search_cv
  estimator: sklearn.tree.DecisionTreeClassifier
  estimator_params: {{random_state: 0}}
  dataset: digits
  cv: 3
  param_grid:
    max_depth: [3, 10, null]
    min_samples_split: [2, 10, 1.5]   # 1.5 is refused by the tree at fit time
"""


def _folds() -> StratifiedKFold:
    return StratifiedKFold(3, shuffle=True, random_state=0)


def _study(tmp_path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_grid_round_trip_exact_with_failing_fit(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(TREE.format(name="grid", executor="local")))
    result = hpsearch.run_study(str(path))
    study = _study(tmp_path, "grid")
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)

    X, y = load_digits(return_X_y=True)
    from sklearn.tree import DecisionTreeClassifier

    ref = GridSearchCV(
        DecisionTreeClassifier(random_state=0),
        {"max_depth": [3, 10, None], "min_samples_split": [2, 10, 1.5]},
        scoring="accuracy", cv=_folds(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(X, y)
    res = ref.cv_results_
    assert len(trials) == len(res["params"]) == 9
    for i, t in enumerate(trials):
        assert t.params == res["params"][i]
        assert t.distributions == {
            "max_depth": CategoricalDistribution([3, 10, None]),
            "min_samples_split": CategoricalDistribution([2, 10, 1.5]),
        }
        assert t.user_attrs["strategy"] == "grid_search_cv"
        assert t.user_attrs["sklearn_version"] == sklearn.__version__
        for col in ("mean_test_score", "std_test_score", "rank_test_score",
                    "split0_test_score", "split1_test_score", "split2_test_score"):
            stored = t.user_attrs[col.replace("_score", "_accuracy")]
            assert _same(stored, res[col][i]), (col, i, stored, res[col][i])
        assert type(t.user_attrs["rank_test_accuracy"]) is int
        for col in ("mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time"):
            assert isinstance(t.user_attrs[col], float)
        if res["params"][i]["min_samples_split"] == 1.5:
            assert t.state == TrialState.FAIL and t.value is None
            reason = t.user_attrs["fail_reason"]
            assert reason.startswith("3 of 3 fits failed (error_score=nan)")
            assert "min_samples_split" in reason and "Got 1.5" in reason
        else:
            assert t.state == TrialState.COMPLETE
            assert t.value == res["mean_test_score"][i]
            assert t.user_attrs["metrics"] == {"accuracy": res["mean_test_score"][i]}

    attrs = study.user_attrs
    assert attrs["sklearn.best_params"] == ref.best_params_
    assert attrs["sklearn.best_score"] == ref.best_score_
    assert attrs["sklearn.best_index"] == ref.best_index_
    assert attrs["sklearn.strategy"] == "grid_search_cv" and attrs["sklearn.version"] == sklearn.__version__
    assert attrs["sklearn.scoring"] == ["accuracy"] and attrs["sklearn.n_splits"] == 3
    assert study.best_trial.number == ref.best_index_ and result.best_value == ref.best_score_
    # The refit estimator is a study artifact and predicts like scikit-learn's.
    store = FileSystemArtifactStore(str(tmp_path / "hpsearch-artifacts"))
    out = tmp_path / "refit.joblib"
    download_artifact(artifact_store=store, artifact_id=attrs["artifacts"]["refit_estimator.joblib"], file_path=str(out))
    model = joblib.load(out)
    assert model.get_params() == ref.best_estimator_.get_params()
    assert (model.predict(X) == ref.best_estimator_.predict(X)).all()


def test_randomized_multimetric_ranges_and_pipeline(tmp_path):
    """Two scorers (refit on the objective), scipy ranges mapped to Float/IntDistribution."""
    text = """
    name: rnd
    objective: {metric: f1_macro, direction: maximize}
    executor: local
    trainer:
      kind: sklearn_search
      strategy: randomized_search_cv
      n_iter: 6
      seed: 3
      estimator:
        - {name: scale, estimator: sklearn.preprocessing.StandardScaler}
        - {name: clf, estimator: sklearn.linear_model.LogisticRegression, params: {max_iter: 300}}
      dataset: digits
      max_examples: 400
      cv: 3
      scoring: [accuracy, f1_macro]
      param_distributions:
        clf__C: {type: float, low: 0.001, high: 10, log: true}
        clf__max_iter: {type: int, low: 50, high: 300}
        clf__fit_intercept: [true, false]
    """
    path = tmp_path / "rnd.yaml"
    path.write_text(textwrap.dedent(text))
    hpsearch.run_study(str(path))
    study = _study(tmp_path, "rnd")
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)

    import scipy.stats
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    X, _, y, _ = train_test_split(X, y, train_size=400, stratify=y, random_state=0)
    ref = RandomizedSearchCV(
        Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=300))]),
        {"clf__C": scipy.stats.loguniform(0.001, 10), "clf__max_iter": scipy.stats.randint(50, 301),
         "clf__fit_intercept": [True, False]},
        n_iter=6, random_state=3, scoring=["accuracy", "f1_macro"], refit="f1_macro", cv=_folds(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(X, y)
    res = ref.cv_results_
    assert len(trials) == 6
    for i, t in enumerate(trials):
        assert t.params == {k: v.item() if hasattr(v, "item") else v for k, v in res["params"][i].items()}
        assert t.distributions["clf__C"] == FloatDistribution(0.001, 10, log=True)
        assert t.distributions["clf__max_iter"] == IntDistribution(50, 300)
        assert t.value == res["mean_test_f1_macro"][i]
        for m in ("accuracy", "f1_macro"):
            for col in (f"mean_test_{m}", f"std_test_{m}", f"rank_test_{m}", *(f"split{k}_test_{m}" for k in range(3))):
                assert t.user_attrs[col] == res[col][i]
        assert t.user_attrs["metrics"] == {"accuracy": res["mean_test_accuracy"][i], "f1_macro": res["mean_test_f1_macro"][i]}
    assert study.user_attrs["sklearn.best_score"] == ref.best_score_
    assert study.user_attrs["sklearn.refit_metric"] == "f1_macro"
    assert study.best_trial.number == ref.best_index_


def test_halving_rows_of_early_rounds_are_pruned(tmp_path):
    text = TREE.format(name="halving", executor="local").replace(
        "strategy: grid_search_cv", "strategy: halving_grid_search_cv\n  search_options: {factor: 3}"
    ).replace(", 1.5]", ", 20]")
    path = tmp_path / "halving.yaml"
    path.write_text(textwrap.dedent(text))
    hpsearch.run_study(str(path))
    study = _study(tmp_path, "halving")
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingGridSearchCV
    from sklearn.tree import DecisionTreeClassifier

    X, y = load_digits(return_X_y=True)
    ref = HalvingGridSearchCV(
        DecisionTreeClassifier(random_state=0), {"max_depth": [3, 10, None], "min_samples_split": [2, 10, 20]},
        scoring="accuracy", cv=_folds(), factor=3, random_state=0,
    ).fit(X, y)
    res = ref.cv_results_
    assert len(trials) == len(res["params"]) > 9
    last = max(res["iter"])
    for i, t in enumerate(trials):
        assert t.user_attrs["iter"] == res["iter"][i] and t.user_attrs["n_resources"] == res["n_resources"][i]
        assert t.user_attrs["mean_test_accuracy"] == res["mean_test_score"][i]
        assert t.state == (TrialState.COMPLETE if res["iter"][i] == last else TrialState.PRUNED)
    assert study.best_trial.number == ref.best_index_
    assert study.best_value == ref.best_score_
    frame = hpsearch.compare([str(path)])
    assert frame.loc[0, "pruned"] == sum(res["iter"] < last)


def test_text_pipeline_on_bbc_news_with_tuple_param(tmp_path):
    text = """
    name: bbc
    objective: {metric: accuracy, direction: maximize}
    executor: local
    trainer:
      kind: sklearn_search
      dataset: bbc_news
      max_examples: 200
      cv: 2
      estimator:
        - {name: tfidf, estimator: sklearn.feature_extraction.text.TfidfVectorizer, params: {min_df: 2}}
        - {name: clf, estimator: sklearn.linear_model.LogisticRegression, params: {max_iter: 200}}
      param_grid:
        tfidf__ngram_range: [[1, 1], [1, 2]]
        clf__C: [10.0]
    """
    path = tmp_path / "bbc.yaml"
    path.write_text(textwrap.dedent(text))
    hpsearch.run_study(str(path))
    study = _study(tmp_path, "bbc")
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    assert [t.params["tfidf__ngram_range"] for t in trials] == ["[1, 1]", "[1, 2]"]
    assert all(t.state == TrialState.COMPLETE and t.value > 0.7 for t in trials)
    assert study.user_attrs["sklearn.best_params"]["tfidf__ngram_range"] in ([1, 1], [1, 2])


def test_sklearn_cv_scores_equal_gridsearchcv_on_same_folds(tmp_path):
    """Equal terms: the sklearn_cv trainer (our samplers) scores a point exactly as GridSearchCV."""
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent(TREE.format(name="grid", executor="local")).replace(", 1.5]", "]"))
    cv = tmp_path / "cv.yaml"
    cv.write_text(textwrap.dedent("""
    name: cv
    objective: {metric: accuracy, direction: maximize}
    executor: local
    sampler: {name: grid}
    search_space:
      max_depth: [3, 10, null]
      min_samples_split: [2, 10]
    trainer:
      kind: sklearn_cv
      estimator: sklearn.tree.DecisionTreeClassifier
      estimator_params: {random_state: 0}
      dataset: digits
      cv: 3
    """))
    hpsearch.run_study(str(grid))
    hpsearch.run_study(str(cv))
    by_params = {
        (t.params["max_depth"], t.params["min_samples_split"]): t
        for t in _study(tmp_path, "grid").get_trials(deepcopy=False)
    }
    cv_trials = _study(tmp_path, "cv").get_trials(deepcopy=False)
    assert len(cv_trials) == 6
    for t in cv_trials:
        g = by_params[(t.params["max_depth"], t.params["min_samples_split"])]
        assert t.user_attrs["cv_scores"] == [g.user_attrs[f"split{k}_test_accuracy"] for k in range(3)]
        assert t.value == pytest.approx(g.value, abs=1e-15)


def test_sklearn_cv_accepts_pipeline_and_text_dataset(tmp_path):
    text = """
    name: cvtext
    objective: {metric: accuracy, direction: maximize}
    executor: local
    n_trials: 2
    search_space:
      clf__C: {type: float, low: 0.1, high: 10, log: true}
    trainer:
      kind: sklearn_cv
      dataset: bbc_news
      max_examples: 200
      cv: 2
      estimator:
        - {name: tfidf, estimator: sklearn.feature_extraction.text.TfidfVectorizer, params: {ngram_range: [1, 1], min_df: 2}}
        - {name: clf, estimator: sklearn.linear_model.LogisticRegression}
    """
    path = tmp_path / "cvtext.yaml"
    path.write_text(textwrap.dedent(text))
    result = hpsearch.run_study(str(path))
    assert result.counts() == {"COMPLETE": 2}
    assert 0.5 < result.best_value <= 1.0


@pytest.mark.ray
def test_grid_through_ray_cli(tmp_path):
    path = tmp_path / "rgrid.yaml"
    path.write_text(textwrap.dedent(TREE.format(name="rgrid", executor="ray")).replace(", 1.5]", "]") + "resources: {cpus: 2}\n")
    res = run_cli("run", path, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "rgrid: complete 6; best accuracy" in res.stdout
    study = _study(tmp_path, "rgrid")
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].user_attrs["placement"]["node_id"]
    assert study.user_attrs["sklearn.best_score"] == study.best_value
    # Running again imports nothing new.
    again = run_cli("run", path, cwd=tmp_path, timeout=300)
    assert again.returncode == 0 and len(_study(tmp_path, "rgrid").get_trials(deepcopy=False)) == 6
    assert np.isfinite(study.best_value)


def test_objective_must_be_a_scorer(tmp_path):
    path = tmp_path / "obj.yaml"
    path.write_text(textwrap.dedent(TREE.format(name="obj", executor="local")).replace("metric: accuracy", "metric: f1_macro"))
    with pytest.raises(hpsearch.ConfigError, match=r"obj.yaml: objective.metric: 'f1_macro' is not one of trainer.scoring \['accuracy'\]"):
        hpsearch.run_study(str(path))
    assert not (tmp_path / "hpsearch.db").exists()  # refused before anything is written


def test_log_int_range_and_param_values():
    from hpsearch.trainers.sklearn._search import _LogIntUniform, optuna_value

    rng = np.random.RandomState(0)
    draws = [_LogIntUniform(1, 1000).rvs(random_state=rng) for _ in range(2000)]
    assert min(draws) >= 1 and max(draws) <= 1000 and all(type(d) is int for d in draws)
    assert sum(d < 32 for d in draws) > 800  # log-uniform: half the mass below sqrt(1000)
    assert optuna_value((1, 2)) == "[1, 2]" and optuna_value(np.float64(0.5)) == 0.5
    assert optuna_value(None) is None and optuna_value(np.int64(3)) == 3
