"""Fair comparisons: every study records what it was scored on, the sklearn trainers can score on
the text trainer's exact holdout, compare warns when studies differ, and --paired compares two
studies fold by fold with the corrected resampled t-test (Nadeau & Bengio, 2003)."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
import scipy.stats

from hpsearch.data import _text as data
from hpsearch.data._splits import ids_hash, text_ids
from hpsearch.trainers import RecordingChannel, TrialContext, TrialResources
from hpsearch.trainers._text import TextClassificationSettings, TextClassificationTrainer
from hpsearch.trainers.sklearn import SklearnCVSettings, make_estimator
from hpsearch.trainers.sklearn._evaluation import evaluation_data
from tests.conftest import run_cli

TINY = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
TFIDF = [
    {"name": "tfidf", "estimator": "sklearn.feature_extraction.text.TfidfVectorizer", "params": {"min_df": 2}},
    {"name": "clf", "estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 200}},
]

SEARCH = """
name: search
objective: {metric: accuracy, direction: maximize}
executor: local
trainer:
  kind: sklearn_search
  estimator: sklearn.tree.DecisionTreeClassifier
  estimator_params: {random_state: 0}
  dataset: digits
  cv: 4
  param_grid:
    max_depth: [4, 8, 16]
"""

TPE = """
name: tpe
objective: {metric: accuracy, direction: maximize}
executor: local
n_trials: 4
sampler: {name: tpe, seed: 0, options: {n_startup_trials: 2}}
search_space:
  min_samples_leaf: {type: int, low: 1, high: 20}
trainer:
  kind: sklearn_cv
  estimator: sklearn.tree.DecisionTreeClassifier
  estimator_params: {random_state: 0, max_depth: 6}
  dataset: digits
  cv: 4
"""

HOLDOUT = """
name: holdout
objective: {metric: accuracy, direction: maximize}
executor: local
n_trials: 2
sampler: {name: random, seed: 0}
search_space:
  max_depth: {type: int, low: 2, high: 12}
trainer:
  kind: sklearn_cv
  estimator: sklearn.tree.DecisionTreeClassifier
  estimator_params: {random_state: 0}
  dataset: digits
  validation: holdout
  max_examples: 600
  val_fraction: 0.25
  data_seed: 3
"""


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One SQLite file: GridSearchCV and TPE on sklearn_cv on the same 4 folds of digits, and a holdout study."""
    tmp = tmp_path_factory.mktemp("fair")
    for name, text in (("search", SEARCH), ("tpe", TPE), ("holdout", HOLDOUT)):
        (tmp / f"{name}.yaml").write_text(textwrap.dedent(text))
        res = run_cli("run", f"{name}.yaml", cwd=tmp)
        assert res.returncode == 0, res.stderr[-2000:]
    return tmp, f"sqlite:///{tmp / 'hpsearch.db'}"


def _best(url: str, name: str) -> optuna.trial.FrozenTrial:
    return optuna.load_study(study_name=name, storage=url).best_trial


def _ctx(tmp_path: Path) -> TrialContext:
    return TrialContext(
        trial_number=0, params={}, resources=TrialResources(cpus=1), channel=RecordingChannel(), work_dir=tmp_path
    )


# ---------------------------------------------------------------- the same validation examples


@pytest.mark.parametrize(
    ("max_examples", "val_fraction", "test_fraction", "seed"), [(512, 0.2, 0.0, 0), (None, 0.3, 0.1, 7)]
)
def test_holdout_indices_select_the_text_trainers_split(max_examples, val_fraction, test_fraction, seed) -> None:
    examples, _ = data.load_text_examples("bbc_news")
    splits = data.split_examples(
        data.stratified_subsample(examples, max_examples, seed),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    train, val, test = data.holdout_indices(
        examples.labels, max_examples=max_examples, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )
    assert [examples.texts[i] for i in val] == splits.val.texts
    assert [examples.texts[i] for i in train] == splits.train.texts
    assert (test is None) == (splits.test is None)
    if test is not None and splits.test is not None:
        assert [examples.texts[i] for i in test] == splits.test.texts
    assert not set(val) & set(train)


def test_sklearn_holdout_scores_on_the_text_trainers_validation_examples(tmp_path: Path) -> None:
    """The real text trainer's validation set (token ids, labels, hash) equals sklearn's holdout rows."""
    text = TextClassificationTrainer(
        TextClassificationSettings.model_validate(
            {"model_config": TINY, "dataset": "bbc_news", "max_examples": 512, "val_fraction": 0.2, "max_length": 32}
        ),
        study_dir=tmp_path,
    )
    ctx = _ctx(tmp_path)
    run = text.start_run(text.settings, ctx, 0)
    sk = SklearnCVSettings.model_validate(
        {"estimator": TFIDF, "dataset": "bbc_news", "validation": "holdout", "max_examples": 512, "val_fraction": 0.2}
    )
    held = evaluation_data(sk, tmp_path, make_estimator(sk.estimator))
    ((train_rows, val_rows),) = held.splits()
    val_texts = list(held.X[val_rows])
    assert len(val_texts) == 103 and len(train_rows) == 409
    assert [int(v) for v in held.y[val_rows]] == list(run.val.labels)
    tokens = run.state["tokenizer"](val_texts, truncation=True, max_length=32, padding=False)["input_ids"]
    assert [list(t) for t in tokens] == run.val.input_ids
    record = ctx.user_attrs["evaluation"]
    assert record["split"] == "holdout" and record["examples"] == 103
    assert record["val_hash"] == held.record["val_hash"] == ids_hash(text_ids(val_texts))
    assert held.record == {
        "dataset": "bbc_news",
        "examples": 103,
        "split": "holdout",
        "val_hash": record["val_hash"],
        "max_examples": 512,
        "val_fraction": 0.2,
        "data_seed": 0,
    }


def test_text_record_names_the_settings_that_chose_the_examples(tmp_path: Path) -> None:
    from hpsearch.trainers._text import _record_data

    s = TextClassificationSettings.model_validate({"dataset": "bbc_news", "max_examples": 200, "data_seed": 4})
    examples, stats = data.load_text_examples("bbc_news")
    splits = data.split_examples(data.stratified_subsample(examples, 200, 4), val_fraction=0.2, seed=4)
    tokens = data.TokenizedSplits([], [], None, cache_hit=False, path=tmp_path)
    ctx = _ctx(tmp_path)
    _record_data(ctx, splits, stats, tokens, s)
    assert ctx.user_attrs["evaluation"] == {
        "dataset": "bbc_news",
        "examples": 40,
        "split": "holdout",
        "val_hash": ids_hash(text_ids(splits.val.texts)),
        "max_examples": 200,
        "val_fraction": 0.2,
        "data_seed": 4,
    }


# ---------------------------------------------------------------- records of the sklearn trainers


def test_every_sklearn_study_records_its_evaluation(studies) -> None:
    _, url = studies
    search, tpe, holdout = (_best(url, n).user_attrs["evaluation"] for n in ("search", "tpe", "holdout"))
    assert search["split"] == tpe["split"] == "cv:4 stratified" and search["folds"] == 4
    assert search["examples"] == tpe["examples"] == 1797 and search["dataset"] == "digits"
    assert search["val_hash"] == tpe["val_hash"]  # GridSearchCV and TPE scored on the same folds
    assert holdout["split"] == "holdout" and holdout["examples"] == 150
    assert (holdout["max_examples"], holdout["val_fraction"], holdout["data_seed"]) == (600, 0.25, 3)
    every = optuna.load_study(study_name="search", storage=url).trials
    assert all(t.user_attrs["evaluation"] == search for t in every)  # each imported row carries it
    assert (
        len(_best(url, "tpe").user_attrs["cv_scores"]) == 4 and len(_best(url, "holdout").user_attrs["cv_scores"]) == 1
    )


def test_holdout_and_cv_settings_of_the_other_mode_are_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(textwrap.dedent(HOLDOUT).replace("validation: holdout", "validation: cv"))
    res = run_cli("run", "bad.yaml", cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "trainer.val_fraction: only used with validation: holdout" in res.stderr


# ---------------------------------------------------------------- compare


def test_compare_warns_only_when_the_examples_differ(studies) -> None:
    tmp, _ = studies
    same = run_cli("compare", "search.yaml", "tpe.yaml", cwd=tmp, env={"COLUMNS": "250"})
    assert same.returncode == 0, same.stderr
    assert "warning" not in same.stdout + same.stderr and "evaluated on" in same.stdout
    assert "cv:4 1797 #" in same.stdout

    differ = run_cli("compare", "search.yaml", "holdout.yaml", cwd=tmp, env={"COLUMNS": "250"})
    assert differ.returncode == 0, differ.stderr
    last = differ.stdout.strip().splitlines()[-1]
    assert last.startswith("warning: not scored on the same examples") and "holdout 150 #" in last

    js = run_cli("compare", "search.yaml", "holdout.yaml", "-f", "json", cwd=tmp)
    assert js.returncode == 0 and js.stderr.startswith("warning: not scored on the same examples"), js.stderr
    rows = json.loads(js.stdout)  # the warning stays out of the JSON
    assert rows[1]["evaluation"]["split"] == "holdout"


def _expected_paired(a: list[float], b: list[float]) -> tuple[float, float, float]:
    d = np.asarray(a) - np.asarray(b)
    k = len(d)
    t = d.mean() / math.sqrt((1 / k + 1 / (k - 1)) * d.var(ddof=1))
    return float(d.mean()), float(t), float(2 * scipy.stats.t.sf(abs(t), k - 1))


def test_paired_on_the_same_folds_gives_the_corrected_t_test(studies) -> None:
    tmp, url = studies
    res = run_cli("compare", "--paired", "search.yaml", "tpe.yaml", "-f", "json", cwd=tmp)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    search, tpe = _best(url, "search"), _best(url, "tpe")
    a = [search.user_attrs[f"split{k}_test_accuracy"] for k in range(4)]
    b = tpe.user_attrs["cv_scores"]
    mean, t, p = _expected_paired(a, b)
    assert [f["a"] for f in got["folds"]] == a and [f["b"] for f in got["folds"]] == b
    assert got["mean_diff"] == pytest.approx(mean) and got["t"] == pytest.approx(t) and got["p"] == pytest.approx(p)
    assert got["df"] == 3 and 0 < got["p"] <= 1
    pairs = list(zip(a, b, strict=True))
    wins = (sum(x > y for x, y in pairs), sum(x < y for x, y in pairs), sum(x == y for x, y in pairs))
    assert (got["wins"]["a"], got["wins"]["b"], got["wins"]["ties"]) == wins

    table = run_cli("compare", "--paired", "search.yaml", "tpe.yaml", cwd=tmp)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["fold", "search", "tpe", "diff"]
    assert f"t = {t:.4g}, df = 3, p = {p:.4g}" in table.stdout
    assert f"fold wins: search {wins[0]}, tpe {wins[1]}, ties {wins[2]}" in table.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["search.yaml", "holdout.yaml"], "were not scored on the same folds"),
        (["search.yaml"], "give exactly two studies, got 1"),
    ],
)
def test_paired_refuses_different_folds_with_exit_2(studies, args: list[str], expected: str) -> None:
    tmp, _ = studies
    res = run_cli("compare", "--paired", *args, cwd=tmp)
    assert res.returncode == 2, res.stdout
    assert len(res.stderr.strip().splitlines()) == 1 and expected in res.stderr, res.stderr


def test_corrected_t_test_without_variance() -> None:
    from hpsearch.views._compare import corrected_t_test

    assert corrected_t_test([0.0, 0.0, 0.0], test_train_ratio=0.5) == (0.0, 1.0)
    assert corrected_t_test([0.5, 0.5, 0.5], test_train_ratio=0.5) == (math.inf, 0.0)
    t, p = corrected_t_test([0.1, 0.3, -0.1], test_train_ratio=0.5)
    assert t == pytest.approx(0.1 / math.sqrt((1 / 3 + 0.5) * 0.04)) and p == pytest.approx(2 * scipy.stats.t.sf(t, 2))
