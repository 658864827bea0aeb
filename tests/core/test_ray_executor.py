"""The ray executor's private Ray starts and warms its workers before the first trial."""

from __future__ import annotations

import logging
import sys

import pytest

from hpsearch.executors import TrialJob
from hpsearch.executors._ray import RayExecutor, prepare_local_ray_env
from hpsearch.trainers import TrialResources
from hpsearch.trainers.sklearn._cv import SklearnCVSettings, SklearnCVTrainer
from tests.gate import finish_trials

pytestmark = pytest.mark.ray


class _WarmFails(SklearnCVTrainer):
    """A real sklearn_cv trainer whose warm() raises (its trials are unaffected)."""

    def warm(self) -> None:
        raise RuntimeError("cannot warm")


def _trainer(cls: type[SklearnCVTrainer], tmp_path) -> SklearnCVTrainer:
    settings = SklearnCVSettings.model_validate(
        {"estimator": "sklearn.tree.DecisionTreeClassifier", "dataset": "digits", "cv": 2}
    )
    return cls(settings, study_dir=tmp_path, objective="accuracy")


def _jobs(trainer: SklearnCVTrainer, resources: TrialResources, n: int) -> list[TrialJob]:
    return [TrialJob(i, {"max_depth": 3 + i}, trainer, resources, "warm", "accuracy") for i in range(n)]


def test_workers_are_warmed_at_start_and_run_the_trials(tmp_path):
    trainer = _trainer(SklearnCVTrainer, tmp_path)
    resources = TrialResources(cpus=1)
    executor = RayExecutor(warm=(trainer, resources))
    executor.start()
    try:
        slots = executor.free_slots(resources)
        assert slots >= 1
        # One warmed worker per trial that fits at once, each warm() without error.
        assert len(executor.warmed) == min(slots, 8)
        assert set(executor.warmed.values()) == {None}
        jobs = _jobs(trainer, resources, slots)
        for job in jobs:
            executor.submit(job)
        done = finish_trials(executor, {j.number for j in jobs})
        for outcome in done.values():
            assert outcome.failure is None and outcome.metrics["accuracy"] > 0.3
            assert outcome.placement["pid"] in executor.warmed
    finally:
        executor.shutdown()


def test_a_failing_warm_is_reported_and_trials_still_run(tmp_path, caplog):
    # Ray reads its auth mode at import: the executor's environment first, then ray.
    prepare_local_ray_env(str(tmp_path))
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the worker cannot import tests/
    try:
        trainer = _trainer(_WarmFails, tmp_path)
        resources = TrialResources(cpus=1)
        executor = RayExecutor(warm=(trainer, resources), max_concurrent=1)
        with caplog.at_level(logging.WARNING, logger="hpsearch.executor"):
            executor.start()
        try:
            assert list(executor.warmed.values()) == ["RuntimeError: cannot warm"]
            assert "warming the trial workers failed" in caplog.text
            (job,) = _jobs(trainer, resources, 1)
            executor.submit(job)
            (outcome,) = finish_trials(executor, {0}).values()
            assert outcome.failure is None and outcome.metrics["accuracy"] > 0.3
        finally:
            executor.shutdown()
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_study_on_the_private_ray_leaves_the_environment_as_it_was(tmp_path, monkeypatch):
    import os

    import hpsearch

    # A variable the executor would otherwise set, already set by the user: it must stay.
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    path = tmp_path / "env.yaml"
    path.write_text(
        "name: env\nobjective: {metric: accuracy, direction: maximize}\nn_trials: 2\n"
        "search_space:\n  max_depth: {type: int, low: 2, high: 4}\n"
        "trainer: {kind: sklearn_cv, estimator: sklearn.tree.DecisionTreeClassifier, dataset: digits, cv: 2}\n"
        f"storage: sqlite:///{tmp_path / 'env.db'}\n"
    )
    import sklearn  # noqa: F401 - sets KMP_* at its first import, whoever imports it: not ours to undo

    before = dict(os.environ)
    result = hpsearch.run_study(str(path))
    assert result.counts() == {"COMPLETE": 2}
    assert dict(os.environ) == before


def test_prestart_then_shutdown_without_start_stops_the_private_ray(tmp_path):
    import os

    import ray

    before = dict(os.environ)
    executor = RayExecutor()
    executor.prestart()  # the manager's path when the study turns out to need no trial
    temp_dir = executor._temp_dir
    assert temp_dir and os.path.isdir(temp_dir)
    executor.shutdown()
    assert not ray.is_initialized()
    assert not os.path.exists(temp_dir)
    assert dict(os.environ) == before
    executor.shutdown()  # a second call changes nothing
    assert dict(os.environ) == before


def test_the_hub_sends_a_batch_again_until_the_driver_acknowledges_it():
    """A drain call lost on its way back (Ray's ActorUnavailableError as a node goes away) loses no report.

    The hub is a plain async class (Ray makes it an actor at run time), driven here directly.
    """
    import asyncio

    from hpsearch.executors._ray_hub import ReportHub

    hub = ReportHub()

    async def go() -> None:
        await hub.report(1, 0, 0.5)
        assert await hub.drain(0.01, 0) == (1, [(1, 0, 0.5)], {})
        await hub.report(1, 1, 0.6)
        assert await hub.drain(0.01, 0) == (1, [(1, 0, 0.5)], {})  # not acknowledged: the same batch again
        assert await hub.drain(0.01, 1) == (2, [(1, 1, 0.6)], {})
        assert await hub.drain(0.01, 2) == (3, [], {})

    asyncio.run(go())
