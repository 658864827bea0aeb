"""What the loop hands the executor: resources, jobs, and the executor itself."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from hpsearch.study._scheduling import TrialToRun
from hpsearch.trainers import TrialResources

if TYPE_CHECKING:
    from hpsearch.config import StudyConfig
    from hpsearch.executors import BaseExecutor, TrialJob
    from hpsearch.study._prepare import Prepared

__all__ = ["make_job", "study_executor", "trial_resources"]


def trial_resources(config: StudyConfig, *, workers: bool = True) -> TrialResources:
    """What one trial asks for; a whole-search import runs on one worker (``workers=False``)."""
    r = config.resources
    if not workers:
        return TrialResources(cpus=r.cpus, gpus=r.gpus, custom=dict(r.custom))
    return TrialResources(cpus=r.cpus, gpus=r.gpus, workers=r.workers, custom=dict(r.custom))


def make_job(prepared: Prepared, chosen: TrialToRun, best: float | None, resume: Any = None) -> TrialJob:
    """The job for ``chosen``: its params, the trainer, the best value so far (to drop a worse model
    early), the study's checkpoint store and the checkpoint ``resume`` it continues from."""
    from hpsearch.executors import TrialJob, live_log_path

    cfg = prepared.config
    if chosen.imports:
        resources = trial_resources(cfg, workers=False)
        job = TrialJob(chosen.number, {}, prepared.trainer, resources, cfg.name, cfg.first_objective.metric)
        job.checkpoints = prepared.checkpoints  # its cache_dir: a whole search re-runs only unfinished fits
        return job
    return TrialJob(
        number=chosen.number,
        params=chosen.params,
        trainer=prepared.trainer,
        resources=trial_resources(cfg),
        study_name=cfg.name,
        objective=cfg.first_objective.metric,
        best_value=best,
        maximize=cfg.first_objective.direction == "maximize",
        checkpoints=prepared.checkpoints,
        resume=resume,
        resume_any_params=chosen.any_params,
        log_path=str(live_log_path(cfg.resolved_artifacts(), cfg.name, chosen.number)),
    )


def study_executor(prepared: Prepared) -> BaseExecutor:
    """The executor ``executor:`` names, not started (Ray's workers warmed with the trainer)."""
    from hpsearch.executors import make_executor

    cfg = prepared.config
    if cfg.executor == "local":
        return make_executor("local", max_concurrent=cfg.max_concurrent_trials)
    trainer = prepared.trainer
    resources = trial_resources(cfg)
    if _fits_driver_first(prepared, resources):
        from hpsearch.executors._driver_first import DriverFirst, driver_slots

        ray = make_executor("ray", max_concurrent=cfg.max_concurrent_trials, namespace=cfg.ray.namespace)
        slots = driver_slots(resources, cfg.max_concurrent_trials)
        return DriverFirst(ray, slots, cfg.ray.driver_first_s)  # type: ignore[arg-type]
    return make_executor(
        "ray",
        address=cfg.ray.address,
        max_concurrent=cfg.max_concurrent_trials,
        namespace=cfg.ray.namespace,
        warm=None if trainer.imports_trials else (trainer, resources),
    )


def _fits_driver_first(prepared: Prepared, resources: TrialResources) -> bool:
    """A private Ray, ``ray.driver_first_s`` > 0, a light trainer and CPU-only one-worker trials."""
    cfg, trainer = prepared.config, prepared.trainer
    private = cfg.ray.address is None and not os.environ.get("RAY_ADDRESS")
    light = trainer.runs_on_driver and not trainer.imports_trials
    return private and light and cfg.ray.driver_first_s > 0 and resources == TrialResources(cpus=resources.cpus)
