"""hpsearch: hyperparameter search for fine-tunes on Optuna + Ray, one SQL store.

Public API::

    import hpsearch
    result = hpsearch.run_study("studies/quickstart.yaml", n_trials=20)
    result.best_params, result.best_value
    result.trials_dataframe()
    hpsearch.compare(["studies/digits_tree_gridsearchcv.yaml", "studies/digits_tree_tpe.yaml"])
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch._version import __version__
from hpsearch.errors import (
    ConfigError,
    HpsearchError,
    StorageError,
    StudyFailedError,
    TrainerError,
)

if TYPE_CHECKING:
    from hpsearch.config import StudyConfig
    from hpsearch.views import StudyResult

__all__ = [
    "__version__",
    "ConfigError",
    "HpsearchError",
    "StorageError",
    "StudyConfig",
    "StudyFailedError",
    "StudyResult",
    "TrainerError",
    "compare",
    "load_config",
    "load_result",
    "run_study",
]


def run_study(
    study: str | StudyConfig,
    *,
    n_trials: int | None = None,
    more: int | None = None,
    storage: str | None = None,
    seed: int | None = None,
    max_concurrent_trials: int | None = None,
    ray_address: str | None = None,
    executor: str | None = None,
    timeout: float | None = None,
    progress: bool | None = False,
    checkpoints: str | None = None,
) -> StudyResult:
    """Run (or resume) a study to its budget and return its result.

    ``n_trials`` is the total the study should hold; ``more`` asks for that many trials beyond
    those finished (give one, not both). Other keywords override the study file like the CLI flags.

    Raises:
        ConfigError: Invalid study file or override, or both ``n_trials`` and
            ``more`` given (nothing is written).
        StorageError: Unusable storage (nothing is written).
        StudyFailedError: ``max_failures`` trials failed.
    """
    from hpsearch.study import StudyManager

    if n_trials is not None and more is not None:  # as the CLI: one is a total, the other an increment
        raise ConfigError("n_trials and more: give one of them, not both")
    overrides: dict[str, Any] = {
        "n_trials": n_trials,
        "storage": storage,
        "sampler.seed": seed,
        "max_concurrent_trials": max_concurrent_trials,
        "ray.address": ray_address,
        "executor": executor,
        "timeout": timeout,
        "checkpoints.path": checkpoints,
    }
    return StudyManager(_study_config(study, overrides), more=more, progress=progress).run()


def _study_config(study: str | StudyConfig, overrides: dict[str, Any]) -> StudyConfig:
    """The study file loaded with ``overrides``; a StudyConfig as given (it takes no overrides)."""
    from hpsearch.config import StudyConfig, load_config

    if not isinstance(study, StudyConfig):
        return load_config(study, overrides)
    if any(v is not None for v in overrides.values()):
        raise ConfigError("run_study: pass overrides with a study path, or use StudyConfig.model_copy(update=...)")
    return study


def load_result(study: str | Path | StudyConfig, *, storage: str | None = None) -> StudyResult:
    """The stored result of a study file, without running anything."""
    from hpsearch.views import load_result as _load

    return _load(study, storage=storage)


def compare(studies: list[Any] | None = None, *, storage: str | None = None) -> Any:
    """One pandas DataFrame row per study: best value and CV spread, counts, compute, time to best.

    ``studies`` are study files (or, with ``storage``, names); no studies and a
    ``storage`` URL compare every study in it. Reads only. See :func:`hpsearch.views.compare` for the columns.
    """
    from hpsearch.views import compare as _compare

    return _compare(studies, storage=storage)


def __getattr__(name: str) -> Any:
    # Lazy, so that `hpsearch --help` does not import pydantic, optuna or pandas.
    if name == "StudyResult":
        from hpsearch.views import StudyResult

        return StudyResult
    if name in ("StudyConfig", "load_config"):
        from hpsearch import config

        return getattr(config, name)
    raise AttributeError(f"module 'hpsearch' has no attribute {name!r}")
