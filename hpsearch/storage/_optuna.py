"""Optuna's private API as the study manager needs it, in one place.

Each function wraps one use of an Optuna internal and says why the public API
does not do it. The manager (hpsearch.study) calls only these; the mirror
(:mod:`hpsearch.storage._mirror`), an implementation of Optuna's storage
interface, keeps its own uses, each commented there. Optuna's storage contract
suite (tests/core/test_mirror_storage.py) runs over the mirror on each Optuna
version we accept, so a change in these internals fails a test, not a study.
"""

from __future__ import annotations

import contextlib
from collections.abc import Container
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

__all__ = [
    "batch",
    "find_ghosts",
    "refresh",
    "set_study_system_attr",
    "set_trial_system_attr",
    "set_trial_user_attr",
    "storage_of",
    "storage_retries",
    "study_id",
    "study_system_attrs",
    "trial_id",
    "trial_system_attrs",
]


def storage_of(study: optuna.Study) -> BaseStorage:
    """The study's storage object.

    Why private: ``optuna.Study`` exposes no accessor for the storage it was
    created with, and the manager needs ours (the mirror) to batch and refresh.
    """
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The study's id in its storage.

    Why private: storage methods are keyed by id, and ``Study`` keeps it in ``_study_id`` only.
    """
    return study._study_id


def trial_id(trial: optuna.trial.Trial | FrozenTrial) -> int:
    """The trial's id in its storage (not its number).

    Why private: ``Trial`` and ``FrozenTrial`` expose ``number`` only; storage
    writes to a trial that ``study.tell`` does not cover need the id.
    """
    return trial._trial_id


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    """The study's system attributes (our driver heartbeats live there).

    Why private: ``Study.system_attrs`` was removed from the public API (Optuna 4);
    system attributes are still the place that users' ``user_attrs`` never clash with.
    """
    return storage_of(study).get_study_system_attrs(study_id(study))


def set_study_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    """Write one study system attribute (see :func:`study_system_attrs` for why)."""
    storage_of(study).set_study_system_attr(study_id(study), key, value)


def trial_system_attrs(study: optuna.Study, trial: optuna.trial.Trial) -> dict[str, Any]:
    """A live trial's system attributes, as stored.

    Why private: ``Trial.system_attrs`` is deprecated and the sampler's own
    attributes (``grid_id``, ``fixed_params``) are system attributes.
    """
    return storage_of(study).get_trial_system_attrs(trial_id(trial))


def set_trial_system_attr(study: optuna.Study, trial: optuna.trial.Trial | FrozenTrial, key: str, value: Any) -> None:
    """Write one trial system attribute (the driver's claim, the retry mark).

    Why private: ``Trial.set_system_attr`` was removed from the public API, and
    Optuna's samplers read retry marks from system attributes.
    """
    storage_of(study).set_trial_system_attr(trial_id(trial), key, value)


def overwrite_intermediate_value(study: optuna.Study, trial: optuna.trial.Trial, step: int, value: float) -> None:
    """Store ``value`` at ``step`` even when the trial already holds a value there.

    Why private: ``Trial.report`` ignores a step already reported; a re-run whose
    checkpoint failed to load reports again the steps it had carried over.
    """
    storage_of(study).set_trial_intermediate_value(trial_id(trial), step, value)


def sampler_view(study: optuna.Study, trial: FrozenTrial) -> optuna.Study:
    """The study as the sampler sees it for ``trial``: with Hyperband, only the trial's bracket.

    Why private: ``optuna.Trial`` calls ``pruners._filter_study`` before it asks the
    sampler; drawing params without a ``Trial`` (the dedupe redraws) must do the same.
    """
    from optuna import pruners

    return pruners._filter_study(study, trial)


def set_trial_user_attr(study: optuna.Study, trial: FrozenTrial, key: str, value: Any) -> None:
    """Write a user attribute of a trial we hold only as a ``FrozenTrial``.

    Why private: ``FrozenTrial.set_user_attr`` changes the copy, not the storage;
    recovery must mark another driver's RUNNING trial before telling it FAIL.
    """
    storage_of(study).set_trial_user_attr(trial_id(trial), key, value)


def batch(study: optuna.Study) -> contextlib.AbstractContextManager[None]:
    """One transaction for the trial writes inside (``MirroredStorage.batch``); a no-op on other storages.

    Why private: Optuna commits each write on its own; only our storage batches.
    """
    fn = getattr(storage_of(study), "batch", None)
    return fn() if fn is not None else contextlib.nullcontext()


def refresh(study: optuna.Study) -> None:
    """Read other writers' trials now (``MirroredStorage.refresh``); a no-op on other storages."""
    fn = getattr(storage_of(study), "refresh", None)
    if fn is not None:
        fn(study_id(study))


def storage_retries(study: optuna.Study) -> int | None:
    """Lost connections the mirror has retried so far, or None when the storage is not ours."""
    storage = storage_of(study)
    return storage.retries if hasattr(storage, "ghosts") else None  # type: ignore[attr-defined]


def find_ghosts(study: optuna.Study, running: Container[int]) -> list[FrozenTrial]:
    """This driver's RUNNING trials whose number is not in ``running`` (``MirroredStorage.ghosts``)."""
    storage = storage_of(study)
    if not hasattr(storage, "ghosts"):
        return []
    ghosts: list[FrozenTrial] = storage.ghosts(study_id(study), running)
    return ghosts
