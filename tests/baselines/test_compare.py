"""compare: one table across study kinds, read with SQL, never writing."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import textwrap

import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

import hpsearch
from hpsearch.views import COLUMNS
from tests.conftest import run_cli

GRID = """
name: grid
objective: {metric: accuracy, direction: maximize}
executor: local
trainer:
  kind: sklearn_search
  estimator: sklearn.tree.DecisionTreeClassifier
  estimator_params: {random_state: 0}
  dataset: digits
  cv: 3
  param_grid:
    max_depth: [3, 10]
    min_samples_split: [2, 1.5]
"""

TPE = """
name: tpe
objective: {metric: accuracy, direction: maximize}
executor: local
n_trials: 5
sampler: {name: tpe, seed: 0, options: {n_startup_trials: 2}}
search_space:
  max_depth: {type: int, low: 2, high: 12}
trainer:
  kind: sklearn_cv
  estimator: sklearn.tree.DecisionTreeClassifier
  estimator_params: {random_state: 0}
  dataset: digits
  cv: 3
"""

PY = """
name: py
objective: {metric: value, direction: minimize}
executor: local
n_trials: 6
max_failures: 10
sampler: {name: random, seed: 1}
search_space:
  x: {type: float, low: -3, high: 3}
trainer: {kind: python, function: "obj.py:f"}
"""

OBJ = """
def f(params, ctx):
    if params["x"] < -2:
        raise ValueError("x too small")
    ctx.report(params["x"] ** 2, 1)
    if params["x"] > 1:
        from hpsearch.trainers import TrialPruned
        raise TrialPruned()
    return params["x"] ** 2
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite file holding a GridSearchCV import, TPE on sklearn_cv, a python study, a GPU study."""
    tmp = tmp_path_factory.mktemp("cmp")
    (tmp / "obj.py").write_text(textwrap.dedent(OBJ))
    files = {}
    for name, text in (("grid", GRID), ("tpe", TPE), ("py", PY)):
        files[name] = tmp / f"{name}.yaml"
        files[name].write_text(textwrap.dedent(text))
        hpsearch.run_study(str(files[name]))
    url = f"sqlite:///{tmp / 'hpsearch.db'}"
    # A study written by hand: GPUs, known durations and spread, not made by a trainer.
    study = optuna.create_study(study_name="gpu", storage=url, direction="maximize")
    study.set_user_attr("hpsearch.trainer", "text_classification")
    study.set_user_attr("hpsearch.objective", "accuracy")
    study.set_user_attr("hpsearch.config", "sampler: {name: tpe}\nresources: {gpus: 0.5, workers: 2}\n")
    t0 = dt.datetime(2026, 1, 1)
    trials = []
    for i, (state, value, secs) in enumerate(
        [(TrialState.COMPLETE, 0.5, 10), (TrialState.COMPLETE, 0.9, 20), (TrialState.PRUNED, None, 5),
         (TrialState.COMPLETE, 0.7, 30), (TrialState.FAIL, None, 1)]
    ):
        t = create_trial(
            state=state, value=value, params={"lr": 0.001 * (i + 1)},
            distributions={"lr": FloatDistribution(1e-4, 1e-1, log=True)},
            user_attrs={"metrics": {"accuracy": value, "accuracy_std": 0.01 * i}} if value else {},
        )
        t.datetime_start, t.datetime_complete = t0, t0 + dt.timedelta(seconds=secs)
        trials.append(t)
    study.add_trials(trials)
    return tmp, files, url


def test_compare_mixed_studies_api(store):
    tmp, files, url = store
    frame = hpsearch.compare([str(files["grid"]), str(files["tpe"]), str(files["py"])])
    assert list(frame.columns) == COLUMNS and list(frame["study"]) == ["grid", "tpe", "py"]
    rows = {r["study"]: r for r in frame.to_dict(orient="records")}
    for name in ("grid", "tpe", "py"):
        study = optuna.load_study(study_name=name, storage=url)
        r = rows[name]
        assert r["best_value"] == study.best_value
        assert r["best_params"] == study.best_params
        assert r["best_trial"] == study.best_trial.number
        states = [t.state for t in study.trials]
        assert (r["complete"], r["pruned"], r["failed"], r["running"]) == (
            states.count(TrialState.COMPLETE), states.count(TrialState.PRUNED), states.count(TrialState.FAIL), 0
        )
        durations = [t.duration.total_seconds() for t in study.trials]
        assert r["compute_s"] == pytest.approx(sum(durations))
        assert r["gpu_s"] is None
    grid = rows["grid"]
    assert (grid["trainer"], grid["method"], grid["direction"], grid["metric"]) == (
        "sklearn_search", "grid_search_cv", "maximize", "accuracy"
    )
    gstudy = optuna.load_study(study_name="grid", storage=url)
    assert grid["best_std"] == gstudy.best_trial.user_attrs["std_test_accuracy"]
    assert grid["failed"] == 2 and grid["complete"] == 2
    assert rows["tpe"]["method"] == "tpe" and rows["tpe"]["trainer"] == "sklearn_cv"
    tstudy = optuna.load_study(study_name="tpe", storage=url)
    assert rows["tpe"]["best_std"] == tstudy.best_trial.user_attrs["metrics"]["accuracy_std"]
    assert rows["py"]["direction"] == "minimize" and rows["py"]["method"] == "random"
    assert rows["py"]["failed"] >= 1 and rows["py"]["pruned"] >= 1


def test_compare_gpu_seconds_time_to_best_and_storage_listing(store):
    tmp, files, url = store
    frame = hpsearch.compare(storage=url)
    assert list(frame["study"]) == ["grid", "tpe", "py", "gpu"]
    gpu = frame.set_index("study").loc["gpu"]
    assert gpu["best_value"] == 0.9 and gpu["best_trial"] == 1 and gpu["best_std"] == 0.01
    assert gpu["best_params"] == {"lr": 0.002}
    assert (gpu["complete"], gpu["pruned"], gpu["failed"]) == (3, 1, 1)
    assert gpu["compute_s"] == 66.0 and gpu["gpu_s"] == 66.0 * 0.5 * 2
    assert gpu["time_to_best_s"] == 30.0 and gpu["trials_to_best"] == 2
    assert gpu["trainer"] == "text_classification" and gpu["method"] == "tpe"
    # Names work with --storage, files without.
    by_name = hpsearch.compare(["gpu", str(files["grid"])], storage=url)
    assert list(by_name["study"]) == ["gpu", "grid"]


def test_compare_cli_formats_and_read_only(store):
    tmp, files, url = store
    db = tmp / "hpsearch.db"
    before, mtime = hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns
    args = [str(files["grid"]), str(files["tpe"]), str(files["py"])]
    api = hpsearch.compare(args)

    res = run_cli("compare", *args, "--format", "json", cwd=tmp)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["study"] for r in rows] == ["grid", "tpe", "py"]
    assert rows[0]["best_value"] == api.loc[0, "best_value"] and rows[0]["best_params"] == api.loc[0, "best_params"]

    res = run_cli("compare", *args, "-f", "csv", cwd=tmp)
    assert res.returncode == 0, res.stderr
    csv = pd.read_csv(io.StringIO(res.stdout))
    assert list(csv.columns) == COLUMNS and list(csv["complete"]) == list(api["complete"])
    assert json.loads(csv.loc[0, "best_params"]) == api.loc[0, "best_params"]

    res = run_cli("compare", "--storage", url, "--format", "markdown", cwd=tmp)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("| study | trainer | method |") and len(lines) == 2 + 4

    res = run_cli("compare", *args, cwd=tmp)
    assert res.returncode == 0 and res.stdout.splitlines()[0].split()[:3] == ["study", "trainer", "method"]
    assert "sklearn_search" in res.stdout and "grid_search_cv" in res.stdout
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before and db.stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--format", "xml"], "--format: expected one of table, csv, json, markdown"),
        ([], "compare: give study files, or --storage URL"),
        (["--storage", "NAME"], "no study named 'nope'"),
        (["missing.yaml"], "no such file"),
    ],
)
def test_compare_bad_input_exit_2(store, args, expected):
    tmp, files, url = store
    args = [a.replace("NAME", url) for a in args]
    if args and args[0] == "--format":
        args = [str(files["grid"]), *args]
    if "--storage" in args:
        args.append("nope")
    res = run_cli("compare", *args, cwd=tmp)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert len(res.stderr.strip().splitlines()) == 1 and expected in res.stderr, res.stderr


def test_compare_missing_database_creates_nothing(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(textwrap.dedent(GRID))
    res = run_cli("compare", study, cwd=tmp_path)
    assert res.returncode == 2 and "no database at" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_compare_leaves_a_closed_database_byte_identical(write_study, tmp_path):
    """After a run (no -wal file left), compare neither rewrites the file nor leaves new files."""
    (tmp_path / "obj.py").write_text(textwrap.dedent(OBJ))
    path = write_study(PY.replace("n_trials: 6", "n_trials: 2"), name="py.yaml")
    assert run_cli("run", path, "-q", cwd=tmp_path).returncode == 0
    db = tmp_path / "hpsearch.db"
    files = sorted(p.name for p in tmp_path.iterdir())
    before, mtime = hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns
    res = run_cli("compare", path, "-f", "json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)[0]["complete"] + json.loads(res.stdout)[0]["pruned"] == 2
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before and db.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == files
