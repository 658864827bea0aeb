"""Bad sklearn_search settings through the real CLI: exit 2, one line naming the field, nothing stored."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli

GOOD = """
name: s
objective: {metric: accuracy, direction: maximize}
executor: local
trainer:
  kind: sklearn_search
  strategy: grid_search_cv
  estimator: sklearn.tree.DecisionTreeClassifier
  dataset: digits
  cv: 3
  scoring: accuracy
  param_grid:
    max_depth: [3, 5]
"""

CASES = {
    "empty_list": (
        GOOD.replace("max_depth: [3, 5]", "max_depth: []"),
        "trainer.param_grid.max_depth: must be a non-empty list of values, got []",
    ),
    "non_list_value": (
        GOOD.replace("max_depth: [3, 5]", "max_depth: 3"),
        "trainer.param_grid.max_depth: must be a non-empty list of values, got 3",
    ),
    "unknown_estimator": (
        GOOD.replace("sklearn.tree.DecisionTreeClassifier", "sklearn.tree.NoSuchTree"),
        "trainer.estimator: cannot import 'sklearn.tree.NoSuchTree'",
    ),
    "unknown_scoring": (
        GOOD.replace("scoring: accuracy", "scoring: acuracy"),
        "trainer.scoring: unknown scoring 'acuracy'",
    ),
    "unknown_scoring_in_list": (
        GOOD.replace("scoring: accuracy", "scoring: [accuracy, f2]"),
        "trainer.scoring: unknown scoring 'f2'",
    ),
    "unknown_param": (
        GOOD.replace("max_depth: [3, 5]", "max_dept: [3, 5]"),
        "trainer.param_grid.max_dept: DecisionTreeClassifier has no parameter 'max_dept'",
    ),
    "empty_subgrid_list": (
        GOOD.replace("  param_grid:\n    max_depth: [3, 5]", "  param_grid: [{max_depth: [3]}, {criterion: []}]"),
        "trainer.param_grid[1].criterion: must be a non-empty list of values, got []",
    ),
    "unknown_step_estimator": (
        GOOD.replace(
            "estimator: sklearn.tree.DecisionTreeClassifier",
            "estimator: [{name: clf, estimator: sklearn.linear_model.NoSuchModel}]",
        ),
        "trainer.estimator[0].estimator: cannot import 'sklearn.linear_model.NoSuchModel'",
    ),
    "pipeline_param_unprefixed": (
        GOOD.replace(
            "estimator: sklearn.tree.DecisionTreeClassifier",
            "estimator: [{name: clf, estimator: sklearn.tree.DecisionTreeClassifier}]",
        ),
        "trainer.param_grid.max_depth: Pipeline has no parameter 'max_depth'",
    ),
    "missing_grid": (
        GOOD.replace("  param_grid:\n    max_depth: [3, 5]\n", ""),
        "trainer.param_grid: strategy 'grid_search_cv' needs trainer.param_grid",
    ),
    "distributions_for_grid": (
        GOOD + "  param_distributions: {max_depth: [3]}\n",
        "trainer.param_distributions: not used by strategy 'grid_search_cv'",
    ),
    "bad_range": (
        GOOD.replace("strategy: grid_search_cv", "strategy: randomized_search_cv").replace(
            "param_grid:\n    max_depth: [3, 5]", "param_distributions:\n    max_depth: {type: int, low: 9, high: 3}"
        ),
        "trainer.param_distributions.max_depth: low (9) must be <= high (3)",
    ),
    "halving_two_scorers": (
        GOOD.replace("strategy: grid_search_cv", "strategy: halving_grid_search_cv").replace(
            "scoring: accuracy", "scoring: [accuracy, f1_macro]"
        ),
        "trainer.scoring: HalvingGridSearchCV supports one scorer",
    ),
    "unknown_search_option": (
        GOOD + "  search_options: {n_jobs: 4}\n",
        "trainer.search_options.n_jobs: not an option of GridSearchCV",
    ),
    "unknown_strategy": (
        GOOD.replace("strategy: grid_search_cv", "strategy: bayes_search_cv"),
        "trainer.strategy:",
    ),
    "search_space_given": (
        GOOD + "search_space:\n  max_depth: [3, 5]\n",
        "search_space.max_depth: trainer 'sklearn_search' searches trainer.param_grid",
    ),
    "unknown_dataset": (
        GOOD.replace("dataset: digits", "dataset: mnist"),
        "trainer.dataset: unknown dataset 'mnist'",
    ),
}


#: The issue's four cases go through the real CLI; the others through the same
#: validation in-process (``prepare``: what ``run`` calls before touching storage).
CLI_CASES = ("empty_list", "non_list_value", "unknown_estimator", "unknown_scoring")


@pytest.mark.parametrize("case", CLI_CASES)
def test_bad_grid_exit_2_one_line_nothing_stored(case, write_study, tmp_path):
    text, expected = CASES[case]
    path = write_study(text)
    res = run_cli("run", path, cwd=tmp_path, timeout=120)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: {path}: "), lines[0]
    assert expected in lines[0], lines[0]
    assert "Traceback" not in res.stderr + res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


@pytest.mark.parametrize("case", sorted(set(CASES) - set(CLI_CASES)))
def test_bad_settings_config_error_before_storage(case, write_study, tmp_path):
    from hpsearch.config import load_config
    from hpsearch.errors import ConfigError
    from hpsearch.study._manager import prepare

    text, expected = CASES[case]
    path = write_study(text)
    with pytest.raises(ConfigError) as info:
        prepare(load_config(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_sklearn_cv_bad_pipeline_param(write_study, tmp_path):
    text = GOOD.replace("kind: sklearn_search", "kind: sklearn_cv").replace(
        "  strategy: grid_search_cv\n", ""
    ).replace("  param_grid:\n    max_depth: [3, 5]\n", "").replace(
        "estimator: sklearn.tree.DecisionTreeClassifier",
        "estimator: [{name: clf, estimator: sklearn.tree.DecisionTreeClassifier, params: {max_dept: 3}}]",
    )
    from hpsearch.config import load_config
    from hpsearch.errors import ConfigError
    from hpsearch.study._manager import prepare

    path = write_study(text + "search_space:\n  clf__max_depth: [3, 5]\n")
    with pytest.raises(ConfigError, match=r"trainer.estimator\[0\].params.max_dept: DecisionTreeClassifier has no parameter 'max_dept'"):
        prepare(load_config(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]
