"""Opening a study: create or load it through the mirror, check it matches the file, name its objective."""

from __future__ import annotations

import json
import time
import warnings
from typing import TYPE_CHECKING

from hpsearch._version import __version__
from hpsearch.errors import ConfigError, HpsearchError
from hpsearch.storage._urls import open_storage
from hpsearch.study._environment import record_environment
from hpsearch.study._prepare import Prepared, resolved_config_yaml
from hpsearch.study._recovery import DRIVER_ATTR
from hpsearch.study._warm import check_seeds, load_source, seed_study

if TYPE_CHECKING:
    import optuna

    from hpsearch.config import StudyConfig

__all__ = ["check_compatible", "name_objective", "open_study"]


def open_study(prepared: Prepared, driver: str) -> optuna.Study:
    """Create or load the study, refusing one run with another direction or search space.

    ``enqueue`` points and the ``warm_start`` study are checked before the storage is
    opened, and written (once per study) after the study is known to match the file.
    """
    from hpsearch.storage._mirror import MirroredStorage, storage_retry_s

    cfg = prepared.config
    retry_s = storage_retry_s()  # a bad $HPSEARCH_STORAGE_RETRY_S is refused before the database is opened
    check_seeds(prepared)
    source = load_source(prepared)  # read-only, before this study's storage is created
    # Trials are stamped with this driver in the transaction that creates them, so a
    # trial created twice after a lost connection is recognised (see GhostWatch).
    storage = MirroredStorage(
        open_storage(prepared.storage_url), retry_s=retry_s, trial_system_attrs={DRIVER_ATTR: driver}
    )
    study = _create_or_load(prepared, storage)
    directions = [o.direction for o in cfg.objectives]
    stored = [d.name.lower() for d in study.directions]
    if stored != directions:
        field = "objective.direction" if len(stored) == len(directions) == 1 else "objective"
        raise ConfigError(
            f"{prepared.file}: {field}: study {cfg.name!r} in storage was created with "
            f"direction{'s' if len(stored) > 1 else ''} {', '.join(stored)}; keep it or rename the study"
        )
    name_objective(study, [o.metric for o in cfg.objectives])
    check_compatible(study, cfg, prepared.file)
    record_environment(study, cfg.source.parent if cfg.source is not None else None)
    seed_study(study, prepared, source, driver)
    return study


def _create_or_load(prepared: Prepared, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """The study named in the file: created, or loaded when it exists (or another driver just created it)."""
    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = prepared.config
    for attempt in range(5):
        try:
            return optuna.create_study(
                study_name=cfg.name,
                storage=storage,
                sampler=prepared.sampler,
                pruner=prepared.pruner,
                directions=[o.direction for o in cfg.objectives],
                load_if_exists=True,
            )
        except sqlalchemy.exc.IntegrityError:
            # Another driver created it at the same moment: load it.
            time.sleep(0.1 * (attempt + 1))
    raise HpsearchError(  # pragma: no cover - five collisions in a row
        f"{prepared.file}: name: could not create or load study {cfg.name!r}"
    )


def check_compatible(study: optuna.Study, config: StudyConfig, file: str) -> None:
    """Refuse a changed search space on a study with trials; record what this run is (writes only changes)."""
    attrs = study.user_attrs
    # `when:` is compared too; a param without one is dumped as before it existed, so older studies still match.
    dumps = {
        k: v.model_dump(mode="json", exclude={"when"} if v.when is None else None)
        for k, v in config.search_space.items()
    }
    space = json.dumps(dumps, sort_keys=True)
    stored = attrs.get("hpsearch.search_space")
    if stored is not None and stored != space and study.get_trials(deepcopy=False):
        raise ConfigError(
            f"{file}: search_space: differs from the one study "
            f"{config.name!r} was run with; rename the study (name:) to start a new one, and add "
            f"`warm_start: {{study: {config.name}}}` to copy this one's trials into it as history"
        )
    updates = {
        "hpsearch.search_space": space,
        "hpsearch.config": resolved_config_yaml(config),
        "hpsearch.version": __version__,
        "hpsearch.trainer": config.trainer.kind,
        "hpsearch.objective": config.first_objective.metric,
    }
    if config.source:
        updates["hpsearch.study_file"] = str(config.source)
    for key, value in updates.items():
        if attrs.get(key) != value:
            study.set_user_attr(key, value)


def name_objective(study: optuna.Study, metrics: list[str]) -> None:
    """Name the study's objectives, so the dashboard's axes read the metrics, not "Objective 0".

    Written right after the study is created (Optuna has no way to pass it to
    ``create_study``); a run that died in between is healed by the next one,
    and a re-run with the names already set writes nothing.
    """
    import optuna

    if study.metric_names != metrics:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metrics)
