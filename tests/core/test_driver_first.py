"""The default ray executor runs a light study's first seconds of trials on the driver (issue 12).

A short study (the quickstart) is done before a private Ray would have started, so it
never starts one; a longer one starts Ray in the background and moves to it once it is up.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

import hpsearch
from hpsearch.executors import TrialJob
from hpsearch.executors._driver_first import DriverFirst, driver_slots
from hpsearch.executors._ray import RayExecutor
from hpsearch.trainers import TrialResources
from hpsearch.trainers.sklearn._cv import SklearnCVSettings
from tests.gate import GatedSklearnCV, finish_trials, wait_until

pytestmark = pytest.mark.ray

STUDY = """
name: light
objective: {{metric: accuracy, direction: maximize}}
storage: sqlite:///{db}
sampler: {{name: random, seed: 0}}
n_trials: 6
search_space:
  max_depth: {{type: int, low: 2, high: 8}}
trainer: {{kind: sklearn_cv, estimator: sklearn.tree.DecisionTreeClassifier, dataset: digits, cv: 2}}
{extra}
"""


def _pids(path: Path) -> list[int]:
    study = optuna.load_study(study_name="light", storage=f"sqlite:///{path.parent / 'h.db'}")
    assert len(study.trials) == 6 and all(t.state.name == "COMPLETE" for t in study.trials)
    return [t.user_attrs["placement"]["pid"] for t in study.trials]


def _ray_up() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def test_a_short_light_study_runs_on_the_driver_and_starts_no_ray(tmp_path):
    assert not _ray_up()
    path = tmp_path / "s.yaml"
    path.write_text(STUDY.format(db=tmp_path / "h.db", extra=""))
    hpsearch.run_study(str(path))
    assert set(_pids(path)) == {os.getpid()}  # every trial on this process's threads
    assert not _ray_up()


def test_driver_first_s_zero_runs_every_trial_on_ray(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(STUDY.format(db=tmp_path / "h.db", extra="ray: {driver_first_s: 0}"))
    hpsearch.run_study(str(path))
    assert os.getpid() not in _pids(path)
    assert not _ray_up()  # shut down again


def test_trials_move_to_ray_once_it_is_up_and_the_driver_finishes_its_own(tmp_path):
    assert not _ray_up()
    settings = SklearnCVSettings.model_validate(
        {"estimator": "sklearn.tree.DecisionTreeClassifier", "dataset": "digits", "cv": 2}
    )
    trainer = GatedSklearnCV(settings, study_dir=tmp_path, objective="accuracy")
    trainer.gate_dir = str(tmp_path)
    resources = TrialResources(cpus=1)
    executor = DriverFirst(RayExecutor(), slots=1, first_s=0.0)
    executor.start()
    done: dict[int, Any] = {}
    try:
        # first_s 0: Ray starts now, in the background; meanwhile the driver takes a trial.
        assert executor.free_slots(resources) == 1 and not executor.on_ray
        executor.submit(TrialJob(0, {"max_depth": 3}, trainer, resources, "df", "accuracy"))
        wait_until("trial 0 running on the driver", (tmp_path / "arrived-0").exists)

        def ray_is_up() -> bool:
            for e in executor.poll(timeout=0.2):
                done[e.number] = e.outcome
            return executor.on_ray

        wait_until("Ray up", ray_is_up)
        assert not done  # trial 0 is still held on the driver
        # Ray's slots less the one the driver's trial still uses.
        assert executor.free_slots(resources) == driver_slots(resources, None) - 1
        executor.submit(TrialJob(1, {"max_depth": 4}, trainer, resources, "df", "accuracy"))

        def trial_1_running() -> bool:
            for e in executor.poll(timeout=0.2):
                done[e.number] = e.outcome
            assert 1 not in done, f"trial 1 ended before it ran: {done[1]}"
            return (tmp_path / "arrived-1").exists()

        wait_until("trial 1 running", trial_1_running)
        for n in (0, 1):
            (tmp_path / f"release-{n}").write_text("")
        outcomes = finish_trials(executor, {0, 1}, done)
    finally:
        executor.shutdown()
    assert outcomes[0].placement["pid"] == os.getpid()
    assert outcomes[1].placement["pid"] != os.getpid()
    assert int((tmp_path / "arrived-1").read_text()) == outcomes[1].placement["pid"]
    assert all(o.failure is None and o.metrics["accuracy"] > 0.3 for o in outcomes.values())
    assert not _ray_up()


def test_only_light_cpu_trials_on_a_private_ray_go_to_the_driver(tmp_path):
    from hpsearch.config import RayConfig, load_config
    from hpsearch.study._jobs import study_executor
    from hpsearch.study._prepare import prepare

    def executor_for(extra: str, **update: object) -> object:
        path = tmp_path / "s.yaml"
        path.write_text(STUDY.format(db=tmp_path / "h.db", extra=extra))
        prepared = prepare(load_config(path))
        # A cluster address is set after prepare(), which would try to reach it.
        return study_executor(dataclasses.replace(prepared, config=prepared.config.model_copy(update=update)))

    assert isinstance(executor_for(""), DriverFirst)
    assert isinstance(executor_for("ray: {driver_first_s: 0}"), RayExecutor)
    assert isinstance(executor_for("resources: {cpus: 1, gpus: 0.5}"), RayExecutor)
    assert isinstance(executor_for("", ray=RayConfig(address="127.0.0.1:1")), RayExecutor)
