"""A read-your-writes, in-memory mirror over Optuna's RDB storage.

The study manager is the only writer of its trials, so it can answer the
sampler's and pruner's reads (``get_all_trials`` on every ``ask`` and every
``should_prune``) from memory instead of re-querying SQL each time; measured,
those reads were most of the per-trial cost. Every write still goes to the
database first (nothing is ever only in memory), and trials written by other
processes (other drivers on the same study) are pulled in incrementally at
most every ``refresh_s`` seconds, through Optuna's own ``_CachedStorage``.
"""

from __future__ import annotations

import copy
import datetime
import threading
import time
from collections.abc import Container, Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.study._frozen import FrozenStudy
from optuna.study._study_direction import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["MirroredStorage"]


class MirroredStorage(BaseStorage):
    """Write-through to ``backend``; reads of trials come from memory.

    Args:
        backend: The RDB storage that holds the truth.
        refresh_s: How stale other processes' trials may be in reads.
    """

    def __init__(self, backend: RDBStorage, *, refresh_s: float = 1.0) -> None:
        self.backend = backend
        self._remote = _CachedStorage(backend)
        self._refresh_s = refresh_s
        self._lock = threading.RLock()
        self._trials: dict[int, dict[int, FrozenTrial]] = {}  # study -> trial id -> trial
        self._source: dict[int, FrozenTrial] = {}  # trial id -> remote object last copied
        self._study_of: dict[int, int] = {}
        self._synced: dict[int, float] = {}

    # ------------------------------------------------------------ studies

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._remote.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._remote.delete_study(study_id)
        with self._lock:
            for tid in self._trials.pop(study_id, {}):
                self._study_of.pop(tid, None)
                self._source.pop(tid, None)
            self._synced.pop(study_id, None)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._remote.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._remote.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._remote.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._remote.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._remote.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._remote.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._remote.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._remote.get_all_studies()

    # ------------------------------------------------------------ trials

    def _sync(self, study_id: int, *, force: bool = False) -> dict[int, FrozenTrial]:
        now = time.monotonic()
        mirror = self._trials.setdefault(study_id, {})
        if force or now - self._synced.get(study_id, -1e18) >= self._refresh_s:
            for t in self._remote.get_all_trials(study_id, deepcopy=False):
                # Finished trials come back as the same cached object: copy only changes.
                if self._source.get(t._trial_id) is not t:
                    mirror[t._trial_id] = copy.deepcopy(t)
                    self._source[t._trial_id] = t
                    self._study_of[t._trial_id] = study_id
            self._synced[study_id] = now
        return mirror

    def _mine(self, trial_id: int) -> FrozenTrial | None:
        """A fresh shallow copy of the mirrored trial, installed in its place.

        Copy-on-write: lists handed out by ``get_all_trials(deepcopy=False)``
        keep the old object, so a later write never changes them.
        """
        sid = self._study_of.get(trial_id)
        if sid is None or trial_id not in self._trials[sid]:
            return None
        t = copy.copy(self._trials[sid][trial_id])
        self._trials[sid][trial_id] = t
        return t

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = self._remote.create_new_trial(study_id, template_trial)
        trial = self.backend.get_trial(trial_id)
        with self._lock:
            self._sync(study_id)
            self._trials[study_id][trial_id] = trial
            self._study_of[trial_id] = study_id
        return trial_id

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution) -> None:
        self._remote.set_trial_param(trial_id, param_name, param_value_internal, distribution)
        with self._lock:
            t = self._mine(trial_id)
            if t is not None:
                t.params = {**t.params, param_name: distribution.to_external_repr(param_value_internal)}
                t.distributions = {**t.distributions, param_name: distribution}

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        with self._lock:
            for t in self._trials.get(study_id, {}).values():
                if t.number == trial_number:
                    return t._trial_id
        return self._remote.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        changed = self._remote.set_trial_state_values(trial_id, state, values)
        if changed:
            with self._lock:
                t = self._mine(trial_id)
                if t is not None:
                    now = datetime.datetime.now()
                    t.state = state
                    if values is not None:
                        t.values = list(values)  # a new list: copies share nothing mutable
                    if state == TrialState.RUNNING and t.datetime_start is None:
                        t.datetime_start = now
                    if state.is_finished():
                        t.datetime_complete = now
        return changed

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._remote.set_trial_intermediate_value(trial_id, step, intermediate_value)
        with self._lock:
            t = self._mine(trial_id)
            if t is not None:
                t.intermediate_values = {**t.intermediate_values, step: intermediate_value}

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._remote.set_trial_user_attr(trial_id, key, value)
        with self._lock:
            t = self._mine(trial_id)
            if t is not None:
                t.user_attrs = {**t.user_attrs, key: copy.deepcopy(value)}

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._remote.set_trial_system_attr(trial_id, key, value)
        with self._lock:
            t = self._mine(trial_id)
            if t is not None:
                t.system_attrs = {**t.system_attrs, key: copy.deepcopy(value)}

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            sid = self._study_of.get(trial_id)
            t = None if sid is None else self._trials[sid].get(trial_id)
            if t is not None:
                return copy.deepcopy(t)
        return self._remote.get_trial(trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        with self._lock:
            if study_id not in self._trials:
                self._remote.get_study_name_from_id(study_id)  # raises KeyError for unknown studies
            trials = sorted(self._sync(study_id).values(), key=lambda t: t.number)
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def refresh(self, study_id: int) -> None:
        """Read other writers' trials now instead of waiting for ``refresh_s``."""
        with self._lock:
            self._sync(study_id, force=True)

    def get_n_trials(self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None) -> int:
        if isinstance(state, TrialState):
            state = (state,)
        return len(self.get_all_trials(study_id, deepcopy=False, states=state))

    def __getstate__(self) -> dict[str, Any]:
        # A pickled copy (e.g. sent to a worker) starts with an empty mirror.
        return {"backend": self.backend, "refresh_s": self._refresh_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["backend"], refresh_s=state["refresh_s"])  # type: ignore[misc]

    def remove_session(self) -> None:
        self.backend.remove_session()
