"""End to end through the real CLI, on a real local Ray and a real SQLite file."""

from __future__ import annotations

import datetime
import os
import signal
import sqlite3
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import OBJECTIVES, run_cli
from tests.gate import GATED, Gate

pytestmark = pytest.mark.ray


def _trials(tmp_path, name):
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    return study, study.get_trials(deepcopy=False)


def test_quickstart_stores_n_trials_and_optuna_reads_them(tmp_path):
    src = (os.path.dirname(__file__) + "/../../studies/quickstart.yaml")
    study_file = tmp_path / "quickstart.yaml"
    # Every trial on Ray (driver_first_s: 0): the default runs a study this short on the
    # driver alone (test_driver_first.py), and this test follows the Ray path end to end.
    study_file.write_text(open(src).read() + "ray: {driver_first_s: 0}\n")
    res = run_cli("run", study_file, "--n-trials", "6", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    study, trials = _trials(tmp_path, "quickstart")
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6 and len(trials) == 6
    best = study.best_trial
    assert 0.5 < best.value <= 1.0
    assert best.user_attrs["metrics"]["accuracy"] == best.value
    assert best.user_attrs["placement"]["host"] and best.user_attrs["placement"]["device"] == "cpu"
    assert best.user_attrs["placement"]["node_id"]
    assert "trainer:\n  kind: sklearn_cv" in study.user_attrs["hpsearch.config"]
    assert study.user_attrs["hpsearch.version"]
    # The optuna CLI reads the same storage unchanged.
    out = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "optuna"), "trials", "--study-name", "quickstart",
         "--storage", f"sqlite:///{tmp_path / 'hpsearch.db'}", "-f", "json"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count('"number"') == 6
    # show and best read it back, best first.
    show = run_cli("show", study_file, cwd=tmp_path)
    assert show.returncode == 0 and "quickstart (6 trials)" in show.stdout
    best_json = run_cli("best", study_file, "--json", cwd=tmp_path)
    assert best_json.returncode == 0
    import json

    assert json.loads(best_json.stdout)["value"] == pytest.approx(best.value)
    # Re-running the same command adds nothing: n_trials is a total.
    again = run_cli("run", study_file, "--n-trials", "6", cwd=tmp_path)
    assert again.returncode == 0
    assert len(_trials(tmp_path, "quickstart")[1]) == 6
    more = run_cli("run", study_file, "--more", "2", "--executor", "local", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert len(_trials(tmp_path, "quickstart")[1]) == 8


GRID = """
name: grid9
objective: {metric: value, direction: maximize}
sampler: {name: grid, seed: 0}
n_trials: 100
max_concurrent_trials: 2
search_space:
  a: [0, 1, 2]
  b: {type: int, low: 0, high: 2}
trainer: {kind: python, function: "obj.py:slow_grid"}
"""


def test_grid_runs_each_point_once(write_study, tmp_path):
    path = write_study(GRID, **{"obj.py": OBJECTIVES})
    res = run_cli("run", path, cwd=tmp_path, env={"HPS_TEST_SLEEP": "0"})
    assert res.returncode == 0, res.stderr[-3000:]
    _, trials = _trials(tmp_path, "grid9")
    points = [(t.params["a"], t.params["b"]) for t in trials]
    assert len(trials) == 9
    assert sorted(points) == [(a, b) for a in range(3) for b in range(3)]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.value for t in trials) == sorted(a * 10 + b for a in range(3) for b in range(3))


PRUNE = """
name: prune
objective: {metric: score, direction: maximize}
sampler: {name: random, seed: 1, dedupe: false}  # 14 trials on 2 points: repeats wanted
pruner: {name: median, options: {n_startup_trials: 3, n_warmup_steps: 1}}
n_trials: 14
max_concurrent_trials: 1
search_space:
  slope: [0.1, 1.0]
trainer: {kind: python, function: "obj.py:curve"}
"""


def test_pruning_prunes_promptly(write_study, tmp_path):
    path = write_study(PRUNE, **{"obj.py": OBJECTIVES})
    res = run_cli("run", path, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    _, trials = _trials(tmp_path, "prune")
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned, "a study built to prune pruned nothing"
    assert all(t.params["slope"] == 0.1 for t in pruned)
    # Stopped within one reporting interval of the decision: far fewer than 10 steps.
    assert all(len(t.intermediate_values) <= 3 for t in pruned)
    assert all(len(t.intermediate_values) == 10 for t in complete)
    assert len(pruned) + len(complete) == 14


FAILING = """
name: failing
objective: {metric: value}
n_trials: 10
max_failures: 3
max_concurrent_trials: 1
search_space:
  x: {type: float, low: 0, high: 1}
trainer: {kind: python, function: "obj.py:always_fails"}
"""


def test_failure_budget_stops_with_reasons(write_study, tmp_path):
    path = write_study(FAILING, **{"obj.py": OBJECTIVES})
    res = run_cli("run", path, cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert "stopped after 3 failed trials (max_failures: 3)" in res.stderr
    assert "Traceback" not in res.stderr
    _, trials = _trials(tmp_path, "failing")
    assert len(trials) == 3 and all(t.state == TrialState.FAIL for t in trials)
    for t in trials:
        assert t.user_attrs["fail_reason"] == "ValueError: boom: the trainer always fails"
        assert t.user_attrs["fail_type"] == "ValueError"
        assert "always_fails" in t.user_attrs["traceback"]


RESUME = """
name: resume
objective: {metric: value, direction: maximize}
sampler: {name: grid, seed: 0}
max_concurrent_trials: 1
search_space:
  a: [0, 1, 2]
  b: [0, 1]
trainer: {kind: python, function: "obj.py:slow_grid"}
"""


def _count(db, state, *, with_params=False):
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            if with_params:  # a trial whose ask has committed (params and grid point)
                return con.execute(
                    "SELECT COUNT(DISTINCT t.trial_id) FROM trials t JOIN trial_params p USING (trial_id) "
                    "WHERE t.state = ?", (state,)
                ).fetchone()[0]
            return con.execute("SELECT COUNT(*) FROM trials WHERE state = ?", (state,)).fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


#: The grid objective behind a gate the test controls (tests/gate.py): trials finish only on a ticket.
GATED_GRID = GATED.replace("def gated(", "def gated_grid(").replace(
    'return (params["x"] - 1) ** 2', 'return params["a"] * 10 + params["b"]'
)


def test_kill_9_then_resume(write_study, tmp_path):
    path = write_study(RESUME.replace("obj.py:slow_grid", "gate.py:gated_grid"), **{"gate.py": GATED_GRID})
    db = tmp_path / "hpsearch.db"
    gate = Gate(tmp_path / "gate")
    gate.release(2)  # two trials finish; the third blocks at the gate until the kill
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "-q"],
        cwd=tmp_path, env={**os.environ, **gate.env}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    # Killed while a trial runs (a trial killed inside its ask has no params and
    # is not re-run: tests/core/test_api.py covers that case).
    gate.wait(
        "2 complete + 1 running with params",
        lambda: _count(db, "COMPLETE") >= 2 and _count(db, "RUNNING", with_params=True) >= 1 and len(gate.arrived()) >= 3,
        proc,
    )
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its private Ray, as a crash would
    proc.wait(timeout=30)
    killed_at = datetime.datetime.now()  # the clock Optuna stamps datetime_start with
    running = _count(db, "RUNNING")
    assert running == 1
    gate.release(10)  # the re-run's trials all pass
    res = run_cli("run", path, "-q", cwd=tmp_path, env=gate.env)
    assert res.returncode == 0, res.stderr[-3000:]
    _, trials = _trials(tmp_path, "resume")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    orphaned = [t for t in trials if t.user_attrs.get("fail_reason") == "orphaned"]
    assert len(complete) == 6
    points = sorted((t.params["a"], t.params["b"]) for t in complete)
    assert points == [(a, b) for a in range(3) for b in range(2)]  # none lost, none twice
    assert len(orphaned) == 1 and orphaned[0].state == TrialState.FAIL
    retried = [t for t in complete if t.params == orphaned[0].params]
    assert len(retried) == 1
    # The orphan's point is the first one the re-run started.
    rerun = sorted((t for t in trials if t.datetime_start > killed_at), key=lambda t: (t.datetime_start, t.number))
    assert rerun[0].params == orphaned[0].params and rerun[0].state == TrialState.COMPLETE
    assert not [t for t in trials if t.state == TrialState.RUNNING]
