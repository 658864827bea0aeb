"""Reproducible trials: the stored environment, and `hpsearch reproduce` re-running a trial in a scratch study."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import optuna
import pytest

from hpsearch.config import load_config
from hpsearch.study import StudyManager
from hpsearch.study._environment import ENVIRONMENT_ATTR, ENVIRONMENT_HISTORY_ATTR, PACKAGES
from hpsearch.views import reproduce_trial
from tests.conftest import run_cli

SEEDED = """
import random

def noisy(params, ctx):
    rng = random.Random(params["x"])  # seeded by the params: the same trial gives the same numbers
    return {"value": (params["x"] - 2) ** 2 + rng.random(), "noise": rng.random()}
"""

PYTHON_STUDY = """\
name: py
objective: {metric: value, direction: minimize}
sampler: {name: tpe, seed: 0}
n_trials: 3
executor: local
search_space:
  x: {type: float, low: -10, high: 10}
trainer: {kind: python, function: "obj.py:noisy"}
"""

SKLEARN_STUDY = """\
name: digits
objective: {metric: accuracy, direction: maximize}
sampler: {name: random, seed: 3}
n_trials: 2
executor: local
search_space:
  max_depth: {type: int, low: 2, high: 16}
  max_features: {type: float, low: 0.2, high: 1.0}
trainer:
  kind: sklearn_cv
  estimator: sklearn.tree.DecisionTreeClassifier
  estimator_params: {random_state: 0}
  dataset: digits
  cv: 3
  scoring: accuracy
"""


def _url(folder: Path) -> str:
    return f"sqlite:///{folder / 'hpsearch.db'}"


def _digest(folder: Path) -> dict[str, str]:
    """Hashes of the SQLite file and its WAL (what a write would change)."""
    names = ["hpsearch.db", "hpsearch.db-wal"]
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names if (folder / n).exists()}


def _run(study: Path, **kw) -> None:
    StudyManager(load_config(study), progress=False, **kw).run()


def _git(folder: Path, *args: str) -> str:
    cmd = ["git", "-C", str(folder), "-c", "user.email=t@example.com", "-c", "user.name=t", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def test_python_trial_reproduces_exactly_and_leaves_the_study_untouched(write_study, tmp_path):
    study = write_study(PYTHON_STUDY, **{"obj.py": SEEDED})
    _run(study)
    stored = optuna.load_study(study_name="py", storage=_url(tmp_path)).trials[1]
    before = _digest(tmp_path)
    res = run_cli("reproduce", study, "--trial", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert _digest(tmp_path) == before and "hpsearch.db" in before
    rows = {line.split()[0]: line.split()[1:] for line in res.stdout.splitlines()[3:]}
    assert set(rows) == {"value", "noise"}
    assert float(rows["value"][0]) == pytest.approx(stored.value, rel=1e-9)
    assert rows["value"][2] == "0" and rows["noise"][2] == "0"
    assert "warning" not in res.stderr  # same environment as the run
    # No scratch file is left beside the study, and the study still holds its own trials only.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("hpsearch.db")) == [
        "obj.py",
        "study.yaml",
    ]
    assert len(optuna.load_study(study_name="py", storage=_url(tmp_path)).trials) == 3


def test_sklearn_cv_trial_on_digits_reproduces_exactly(write_study, tmp_path):
    study = write_study(SKLEARN_STUDY)
    _run(study)
    before = _digest(tmp_path)
    rep = reproduce_trial(study, 1)
    assert _digest(tmp_path) == before
    stored = optuna.load_study(study_name="digits", storage=_url(tmp_path)).trials[1]
    assert rep.params == stored.params and rep.state == "COMPLETE"
    diffs = {m: d for m, _, _, d in rep.rows()}
    assert diffs["accuracy"] == 0.0 and diffs["accuracy_std"] == 0.0
    assert rep.reproduced["accuracy"] == stored.value


def test_environment_is_stored_with_git_commit_and_dirty_flag(write_study, tmp_path):
    study = write_study(PYTHON_STUDY.replace("n_trials: 3", "n_trials: 1"), **{"obj.py": SEEDED})
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "study.yaml", "obj.py")
    _git(tmp_path, "commit", "-q", "-m", "study")
    head = _git(tmp_path, "rev-parse", "HEAD")
    _run(study)
    attrs = optuna.load_study(study_name="py", storage=_url(tmp_path)).user_attrs
    env = attrs[ENVIRONMENT_ATTR]
    assert set(env) == {"hpsearch", "python", *PACKAGES, "git_commit", "git_dirty"}
    assert env["git_commit"] == head and env["git_dirty"] is False  # the untracked hpsearch.db does not count
    assert env["optuna"] == optuna.__version__ and env["python"].count(".") == 2
    (tmp_path / "obj.py").write_text(SEEDED + "\n# edited\n")
    _run(study, more=1)
    attrs = optuna.load_study(study_name="py", storage=_url(tmp_path)).user_attrs
    assert attrs[ENVIRONMENT_ATTR]["git_dirty"] is True and attrs[ENVIRONMENT_ATTR]["git_commit"] == head
    history = attrs[ENVIRONMENT_HISTORY_ATTR]
    assert [h["first_trial"] for h in history] == [0, 1]
    assert [h["environment"]["git_dirty"] for h in history] == [False, True]


def test_environment_outside_a_repo_has_null_git_and_is_written_once(write_study, tmp_path):
    study = write_study(PYTHON_STUDY.replace("n_trials: 3", "n_trials: 1"), **{"obj.py": SEEDED})
    if subprocess.run(["git", "-C", str(tmp_path), "rev-parse"], capture_output=True).returncode == 0:
        pytest.skip("the temporary folder is inside a git repository")
    _run(study)
    _run(study, more=1)  # same environment: the history keeps one entry
    attrs = optuna.load_study(study_name="py", storage=_url(tmp_path)).user_attrs
    assert attrs[ENVIRONMENT_ATTR]["git_commit"] is None and attrs[ENVIRONMENT_ATTR]["git_dirty"] is None
    assert len(attrs[ENVIRONMENT_HISTORY_ATTR]) == 1


def test_reproduce_warns_when_the_stored_environment_differs(write_study, tmp_path):
    study = write_study(PYTHON_STUDY.replace("n_trials: 3", "n_trials: 1"), **{"obj.py": SEEDED})
    _run(study)
    s = optuna.load_study(study_name="py", storage=_url(tmp_path))
    old = dict(s.user_attrs[ENVIRONMENT_ATTR], optuna="0.0.1")
    s.set_user_attr(ENVIRONMENT_HISTORY_ATTR, [{"first_trial": 0, "environment": old}])
    rep = reproduce_trial(study, 0)
    assert rep.warning is not None and "optuna 0.0.1 -> " in rep.warning
    assert [d for _, _, _, d in rep.rows()] == [0.0, 0.0]


def _one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def test_reproduce_refuses_missing_trial_trial_without_params_and_study_without_config(write_study, tmp_path):
    study = write_study(PYTHON_STUDY.replace("n_trials: 3", "n_trials: 1"), **{"obj.py": SEEDED})
    _run(study)
    s = optuna.load_study(study_name="py", storage=_url(tmp_path))
    s.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))  # trial 1: no params
    bare = optuna.create_study(study_name="bare", storage=_url(tmp_path))
    bare.add_trial(
        optuna.trial.create_trial(
            params={"x": 1.0}, distributions={"x": optuna.distributions.FloatDistribution(-10, 10)}, value=1.0
        )
    )
    bare_file = write_study(PYTHON_STUDY.replace("name: py", "name: bare"), name="bare.yaml")
    before = _digest(tmp_path)
    assert "no trial 5" in _one_line_error(run_cli("reproduce", study, "--trial", "5", cwd=tmp_path))
    assert "has no params" in _one_line_error(run_cli("reproduce", study, "--trial", "1", cwd=tmp_path))
    assert "no stored config" in _one_line_error(run_cli("reproduce", bare_file, "--trial", "0", cwd=tmp_path))
    assert _digest(tmp_path) == before
