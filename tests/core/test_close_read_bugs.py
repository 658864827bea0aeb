"""Bugs found by a close read (issue 12), one test (or a few) per bug, numbered as in the issue.

Each test failed before its fix: it asserts the behaviour the README promises,
through the real CLI, the real API, real SQLite and real threads.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import hpsearch
from hpsearch.config import load_config
from tests.conftest import OBJECTIVES, REPO, quadratic_study, run_cli

PYTHON_STUDY = quadratic_study()


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------- 1. objective.metric typo, built-in trainers

SKLEARN_CV = """
name: s
objective: {metric: acuracy, direction: maximize}
n_trials: 2
max_failures: 2
executor: local
search_space:
  max_depth: {type: int, low: 2, high: 4}
trainer: {kind: sklearn_cv, estimator: sklearn.tree.DecisionTreeClassifier, dataset: iris, cv: 2}
"""

TEXT = """
name: s
objective: {metric: acuracy, direction: maximize}
n_trials: 1
executor: local
search_space:
  lr: {type: float, low: 1.0e-3, high: 3.0e-3, log: true}
trainer:
  kind: text_classification
  model: minilm-l6
  model_config: {num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}
  dataset: bbc_news
  max_examples: 100
  max_length: 16
"""

IMAGE = """
name: s
objective: {metric: acuracy, direction: maximize}
n_trials: 1
executor: local
search_space:
  lr: {type: float, low: 1.0e-3, high: 3.0e-3, log: true}
trainer: {kind: image_classification, dataset: digits, width: 4, depth: 1, epochs: 1}
"""

SEARCH = """
name: s
objective: {metric: acuracy, direction: maximize}
trainer:
  kind: sklearn_search
  estimator: sklearn.tree.DecisionTreeClassifier
  dataset: iris
  cv: 2
  param_grid: {max_depth: [2, 3]}
  scoring: [accuracy, f1_macro]
"""


def test_sklearn_cv_metric_typo_exits_2_before_writing(write_study, tmp_path):
    path = write_study(SKLEARN_CV)
    res = run_cli("run", path, cwd=tmp_path, timeout=120)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: {path}: objective.metric: 'acuracy'"), lines[0]
    assert "accuracy, accuracy_std, fit_time" in lines[0], lines[0]
    assert _files(tmp_path) == ["study.yaml"]  # no database, no lock file


@pytest.mark.parametrize(
    "text, returns",
    [
        (TEXT, "accuracy, f1_macro, latency_ms, loss, params, peak_memory_mb, train_compute_s, val_loss"),
        (IMAGE, "accuracy, f1_macro, latency_ms, loss, params, peak_memory_mb, train_compute_s, val_loss"),
        (SEARCH, "accuracy"),
    ],
    ids=["text_classification", "image_classification", "sklearn_search"],
)
def test_builtin_trainer_metric_typo_is_a_config_error(text, returns, write_study, tmp_path):
    path = write_study(text)
    with pytest.raises(hpsearch.ConfigError, match=r"study\.yaml: objective\.metric: 'acuracy'") as err:
        hpsearch.run_study(str(path))
    assert returns in str(err.value)
    assert _files(tmp_path) == ["study.yaml"]


COSTS = ("latency_ms", "params", "peak_memory_mb", "train_compute_s")


def test_every_builtin_trainer_declares_its_metrics(tmp_path):
    from hpsearch.study import build_trainer
    from hpsearch.trainers import TRAINERS

    bodies = {
        "python": 'trainer: {kind: python, function: "obj.py:quadratic"}',
        "sklearn_cv": "trainer: {kind: sklearn_cv, estimator: sklearn.tree.DecisionTreeClassifier, scoring: f1_macro}",
        "sklearn_search": "trainer: {kind: sklearn_search, estimator: sklearn.tree.DecisionTreeClassifier, scoring: [accuracy, r2]}",
        "text_classification": "trainer: {kind: text_classification, model: minilm-l6}",
        "image_classification": "trainer: {kind: image_classification}",
    }
    assert set(bodies) == set(TRAINERS)
    got = {}
    for kind, body in bodies.items():
        path = tmp_path / f"{kind}.yaml"
        path.write_text(f"name: s\nobjective: {{metric: accuracy}}\nn_trials: 1\n{body}\n")
        got[kind] = build_trainer(load_config(path)).metrics()
    assert got == {
        "python": None,  # a user function's keys are known only when it returns
        "sklearn_cv": frozenset({"f1_macro", "f1_macro_std", "fit_time"}),
        "sklearn_search": frozenset({"accuracy", "r2"}),
        "text_classification": frozenset({"accuracy", "f1_macro", "loss", "val_loss", *COSTS}),
        "image_classification": frozenset({"accuracy", "f1_macro", "loss", "val_loss", *COSTS}),
    }


def test_python_trainer_missing_metric_still_fails_its_trials_naming_the_key(write_study, tmp_path):
    # A python trainer's keys are known only when it returns: its trials fail, with the key named.
    path = write_study(
        PYTHON_STUDY.replace("metric: value", "metric: acuracy").replace("quadratic", "as_dict") + "max_failures: 2\n",
        **{"obj.py": "def as_dict(params):\n    return {'accuracy': 0.5, 'loss': 1.0}\n"},
    )
    with pytest.raises(hpsearch.StudyFailedError):
        hpsearch.run_study(str(path))
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    assert [t.user_attrs["fail_reason"] for t in study.trials] == [
        "trainer returned no metric 'acuracy' (got: accuracy, loss); set objective.metric to one of those"
    ] * 2


# ------------------------------------------------- 2. the bad option among several is named


@pytest.mark.parametrize(
    "extra, field",
    [
        (
            "sampler: {name: tpe, options: {n_startup_trials: 3, n_ei: 5}}",
            "sampler.options.n_ei: TPESampler has no option 'n_ei'",
        ),
        (
            "sampler: {name: random, options: {seed: 3, sed: 1}}",
            "sampler.options.sed: RandomSampler has no option 'sed'",
        ),
        ("sampler: {name: grid, options: {seed: 3}}", "sampler.options.seed: set by sampler.seed"),
        (
            "pruner: {name: median, options: {n_startup_trials: 2, n_warmup_steps: x}}",
            "pruner.options.n_warmup_steps: ",
        ),
        ("pruner: {name: asha, options: {min_resource: 2, reduction_factor: x}}", "pruner.options.reduction_factor: "),
    ],
    ids=[
        "sampler_second_name",
        "sampler_seed_then_bad",
        "grid_seed_option",
        "pruner_second_value",
        "asha_second_value",
    ],
)
def test_bad_option_among_several_is_named(extra, field, write_study, tmp_path):
    text = PYTHON_STUDY + extra + "\n"
    if "grid" in extra:
        text = text.replace("x: {type: float, low: -10, high: 10}", "x: [1, 2]")
    path = write_study(text, **{"obj.py": OBJECTIVES})
    with pytest.raises(hpsearch.ConfigError) as err:
        hpsearch.run_study(str(path))
    assert f"study.yaml: {field}" in str(err.value)
    assert not (tmp_path / "hpsearch.db").exists()


# ------------------------------------------------- 3. run_study(n_trials=..., more=...)


def test_run_study_refuses_n_trials_with_more(write_study, tmp_path):
    path = write_study(PYTHON_STUDY, **{"obj.py": OBJECTIVES})
    with pytest.raises(hpsearch.ConfigError, match=r"^n_trials and more: give one of them, not both$"):
        hpsearch.run_study(str(path), n_trials=3, more=2)
    assert not (tmp_path / "hpsearch.db").exists()


# ------------------------------------------------- 4. export --best / --trial N

SAVES = """
def saves(params, ctx):
    folder = ctx.artifact_dir / "model"
    folder.mkdir()
    (folder / "trial.txt").write_text(str(ctx.trial_number))
    # minimize: trials 0 and 2 are each the best so far and keep their model; trial 1 is worse.
    return 20.0 if ctx.trial_number == 1 else 10.0 - ctx.trial_number
"""


def test_export_best_or_a_chosen_trial(write_study, tmp_path):
    path = write_study(
        PYTHON_STUDY.replace("n_trials: 2", "n_trials: 3").replace("obj.py:quadratic", "obj.py:saves"),
        **{"obj.py": SAVES},
    )
    assert run_cli("run", path, "-q", cwd=tmp_path, timeout=120).returncode == 0
    default = run_cli("export", path, tmp_path / "default", cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    assert (tmp_path / "default" / "trial.txt").read_text() == "2"
    best = run_cli("export", path, tmp_path / "best", "--best", cwd=tmp_path)
    assert best.returncode == 0 and (tmp_path / "best" / "trial.txt").read_text() == "2", best.stderr
    first = run_cli("export", path, tmp_path / "first", "--trial", "0", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "first" / "trial.txt").read_text() == "0"
    assert first.stdout.startswith("trial 0 (10) -> "), first.stdout
    both = run_cli("export", path, tmp_path / "both", "--best", "--trial", "0", cwd=tmp_path)
    assert both.returncode == 2 and "--best and --trial: give one of them, not both" in both.stderr
    missing = run_cli("export", path, tmp_path / "missing", "--trial", "7", cwd=tmp_path)
    assert missing.returncode == 2 and "has no trial 7" in missing.stderr
    worse = run_cli("export", path, tmp_path / "worse", "--trial", "1", cwd=tmp_path)
    assert worse.returncode == 2 and "trial 1 of study 's' has no saved model" in worse.stderr
    for res in (both, missing, worse):
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not any((tmp_path / d).exists() for d in ("both", "missing", "worse"))


# ------------------------------------------------- 7. LocalExecutor.cancel keeps the slot


def test_local_cancel_keeps_the_slot_until_the_thread_ends(tmp_path):
    from hpsearch.executors import EventKind, TrialJob
    from hpsearch.executors._local import LocalExecutor
    from hpsearch.trainers import BaseTrainer, TrainerSettings, TrialResources

    release = threading.Event()
    started = threading.Event()

    class Blocking(BaseTrainer):  # never reports, so a stop request cannot reach it
        kind = "blocking"
        Settings = TrainerSettings

        def run(self, params, ctx):
            started.set()
            release.wait()
            return 1.0

    ex = LocalExecutor(max_concurrent=1)
    res = TrialResources()
    ex.submit(TrialJob(0, {}, Blocking(TrainerSettings(), study_dir=tmp_path), res, "s", "value"))
    assert started.wait(30)
    ex.cancel(0)
    assert ex.free_slots(res) == 0  # the thread still runs: its slot is not free
    thread = next(t for t in threading.enumerate() if t.name == "trial-0")
    release.set()
    thread.join(30)
    assert not thread.is_alive()
    events = ex.poll(timeout=5)
    assert [e.kind for e in events] == [EventKind.FINISHED]
    assert ex.free_slots(res) == 1


# ------------------------------------------------- 8. no temp folder, no lock file left

IMAGE_SAVED = """
name: img
objective: {metric: accuracy, direction: maximize}
n_trials: 1
executor: local
sampler: {name: random, seed: 0}
search_space:
  lr: {type: float, low: 1.0e-3, high: 3.0e-3, log: true}
trainer: {kind: image_classification, dataset: digits, width: 4, depth: 1, epochs: 1, test_fraction: 0.0}
"""


def test_load_best_model_leaves_no_temp_folder(write_study, tmp_path, monkeypatch):
    path = write_study(IMAGE_SAVED)
    hpsearch.run_study(str(path))
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    model = hpsearch.load_result(str(path)).load_best_model()
    assert model.label_names  # loaded, and usable after its folder is gone
    assert _files(private) == []


def test_no_lock_file_is_left_beside_the_database(write_study, tmp_path):
    path = write_study(PYTHON_STUDY, **{"obj.py": OBJECTIVES})
    assert run_cli("run", path, "-q", cwd=tmp_path, timeout=120).returncode == 0
    hpsearch.run_study(str(path), more=1)
    assert not [n for n in _files(tmp_path) if n.endswith(".lock")], _files(tmp_path)


def _blocked_flock_waiters(ino: int) -> int:
    """Lines of /proc/locks for a process waiting on an flock of inode ``ino``."""
    lines = Path("/proc/locks").read_text().splitlines()
    return sum(1 for line in lines if "->" in line and "FLOCK" in line and f":{ino} " in line)


def test_a_waiter_on_a_removed_lock_file_locks_the_new_one(tmp_path):
    """A driver queued on the lock file while its holder removes it must not lock the removed file."""
    from hpsearch.storage._locks import StudyLock

    url = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    a = StudyLock(url, "s", "driver-a")
    with a.hold():
        lock_file = next(p for p in tmp_path.iterdir() if p.name.endswith(".lock"))
    b = StudyLock(url, "s", "driver-b")
    seen: dict[str, object] = {}

    def hold_b() -> None:
        with b.hold():
            seen["files"] = [p.name for p in tmp_path.iterdir() if p.name.endswith(".lock")]
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT)
            try:  # B's lock is on the file at the path: nobody else can take it
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen["exclusive"] = False
            except BlockingIOError:
                seen["exclusive"] = True
            finally:
                os.close(fd)

    # Play the closing driver: hold the file, let B queue on it, remove it, let go.
    fd = os.open(lock_file, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ino = os.fstat(fd).st_ino
    tb = threading.Thread(target=hold_b)
    tb.start()
    for _ in range(600):  # wait until B is queued on the file (a condition, not a duration)
        if _blocked_flock_waiters(ino):
            break
        time.sleep(0.05)
    assert _blocked_flock_waiters(ino) == 1
    os.unlink(lock_file)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    tb.join(30)
    assert seen == {"files": [lock_file.name], "exclusive": True}
    b.close()
    a.close()
    assert _files(tmp_path) == []  # closing removed the file B re-created


# ------------------------------------------------- 9. HPSEARCH_STORAGE_RETRY_S parsed when used


def test_bad_retry_variable_does_not_break_import_and_is_one_line(write_study, tmp_path):
    env = {**os.environ, "HPSEARCH_STORAGE_RETRY_S": "soon"}
    imp = subprocess.run(
        [sys.executable, "-c", "import hpsearch, hpsearch.storage._mirror"],
        cwd=REPO,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imp.returncode == 0, imp.stderr[-2000:]
    path = write_study(PYTHON_STUDY, **{"obj.py": OBJECTIVES})
    res = run_cli("run", path, cwd=tmp_path, env={"HPSEARCH_STORAGE_RETRY_S": "soon"}, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().splitlines() == [
        "error: HPSEARCH_STORAGE_RETRY_S: expected a number of seconds >= 0, got 'soon'"
    ]
    assert _files(tmp_path) == ["obj.py", "study.yaml"]


def test_retry_variable_is_read_when_a_storage_is_made(monkeypatch):
    from hpsearch.storage._mirror import storage_retry_s

    monkeypatch.setenv("HPSEARCH_STORAGE_RETRY_S", "2.5")
    assert storage_retry_s() == 2.5
    monkeypatch.delenv("HPSEARCH_STORAGE_RETRY_S")
    assert storage_retry_s() == 60.0
    monkeypatch.setenv("HPSEARCH_STORAGE_RETRY_S", "-1")
    with pytest.raises(
        hpsearch.ConfigError, match="HPSEARCH_STORAGE_RETRY_S: expected a number of seconds >= 0, got '-1'"
    ):
        storage_retry_s()


# ------------------------------------------------- 11. MySQL is refused


def test_mysql_storage_is_refused(write_study, tmp_path):
    path = write_study(PYTHON_STUDY + "storage: mysql+pymysql://root:sekret@127.0.0.1/x\n", **{"obj.py": OBJECTIVES})
    res = run_cli("run", path, cwd=tmp_path, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: storage: MySQL is not supported"), lines
    assert "SQLite or PostgreSQL" in lines[0] and "sekret" not in res.stderr
    assert _files(tmp_path) == ["obj.py", "study.yaml"]


# ------------------------------------------------- 12. the dashboard names the objective


def test_study_metric_names_are_the_objective(write_study, tmp_path):
    path = write_study(PYTHON_STUDY.replace("metric: value", "metric: loss"), **{"obj.py": OBJECTIVES})
    hpsearch.run_study(str(path))
    storage = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    assert optuna.load_study(study_name="s", storage=storage).metric_names == ["loss"]
    # A re-run of the existing study keeps them and does not fail.
    assert hpsearch.run_study(str(path), more=1).counts() == {"COMPLETE": 3}
    study = optuna.load_study(study_name="s", storage=storage)
    assert study.metric_names == ["loss"]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
