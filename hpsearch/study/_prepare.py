"""Everything checked and built before storage is touched: :func:`prepare` and its validators."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from hpsearch.checkpoints import CheckpointStore
from hpsearch.config import StudyConfig
from hpsearch.config import format_validation as _format_validation
from hpsearch.errors import ConfigError, HpsearchError
from hpsearch.storage._urls import check_storage, mask_url
from hpsearch.trainers import TRAINERS, BaseTrainer, trainer_class

__all__ = [
    "Prepared",
    "build_trainer",
    "check_multi_objective",
    "check_objective",
    "check_ray_address",
    "check_pbt",
    "check_ray_installed",
    "checkpoint_store",
    "prepare",
    "resolved_config_yaml",
]


@dataclass
class Prepared:
    """Everything checked and built before storage is touched."""

    config: StudyConfig
    file: str
    trainer: BaseTrainer
    distributions: dict[str, Any]
    sampler: Any
    pruner: Any
    storage_url: str
    #: Where trials checkpoint (None: checkpoints off, see :func:`checkpoint_store`).
    checkpoints: CheckpointStore | None = None


def _prefixed(err: HpsearchError, file: str) -> HpsearchError:
    text = str(err)
    if text.startswith(file):
        return err
    new = type(err)(f"{file}: {text}")
    return new


def build_trainer(cfg: StudyConfig) -> BaseTrainer:
    file = cfg.file
    kind = cfg.trainer.kind
    if kind not in TRAINERS:
        raise ConfigError(f"{file}: trainer.kind: unknown trainer {kind!r}; choose one of: {', '.join(TRAINERS)}")
    cls = trainer_class(kind)
    try:
        settings = cls.Settings.model_validate(cfg.trainer_settings)
    except ValidationError as e:
        msg = _format_validation(e, file)
        raise ConfigError(msg.replace(f"{file}: ", f"{file}: trainer.", 1)) from None
    return cls(settings, study_dir=cfg.study_dir, objective=cfg.first_objective.metric)


def prepare(cfg: StudyConfig, *, check_trainer: bool = True) -> Prepared:
    """Validate the whole study (sampler, pruner, trainer, storage) without writing."""
    from hpsearch.search import make_pruner, make_sampler, to_distributions

    file = cfg.file
    if cfg.n_trials is None and cfg.timeout is None and cfg.sampler.name != "grid" and not _pbt(cfg):
        raise ConfigError(f"{file}: n_trials: set n_trials or timeout, or the study never ends")
    from hpsearch.executors import log_limit

    log_limit()  # a bad $HPSEARCH_TRIAL_LOG_MB is refused before anything is written
    sampler = make_sampler(cfg)
    pruner = make_pruner(cfg)
    distributions = to_distributions(cfg)
    trainer = build_trainer(cfg)
    if cfg.resources.workers > 1 and not trainer.supports_workers:
        raise ConfigError(f"{file}: resources.workers: trainer {trainer.kind!r} runs on one worker; set workers: 1")
    if cfg.resources.workers > 1 and cfg.executor != "ray":
        raise ConfigError(
            f"{file}: resources.workers: data-parallel trials run through Ray Train; "
            "use executor: ray or set workers: 1"
        )
    checkpoints = checkpoint_store(cfg)  # before Ray's address is tried: a bad path is known without it
    if cfg.multi_objective:
        check_multi_objective(cfg, trainer)
    if _pbt(cfg):
        check_pbt(cfg, trainer, checkpoints)  # before the trainer checks its params: the scheduler comes first
    if check_trainer:
        try:
            trainer.validate(set(cfg.search_space))
            trainer.validate_space(cfg.search_space)
        except HpsearchError as e:
            raise _prefixed(e, file) from None
        check_objective(trainer, cfg)
    if cfg.executor == "ray":
        check_ray_installed(file)
        check_ray_address(cfg.ray.address or os.environ.get("RAY_ADDRESS"), file)
    url = cfg.resolved_storage()
    check_storage(url, file=file)
    return Prepared(cfg, file, trainer, distributions, sampler, pruner, url, checkpoints)


def _pbt(cfg: StudyConfig) -> bool:
    return cfg.scheduler.name == "pbt"


def check_pbt(cfg: StudyConfig, trainer: BaseTrainer, checkpoints: CheckpointStore | None) -> None:
    """Refuse a PBT study that cannot work: a trainer that cannot checkpoint, a pruner, no checkpoints."""
    file, sch = cfg.file, cfg.scheduler
    if not trainer.can_checkpoint or trainer.imports_trials:
        raise ConfigError(
            f"{file}: scheduler.name: pbt copies checkpoints between members, and trainer {trainer.kind!r} "
            "cannot checkpoint; use a python, text_classification or image_classification trainer"
        )
    if cfg.pruner.name != "none":
        raise ConfigError(
            f"{file}: pruner.name: PBT decides itself which members stop (exploit); remove the pruner "
            f"({cfg.pruner.name!r}) or use scheduler: sampler"
        )
    _check_pbt_objective(cfg, trainer)
    if checkpoints is None:
        raise ConfigError(
            f"{file}: checkpoints: PBT needs checkpoints; set checkpoints.enabled: true (and, on a "
            "cluster, checkpoints.path)"
        )
    from hpsearch.study._pbt import pbt_generations

    conditional = [name for name, spec in cfg.search_space.items() if spec.when]
    if conditional:
        raise ConfigError(
            f"{file}: search_space.{conditional[0]}.when: PBT keeps one set of params per member and "
            "cannot follow conditions; remove when: or use scheduler: sampler"
        )

    pbt_generations(cfg, trainer)  # known, or a ConfigError saying to set it
    unknown = sorted(set(sch.mutate or []) - set(cfg.search_space))
    if unknown:
        raise ConfigError(
            f"{file}: scheduler.mutate: {', '.join(unknown)} not in search_space; choose from "
            f"{', '.join(cfg.search_space) or 'nothing (the search space is empty)'}"
        )


def checkpoint_store(cfg: StudyConfig) -> CheckpointStore | None:
    """The study's checkpoint store; None when ``checkpoints.enabled`` is false, or on a Ray cluster
    without ``checkpoints.path`` (the default folder is on the driver's disk, out of the workers' reach).

    Raises:
        ConfigError: A relative folder with a Ray cluster, or a URI pyarrow cannot open.
    """
    c, file = cfg.checkpoints, cfg.file
    if not c.enabled:
        return None
    cluster = cfg.executor == "ray" and (cfg.ray.address or os.environ.get("RAY_ADDRESS"))
    remote = bool(c.path and "://" in c.path)
    if cluster and not c.path:
        return None
    if cluster and not remote and not os.path.isabs(c.path or ""):
        raise ConfigError(
            f"{file}: checkpoints.path: {c.path!r} is a relative folder that the Ray cluster's workers cannot "
            "reach; give an absolute folder on a mount every node shares, or a URI such as s3://bucket/dir"
        )
    root = cfg.resolved_checkpoints()
    if remote:
        try:
            from pyarrow import fs

            fs.FileSystem.from_uri(root)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad URI
            raise ConfigError(
                f"{file}: checkpoints.path: cannot open {root!r} ({type(e).__name__}: {str(e)[:200]}); "
                "check the URI and its credentials, or give a folder"
            ) from None
    return CheckpointStore(root, cfg.name, keep=c.keep)


def _check_pbt_objective(cfg: StudyConfig, trainer: BaseTrainer) -> None:
    """Refuse PBT on a torch trainer's cost metric: it is measured once, after training, never per step."""
    if trainer.kind not in ("text_classification", "image_classification"):
        return
    from hpsearch.trainers.torch import COST_METRICS

    metric = cfg.first_objective.metric
    if metric in COST_METRICS:
        raise ConfigError(
            f"{cfg.file}: objective.metric: PBT ranks members by what they report each step, and {metric!r} is "
            "measured once, after training; use a validation metric (accuracy, f1_macro, loss) with PBT"
        )


def check_objective(trainer: BaseTrainer, cfg: StudyConfig) -> None:
    """Refuse an objective or constraint metric the trainer never returns (when it can tell in advance)."""
    known = trainer.metrics()
    if known is None:
        return
    fields = [
        ("objective" if not cfg.multi_objective else f"objective[{i}]", o.metric) for i, o in enumerate(cfg.objectives)
    ]
    fields += [(f"constraints[{i}]", c.metric) for i, c in enumerate(cfg.constraints)]
    for field, metric in fields:
        if metric not in known:
            raise ConfigError(
                f"{cfg.file}: {field}.metric: {metric!r} is not a metric trainer {trainer.kind!r} "
                f"returns; use one of: {', '.join(sorted(known))}"
            )


def check_multi_objective(cfg: StudyConfig, trainer: BaseTrainer) -> None:
    """Refuse what cannot run with several objectives: a pruner, PBT, a single-objective sampler, an import."""
    from hpsearch.study._objectives import MULTI_OBJECTIVE_SAMPLERS

    file, n = cfg.file, len(cfg.objectives)
    if trainer.imports_trials:
        raise ConfigError(
            f"{file}: objective: trainer {trainer.kind!r} imports a whole search scored on one objective, and this "
            f"study has {n}; keep one objective, or use trainer kind sklearn_cv (one trial per point)"
        )
    if cfg.pruner.name != "none":
        raise ConfigError(
            f"{file}: pruner.name: Optuna's pruners compare one objective, and this study has {n}; "
            f"remove the pruner ({cfg.pruner.name!r}) or keep one objective"
        )
    if cfg.scheduler.name == "pbt":
        raise ConfigError(
            f"{file}: scheduler.name: PBT ranks members by one objective, and this study has {n}; "
            "use scheduler: sampler or keep one objective"
        )
    if cfg.sampler.name not in MULTI_OBJECTIVE_SAMPLERS:
        raise ConfigError(
            f"{file}: sampler.name: {cfg.sampler.name!r} optimises one objective, and this study has {n}; "
            f"use one of: {', '.join(MULTI_OBJECTIVE_SAMPLERS)}"
        )


def check_ray_installed(file: str) -> None:
    """Refuse ``executor: ray`` without Ray installed, before anything is written.

    Only looks Ray up: importing it here would fix its settings (loopback, token
    auth) before the executor has set them.
    """
    import importlib.util

    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError(
            f"{file}: executor: ray is not installed; pip install 'ray[default,train]', or run with --executor local"
        )


def check_ray_address(address: str | None, file: str, *, timeout: float = 5.0) -> None:
    """Refuse an unreachable ``host:port`` before anything is written.

    Ray itself retries a dead address for minutes; a TCP connect answers in seconds.
    """
    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{file}: ray.address: expected host:port or ray://host:port, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(
            f"{file}: ray.address: cannot reach Ray at {address} ({e.strerror or e}); start the "
            "cluster (ray start --head) or fix the address, or drop it to run on a local Ray"
        ) from None


def resolved_config_yaml(cfg: StudyConfig) -> str:
    """The fully resolved study as YAML, with the storage password masked."""
    data = cfg.model_dump(mode="json", exclude={"source"})
    data["storage"] = mask_url(cfg.resolved_storage())
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
