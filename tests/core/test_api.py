"""The Python API, the local executor and the manager's recovery logic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

import hpsearch
from hpsearch.study._manager import DRIVER_ATTR
from tests.conftest import OBJECTIVES, WORKER_KILL, quadratic_study

STUDY = quadratic_study("api", n_trials=8, sampler="tpe")


def test_run_study_returns_result(write_study):
    path = write_study(STUDY, **{"obj.py": OBJECTIVES})
    result = hpsearch.run_study(str(path), n_trials=5)
    assert result.counts() == {"COMPLETE": 5}
    assert result.best_value == pytest.approx((result.best_params["x"] - 2) ** 2)
    frame = result.trials_dataframe(best_first=True)
    assert list(frame["number"].sort_values()) == [0, 1, 2, 3, 4]
    assert frame["value"].is_monotonic_increasing  # minimize: best first
    assert {"params_x", "metric_value", "host", "duration_s"} <= set(frame.columns)
    again = hpsearch.run_study(str(path), n_trials=5)
    assert again.counts() == {"COMPLETE": 5}
    assert hpsearch.run_study(str(path), more=2).counts() == {"COMPLETE": 7}


def test_api_raises_config_error_and_writes_nothing(write_study, tmp_path):
    path = write_study(STUDY.replace("tpe", "bogus"), **{"obj.py": OBJECTIVES})
    with pytest.raises(hpsearch.ConfigError, match=r"sampler\.name: unknown sampler 'bogus'"):
        hpsearch.run_study(str(path))
    assert not (tmp_path / "hpsearch.db").exists()


def test_orphans_are_failed_and_their_params_retried_first(write_study, tmp_path):
    path = write_study(STUDY, **{"obj.py": OBJECTIVES})
    storage = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    hpsearch.run_study(str(path), n_trials=2)
    # A trial left RUNNING by a driver that died (same host, a pid that is gone).
    study = optuna.load_study(study_name="api", storage=storage)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(-10, 10)})
    study._storage.set_trial_system_attr(trial._trial_id, DRIVER_ATTR, f"{os.uname().nodename}:999999999:1")
    orphan_x = trial.params["x"]
    result = hpsearch.run_study(str(path), n_trials=4)
    assert result.orphans_recovered == 1
    trials = result.study.get_trials(deepcopy=False)
    orphan = trials[trial.number]
    assert orphan.state == TrialState.FAIL and orphan.user_attrs["fail_reason"] == "orphaned"
    retry = trials[trial.number + 1]  # retried first
    assert retry.params["x"] == orphan_x and retry.state == TrialState.COMPLETE
    assert retry.user_attrs["hpsearch.retry_of"] == trial.number
    assert result.counts() == {"COMPLETE": 4, "FAIL": 1}


def test_an_orphan_killed_in_its_ask_is_failed_and_a_queued_retry_keeps_its_params(write_study, tmp_path):
    """A driver killed between creating a trial and committing its params (one batch)."""
    path = write_study(STUDY, **{"obj.py": OBJECTIVES})
    storage = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    hpsearch.run_study(str(path), n_trials=2)
    study = optuna.load_study(study_name="api", storage=storage)
    dead = f"{os.uname().nodename}:999999999:1"
    bare = study.ask()  # created, no params yet: it never ran
    study._storage.set_trial_system_attr(bare._trial_id, DRIVER_ATTR, dead)
    study.enqueue_trial({"x": 7.5}, user_attrs={"hpsearch.retry_of": 0, "hpsearch.attempt": 1})
    queued = study.ask()  # a queued retry, claimed, its params not yet written
    assert queued.params == {}
    study._storage.set_trial_system_attr(queued._trial_id, DRIVER_ATTR, dead)
    result = hpsearch.run_study(str(path), n_trials=4)
    assert result.orphans_recovered == 2
    trials = result.study.get_trials(deepcopy=False)
    assert trials[bare.number].user_attrs["fail_reason"] == "orphaned"
    # Only the queued retry is queued again, with its fixed params.
    retries = [t for t in trials if t.user_attrs.get("hpsearch.retry_of") == queued.number]
    assert [t.params["x"] for t in retries] == [7.5]
    assert not [t for t in trials if t.user_attrs.get("hpsearch.retry_of") == bare.number]
    assert result.counts() == {"COMPLETE": 4, "FAIL": 2}


def test_running_trial_of_a_live_driver_is_left_alone(write_study, tmp_path):
    path = write_study(STUDY, **{"obj.py": OBJECTIVES})
    storage = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    hpsearch.run_study(str(path), n_trials=1)
    study = optuna.load_study(study_name="api", storage=storage)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(-10, 10)})
    me = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = open(f"/proc/{me.pid}/stat").read().rsplit(")", 1)[1].split()[19]
        study._storage.set_trial_system_attr(trial._trial_id, DRIVER_ATTR, f"{os.uname().nodename}:{me.pid}:{start}")
        result = hpsearch.run_study(str(path), n_trials=3)
        assert result.orphans_recovered == 0
        assert result.study.trials[trial.number].state == TrialState.RUNNING
    finally:
        me.kill()


def test_local_executor_prunes(write_study):
    text = """
name: lprune
objective: {metric: score, direction: maximize}
sampler: {name: random, seed: 1, dedupe: false}  # 14 trials on 2 points: repeats wanted
pruner: {name: median, options: {n_startup_trials: 3, n_warmup_steps: 1}}
n_trials: 14
executor: local
search_space:
  slope: [0.1, 1.0]
trainer: {kind: python, function: "obj.py:curve"}
"""
    path = write_study(text, **{"obj.py": OBJECTIVES})
    result = hpsearch.run_study(str(path))
    counts = result.counts()
    assert counts.get("PRUNED", 0) >= 1 and counts["COMPLETE"] + counts["PRUNED"] == 14


@pytest.mark.ray
def test_killed_ray_worker_is_recorded_and_retried(write_study, tmp_path):
    text = """
name: wkill
objective: {metric: value}
n_trials: 1
max_retries: 1
search_space:
  x: {type: float, low: 0, high: 1}
trainer: {kind: python, function: "obj.py:die_once"}
"""
    path = write_study(text, **{"obj.py": WORKER_KILL})
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "-q"], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    pid_file = tmp_path / "worker.pid"
    deadline = time.time() + 120
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert pid_file.exists(), "the trial never started"
    time.sleep(0.3)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="wkill", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    first, second = study.trials
    assert first.state == TrialState.FAIL
    assert first.user_attrs["fail_reason"].startswith("worker died")
    assert second.state == TrialState.COMPLETE and second.params == first.params
    assert second.user_attrs["hpsearch.retry_of"] == first.number


CURVE_STUDY = """
name: hooks
objective: {metric: score, direction: maximize}
sampler: {name: random, seed: 0}
n_trials: 3
executor: local
max_concurrent_trials: 1
search_space:
  slope: {type: float, low: 0.1, high: 1}
trainer: {kind: python, function: "obj.py:curve"}
"""


def test_callbacks_see_every_step_in_order_and_a_raising_one_never_fails_the_study(write_study, caplog):
    """User callbacks get start, each trial's start/reports/end, and end; one that raises is logged once."""
    import logging

    from hpsearch.study import BaseCallback, StudyManager, StudyStatus

    class Recorder(BaseCallback):
        def __init__(self) -> None:
            self.events: list[tuple] = []

        def on_study_start(self, study, status: StudyStatus) -> None:
            self.events.append(("start", status.done, status.total))

        def on_trial_start(self, study, number, params, status) -> None:
            self.events.append(("trial", number, sorted(params)))

        def on_report(self, study, number, step, value) -> None:
            self.events.append(("report", number, step))

        def on_trial_end(self, study, number, status) -> None:
            self.events.append(("end", number, status.done))

        def on_study_end(self, study, status) -> None:
            self.events.append(("stop", status.done, status.finished))

    class Broken(BaseCallback):
        def on_report(self, study, number, step, value) -> None:
            raise RuntimeError("tracker exploded")

    path = write_study(CURVE_STUDY, **{"obj.py": OBJECTIVES})
    rec = Recorder()
    manager = StudyManager(hpsearch.load_config(path), progress=False, callbacks=[Broken(), rec])
    with caplog.at_level(logging.WARNING, logger="hpsearch.callbacks"):
        result = manager.run()
    assert result.counts() == {"COMPLETE": 3}
    expected = [("start", 0, 3)]
    for n in range(3):  # one trial at a time: each trial's events in order, its reports 1..10
        expected += [("trial", n, ["slope"])] + [("report", n, s) for s in range(1, 11)] + [("end", n, n + 1)]
    assert rec.events == [*expected, ("stop", 3, True)]
    warnings = [r.getMessage() for r in caplog.records if r.name == "hpsearch.callbacks"]
    assert len(warnings) == 1 and "Broken.on_report" in warnings[0] and "tracker exploded" in warnings[0]


def test_the_constructor_does_no_work_and_a_custom_scheduler_decides_what_runs(write_study, tmp_path):
    """``StudyManager(...)`` only stores (a bad study fails in run()); a scheduler subclass picks the trials."""
    from hpsearch.study import SamplerScheduler, StudyManager, TrialToRun, prepare

    bad = write_study(STUDY.replace("obj.py:quadratic", "missing.py:f"), name="bad.yaml")
    manager = StudyManager(hpsearch.load_config(bad))  # nothing checked, nothing opened yet
    with pytest.raises(hpsearch.HpsearchError, match=r"missing\.py"):
        manager.run()
    assert not (tmp_path / "hpsearch.db").exists()

    class FixedX(SamplerScheduler):
        """Every trial at x = 2.5: the sampler is asked, the queue decides."""

        def next_trial(self, study: optuna.Study) -> TrialToRun | None:
            if self.wants_more(study):
                study.enqueue_trial({"x": 2.5})
            return super().next_trial(study)

    path = write_study(STUDY, **{"obj.py": OBJECTIVES})
    cfg = hpsearch.load_config(path)
    manager = StudyManager(cfg, progress=False, more=3)
    prepared = prepare(cfg)
    manager.scheduler = FixedX(prepared, more=3, driver="test")
    result = manager.run()
    assert [t.params["x"] for t in result.study.trials] == [2.5, 2.5, 2.5]
