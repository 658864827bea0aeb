"""The resume-safe grid sampler: Optuna's GridSampler, made safe for ask/tell, retries and resume.

Optuna's version counts FAIL trials as visited (so a failed point is never
retried), assigns ``grid_id = trial.number`` for the first trials (wrong after
a resume with failures) and calls ``study.stop()`` in ``after_trial`` (which
raises outside ``optimize``). Here a point is done when a trial of it is
COMPLETE, PRUNED, or FAIL without the manager's retry mark; points of FAIL
trials marked for retry (orphaned, worker died) run first; and exhaustion is
checked by the manager through ``is_exhausted``.

This is the only module under ``hpsearch.search`` that touches Optuna's private
API (``GridSampler._all_grids``, ``_search_space``, ``_same_search_space``,
``_rng``, ``study._storage``, ``trial._trial_id``); each use says why. Optuna
is pinned to the minor versions where these were checked (pyproject.toml).
Optuna is imported on first use, so ``import hpsearch.search`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = ["RETRY_ATTR", "grid_sampler_class", "grid_size"]

#: Trial system attribute: this FAIL trial's params should run again (set by the manager).
RETRY_ATTR = "hpsearch:retry"

_GRID_CLASS: type | None = None


def grid_size(sampler: Any) -> int:
    """The number of points in a GridSampler's grid (ours or Optuna's)."""
    # Optuna has no public accessor for the grid; _all_grids is the list of its points.
    return len(sampler._all_grids)


def _ids_by_state(sampler: Any, study: optuna.Study) -> tuple[set[int], set[int], list[int]]:
    """Grid ids (done, running or waiting, failed and marked for retry) of the study's trials."""
    from optuna.trial import TrialState

    done: set[int] = set()
    running: set[int] = set()
    failed: list[int] = []
    # study._storage with deepcopy=False: one read of every trial per ask, without
    # the copies Study.get_trials makes (the grid is re-counted before each ask).
    for t in study._storage.get_all_trials(study._study_id, deepcopy=False):
        gid = t.system_attrs.get("grid_id")
        # _same_search_space: Optuna's own test of whether a trial belongs to this grid.
        if gid is None or not sampler._same_search_space(t.system_attrs["search_space"]):
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            done.add(gid)
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            running.add(gid)
        elif t.state == TrialState.FAIL:
            if t.system_attrs.get(RETRY_ATTR):
                failed.append(gid)
            else:
                done.add(gid)  # failed for a reason a re-run would repeat
    return done, running, failed


def _next_grid_id(sampler: Any, study: optuna.Study) -> int:
    """A point to run next: a failed point marked for retry first, else a random free one."""
    done, running, failed = _ids_by_state(sampler, study)
    busy = done | running
    retry = [g for g in failed if g not in busy]
    if retry:
        return retry[0]
    free = [g for g in range(grid_size(sampler)) if g not in busy]
    if not free:
        raise RuntimeError("grid exhausted: ask() called after is_exhausted()")
    # _rng: the sampler's seeded generator, so every driver with the same seed draws alike.
    return int(sampler._rng.rng.choice(free))


def grid_sampler_class() -> type[optuna.samplers.GridSampler]:
    """``HpsearchGridSampler``, a GridSampler subclass (built on first call, then cached)."""
    global _GRID_CLASS
    if _GRID_CLASS is None:
        _GRID_CLASS = _build_class()
    return _GRID_CLASS


def _build_class() -> type[optuna.samplers.GridSampler]:
    import optuna

    class HpsearchGridSampler(optuna.samplers.GridSampler):
        """Optuna's GridSampler with retries, resume and no ``study.stop()`` (see the module)."""

        def __init__(self, search_space: Any, seed: int | None = None) -> None:
            super().__init__(search_space, seed=seed)
            conditions = getattr(search_space, "conditions", None)
            if conditions is not None:  # conditional params: only the points their conditions allow
                # _all_grids (shuffled by the seed) and _param_names: Optuna's points and their layout.
                names = self._param_names
                self._all_grids = [g for g in self._all_grids if conditions.valid(dict(zip(names, g, strict=True)))]
                self._n_min_trials = len(self._all_grids)

        def remaining(self, study: optuna.Study) -> int:
            """Grid points not yet COMPLETE or PRUNED (running ones included)."""
            done, _, _ = _ids_by_state(self, study)
            return grid_size(self) - len(done)

        def is_exhausted(self, study: optuna.Study) -> bool:
            """True when every point is done or running."""
            done, running, _ = _ids_by_state(self, study)
            return len(done | running) >= grid_size(self)

        def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if "grid_id" in trial.system_attrs or "fixed_params" in trial.system_attrs:
                return
            grid_id = _next_grid_id(self, study)
            # The same two system attributes Optuna's GridSampler.before_trial writes
            # (search_space, grid_id), written through the storage as it does.
            study._storage.set_trial_system_attr(trial._trial_id, "search_space", self._search_space)
            study._storage.set_trial_system_attr(trial._trial_id, "grid_id", grid_id)

        def after_trial(self, *args: Any, **kwargs: Any) -> None:
            # No study.stop(): the manager checks is_exhausted() before each ask.
            return None

    return HpsearchGridSampler
