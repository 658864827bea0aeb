"""kill -9 of `hpsearch run`, then a re-run: nothing lost, nothing twice, orphans first.

The default suite kills each local-executor study kind a few times at random
points (``ckpt``: a checkpointing trainer, whose re-runs must each repeat at most one epoch), and a driver on the default Ray executor twice at a fixed point (while
trials run on Ray); `-m slow` runs the README's 10 kills per kind.
"""

from __future__ import annotations

import os

import optuna
import pytest
from optuna.trial import TrialState

import hpsearch
from hpsearch.study._manager import DRIVER_ATTR
from tests.conftest import OBJECTIVES, quadratic_study
from tests.reliability.kill_loop import kill_loop


@pytest.mark.parametrize("kind", ["grid", "tpe", "ckpt"])
def test_kill_driver_then_resume(kind, tmp_path):
    summary = kill_loop(kind, kills=3, workdir=tmp_path, seed=1)
    assert summary["kills"] >= 1


@pytest.mark.ray
@pytest.mark.slow  # 26 s: run by hand (pytest -m slow) to keep the default run under 10 minutes
def test_kill_ray_driver_while_trials_run_then_resume(tmp_path):
    """Each killed run re-runs the orphans first, then is killed with a trial blocked on Ray."""
    summary = kill_loop("ray", kills=2, workdir=tmp_path)
    assert summary["kills"] == 2
    # Each kill orphaned at least the blocked trial (it had params: it was running),
    # and the runs after started with the orphans' params, in order (check_orphans_first).
    assert summary["retried_first"] >= 2


@pytest.mark.ray
@pytest.mark.slow
def test_kill_driver_during_ddp_trial(tmp_path):
    summary = kill_loop("ddp", kills=1, workdir=tmp_path, seed=1)
    assert summary["kills"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["grid", "tpe", "ddp", "ckpt"])
def test_kill_driver_ten_times(kind, tmp_path):
    summary = kill_loop(kind, kills=10, workdir=tmp_path, seed=7)
    # Once the study is complete a later start has nothing to do and exits before its kill.
    assert summary["kills"] >= 1


STUDY = quadratic_study("recover", n_trials=3, sampler="tpe")


class _Killed(BaseException):
    """Stands for a kill -9: nothing after it runs (not caught as an Exception)."""


@pytest.mark.parametrize("step", ["enqueue_trial", "tell"])
def test_driver_killed_while_recovering_an_orphan(step, write_study, tmp_path, monkeypatch):
    """Killed between queueing an orphan's re-run and failing it, in either order: run once, not lost."""
    path = write_study(STUDY, **{"obj.py": OBJECTIVES})
    hpsearch.run_study(str(path), n_trials=1)
    study = optuna.load_study(study_name="recover", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    orphan = study.ask({"x": optuna.distributions.FloatDistribution(-10, 10)})
    study._storage.set_trial_system_attr(orphan._trial_id, DRIVER_ATTR, f"{os.uname().nodename}:999999999:1")
    real = getattr(optuna.Study, step)

    def killed(self, *args, **kwargs):
        if step == "enqueue_trial" or kwargs.get("state") == TrialState.FAIL:
            raise _Killed
        return real(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, step, killed)
    with pytest.raises(_Killed):
        hpsearch.run_study(str(path))
    monkeypatch.undo()
    result = hpsearch.run_study(str(path))
    trials = result.study.get_trials(deepcopy=False)
    assert trials[orphan.number].user_attrs["fail_reason"] == "orphaned"
    retries = [t for t in trials if t.user_attrs.get("hpsearch.retry_of") == orphan.number]
    assert [(t.params, t.state) for t in retries] == [(orphan.params, TrialState.COMPLETE)]
    assert result.counts() == {"COMPLETE": 3, "FAIL": 1}
