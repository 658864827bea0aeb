"""Ctrl-C: once finishes the running trials' current epoch and exits 130; twice stops at once;
the next run resumes.

The trainer below holds its epoch ``HPS_HOLD_EPOCH`` until the manager's stop request has
reached it, and leaves a marker file for every step, so each test checks the order of events
(which epoch the stop arrived in, which epochs ran, which reports were stored), never how long
anything took.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import run_cli
from tests.gate import PATIENCE_S, wait_until

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

EPOCHS = '''
import math, os, time
from pathlib import Path
from hpsearch.trainers import TrialPruned

HERE = Path(__file__).parent


def mark(name):
    (HERE / name).write_text("")


def epochs(params, ctx):
    hold = int(os.environ.get("HPS_HOLD_EPOCH", "0"))
    n = ctx.trial_number
    for epoch in range(1, 6):
        mark(f"started-{n}-{epoch}")
        if epoch == hold and n == 0:
            mark(f"holding-{n}-{epoch}")
            # Returns once the manager has asked this trial to stop (the answer to any step
            # it may report): the only way to see a stop request without reporting.
            ctx._channel.decision(n, math.inf)
            mark(f"stop-seen-{n}-{epoch}")
            while os.environ.get("HPS_HOLD_FOREVER") == "1":  # an epoch that never ends
                time.sleep(0.05)
        ctx.report(params["x"] * epoch, epoch)
        mark(f"reported-{n}-{epoch}")
        if ctx.should_prune():
            raise TrialPruned()
    return params["x"]
'''


def _marks(folder: Path, kind: str, trial: int = 0) -> list[int]:
    return sorted(int(p.name.rsplit("-", 1)[1]) for p in folder.glob(f"{kind}-{trial}-*"))


def _start(path: Path, tmp_path: Path, executor: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "-q", "--executor", executor],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **env},
    )


def _resume(path: Path, tmp_path: Path, executor: str) -> list[optuna.trial.FrozenTrial]:
    res = run_cli("run", path, "-q", "--executor", executor, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    trials = optuna.load_study(study_name="intr", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}").trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    return trials


@pytest.mark.ray
@pytest.mark.parametrize("executor", [pytest.param("ray", marks=pytest.mark.slow), "local"])
def test_sigint_once_finishes_the_current_epoch_then_resume(write_study, tmp_path, executor):
    path = write_study(STUDY, **{"obj.py": EPOCHS})
    proc = _start(path, tmp_path, executor, HPS_HOLD_EPOCH="3")
    try:
        # Epochs 1 and 2 reported (and answered), epoch 3 running: Ctrl-C arrives in epoch 3.
        wait_until("trial 0 in epoch 3", lambda: (tmp_path / "holding-0-3").exists(), proc)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = proc.communicate(timeout=PATIENCE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "run the same command again to resume" in err
    assert "Traceback" not in err
    # The stop reached the trial in epoch 3; it finished that epoch (its report included) and
    # started no other.
    assert _marks(tmp_path, "stop-seen") == [3]
    assert _marks(tmp_path, "started") == [1, 2, 3] and _marks(tmp_path, "reported") == [1, 2, 3]
    storage = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    first = optuna.load_study(study_name="intr", storage=storage).trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"] == "interrupted"
    # Stored: every report, epoch 3's (finished after the stop) included.
    x = first.params["x"]
    assert first.intermediate_values == pytest.approx({1: x, 2: 2 * x, 3: 3 * x})
    trials = _resume(path, tmp_path, executor)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete[0].params == first.params  # the interrupted params ran first


@pytest.mark.ray
@pytest.mark.parametrize("executor", [pytest.param("ray", marks=pytest.mark.slow), "local"])
def test_sigint_twice_stops_at_once_then_resume(write_study, tmp_path, executor):
    path = write_study(STUDY, **{"obj.py": EPOCHS})
    # Epoch 2 of trial 0 never ends: only a driver that does not wait for it can exit.
    proc = _start(path, tmp_path, executor, HPS_HOLD_EPOCH="2", HPS_HOLD_FOREVER="1")
    try:
        wait_until("trial 0 in epoch 2", lambda: (tmp_path / "holding-0-2").exists(), proc)
        os.kill(proc.pid, signal.SIGINT)
        # The first Ctrl-C has reached the trial (so the second is not merged with it) ...
        wait_until("the stop request", lambda: (tmp_path / "stop-seen-0-2").exists(), proc)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=PATIENCE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "Traceback" not in err
    # ... and the second stopped the run with epoch 2 still running.
    assert _marks(tmp_path, "reported") == [1] and _marks(tmp_path, "started") == [1, 2]
    storage = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    first = optuna.load_study(study_name="intr", storage=storage).trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"] == "interrupted"
    assert first.intermediate_values == pytest.approx({1: first.params["x"]})
    _resume(path, tmp_path, executor)
