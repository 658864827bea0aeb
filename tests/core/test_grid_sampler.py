"""The resume-safe grid sampler (hpsearch.search._grid) on a real SQLite study, through its public names."""

import optuna
from optuna.trial import TrialState

from hpsearch.search import RETRY_ATTR, grid_sampler_class, grid_size

A_DIST = {"a": optuna.distributions.CategoricalDistribution([1, 2, 3])}


def _study(tmp_path, sampler):
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 'g.db'}", sampler=sampler, study_name="g")


def test_grid_size_counts_every_point_of_ours_and_optunas():
    space = {"a": [1, 2, 3], "b": ["x", "y"]}
    assert grid_size(grid_sampler_class()(space, seed=0)) == 6
    assert grid_size(optuna.samplers.GridSampler(space, seed=0)) == 6


def test_marked_failure_runs_again_first_unmarked_one_counts_as_done(tmp_path):
    sampler = grid_sampler_class()({"a": [1, 2, 3]}, seed=0)
    study = _study(tmp_path, sampler)
    first = study.ask(A_DIST)
    # What the manager does for an orphaned trial or a dead worker, before it fails the trial.
    study._storage.set_trial_system_attr(first._trial_id, RETRY_ATTR, True)
    study.tell(first, state=TrialState.FAIL)
    again = study.ask(A_DIST)
    assert again.params == first.params and len(first.params) == 1
    study.tell(again, 1.0)
    other = study.ask(A_DIST)
    assert other.params != first.params
    study.tell(other, state=TrialState.FAIL)  # no retry mark: a re-run would fail the same way
    last = study.ask(A_DIST)
    assert {first.params["a"], other.params["a"], last.params["a"]} == {1, 2, 3}
    assert sampler.is_exhausted(study) and sampler.remaining(study) == 1  # the running point is not done
    study.tell(last, 2.0)
    assert sampler.is_exhausted(study) and sampler.remaining(study) == 0
