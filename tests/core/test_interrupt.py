"""Ctrl-C: once finishes the running trials' current epoch and exits 130; the next run resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import SLOW_EPOCHS, run_cli

STUDY = """
name: intr
objective: {metric: value, direction: maximize}
sampler: {name: random, seed: 0}
n_trials: 3
max_concurrent_trials: 1
search_space:
  x: {type: float, low: 0, high: 1}
trainer: {kind: python, function: "obj.py:epochs"}
"""


@pytest.mark.ray
@pytest.mark.parametrize("executor", [pytest.param("ray", marks=pytest.mark.slow), "local"])
def test_sigint_once_then_resume(write_study, tmp_path, executor):
    path = write_study(STUDY, **{"obj.py": SLOW_EPOCHS})
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "-q", "--executor", executor],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 120
    while not (tmp_path / "started-0").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "started-0").exists(), "no trial started"
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "run the same command again to resume" in err
    assert "Traceback" not in err
    storage = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    (first,) = optuna.load_study(study_name="intr", storage=storage).trials[:1]
    assert first.state == TrialState.FAIL
    assert first.user_attrs["fail_reason"] == "interrupted"
    assert len(first.intermediate_values) < 5  # stopped at an epoch boundary, not the end
    res = run_cli("run", path, "-q", "--executor", executor, cwd=tmp_path, env={"HPS_EPOCH_S": "0"})
    assert res.returncode == 0, res.stderr[-3000:]
    trials = optuna.load_study(study_name="intr", storage=storage).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    assert complete[0].params == first.params  # the interrupted params ran first


@pytest.mark.ray
@pytest.mark.parametrize("executor", [pytest.param("ray", marks=pytest.mark.slow), "local"])
def test_sigint_twice_stops_at_once_then_resume(write_study, tmp_path, executor):
    path = write_study(STUDY, **{"obj.py": SLOW_EPOCHS})
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "-q", "--executor", executor],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HPS_EPOCH_S": "30"},
    )
    deadline = time.time() + 120
    while not (tmp_path / "started-0").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "started-0").exists(), "no trial started"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGINT)
    started = time.time()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert time.time() - started < 25  # did not wait for the running 30 s epoch to end
    assert "Traceback" not in err
    storage = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    first = optuna.load_study(study_name="intr", storage=storage).trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"] == "interrupted"
    res = run_cli("run", path, "-q", "--executor", executor, cwd=tmp_path, env={"HPS_EPOCH_S": "0"})
    assert res.returncode == 0, res.stderr[-3000:]
    trials = optuna.load_study(study_name="intr", storage=storage).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert not [t for t in trials if t.state == TrialState.RUNNING]

