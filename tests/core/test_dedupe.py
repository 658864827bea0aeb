"""``sampler.dedupe``: no point of a finite space runs twice; queued retries still do (issue 14)."""

from __future__ import annotations

import logging
import os

import optuna
import pytest
from optuna.trial import TrialState

import hpsearch
from hpsearch.study._manager import DRIVER_ATTR
from tests.conftest import run_cli

OBJ = """
def f(params):
    return {"a": 1, "b": 2, "c": 3}[params["a"]] * 10 + (0 if params["b"] == "x" else 1)

def g(params):
    return (params["x"] - 0.5) ** 2
"""


def _study(sampler: str, *, dedupe: bool | None = None, n_trials: int = 20, space: str = "") -> str:
    opts = "" if dedupe is None else f", dedupe: {str(dedupe).lower()}"
    if sampler == "tpe":  # past its random start-up, so the model's proposals are deduped too
        opts += ", options: {n_startup_trials: 2}"
    space = space or "  a: {choices: [a, b, c]}\n  b: {choices: [x, y]}\n"
    return (
        "name: d\nobjective: {metric: value, direction: minimize}\n"
        f"sampler: {{name: {sampler}, seed: 0{opts}}}\n"
        f"n_trials: {n_trials}\nexecutor: local\nsearch_space:\n{space}"
        'trainer: {kind: python, function: "obj.py:f"}\n'
    )


def _points(result: hpsearch.StudyResult) -> list[tuple]:
    return [tuple(t.params.values()) for t in result.study.get_trials(deepcopy=False)]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_six_point_space_runs_six_distinct_points_then_says_exhausted(write_study, sampler, caplog):
    path = write_study(_study(sampler), **{"obj.py": OBJ})
    with caplog.at_level(logging.WARNING, logger="hpsearch.study"):
        result = hpsearch.run_study(str(path))
    points = _points(result)
    assert len(points) == 6 and len(set(points)) == 6
    assert result.counts() == {"COMPLETE": 6}
    assert "d: search space exhausted after 6 distinct points" in caplog.text
    trials = result.study.get_trials(deepcopy=False)
    assert all(t.system_attrs["hpsearch:dedupe"] is True for t in trials)
    assert all(isinstance(t.system_attrs["hpsearch:redraws"], int) for t in trials)


def test_the_cli_ends_normally_and_a_rerun_after_exhaustion_adds_nothing(write_study, tmp_path):
    path = write_study(_study("random"), **{"obj.py": OBJ})
    first = run_cli("run", path, "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "search space exhausted after 6 distinct points" in first.stdout + first.stderr
    again = run_cli("run", path, "--quiet", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "search space exhausted after 6 distinct points" in again.stdout + again.stderr
    study = optuna.load_study(study_name="d", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    assert len(study.trials) == 6


def test_dedupe_false_runs_repeats(write_study):
    path = write_study(_study("random", dedupe=False), **{"obj.py": OBJ})
    result = hpsearch.run_study(str(path))
    points = _points(result)
    assert len(points) == 20 and len(set(points)) < len(points)
    assert not any("hpsearch:dedupe" in t.system_attrs for t in result.study.get_trials(deepcopy=False))


def test_a_continuous_space_is_unaffected(write_study):
    space = "  x: {type: float, low: 0, high: 1}\n"
    path = write_study(_study("random", n_trials=8, space=space).replace("obj.py:f", "obj.py:g"), **{"obj.py": OBJ})
    result = hpsearch.run_study(str(path))
    assert result.counts() == {"COMPLETE": 8}
    assert not any("hpsearch:dedupe" in t.system_attrs for t in result.study.get_trials(deepcopy=False))


def test_a_float_step_and_int_space_is_finite_and_runs_each_point_once(write_study):
    space = "  a: {type: float, low: 0.1, high: 0.3, step: 0.1}\n  b: {type: int, low: 1, high: 2}\n"
    text = _study("tpe", space=space).replace("obj.py:f", "obj.py:h")
    path = write_study(text, **{"obj.py": OBJ + "\ndef h(params):\n    return params['a'] * params['b']\n"})
    result = hpsearch.run_study(str(path))
    points = {(round(t.params["a"], 6), t.params["b"]) for t in result.study.get_trials(deepcopy=False)}
    assert len(points) == 6 and result.counts() == {"COMPLETE": 6}


def test_queued_retries_of_seen_points_still_run(write_study, tmp_path):
    """A worker-died retry and an orphan re-run come with fixed params: never deduped, even once exhausted."""
    path = write_study(_study("random"), **{"obj.py": OBJ})
    storage = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    hpsearch.run_study(str(path), n_trials=3)
    study = optuna.load_study(study_name="d", storage=storage)
    done = study.trials[0].params
    # A trial left RUNNING on a seen point by a driver that died: recovered as an orphan and re-run.
    study.enqueue_trial(study.trials[1].params)
    orphan = study.ask({k: study.trials[0].distributions[k] for k in done})
    study._storage.set_trial_system_attr(orphan._trial_id, DRIVER_ATTR, f"{os.uname().nodename}:999999999:1")
    orphan_params = orphan.params
    # A queued retry of a point that already completed (as requeue() writes it).
    study.enqueue_trial(done, user_attrs={"hpsearch.retry_of": 0, "hpsearch.attempt": 2})
    result = hpsearch.run_study(str(path))
    trials = result.study.get_trials(deepcopy=False)
    assert result.orphans_recovered == 1
    assert trials[orphan.number].state == TrialState.FAIL
    assert [t.params for t in trials if t.user_attrs.get("hpsearch.retry_of") == 0] == [done]
    reruns = [t for t in trials if t.user_attrs.get("hpsearch.retry_of") == orphan.number]
    assert [t.params for t in reruns] == [orphan_params] and reruns[0].state == TrialState.COMPLETE
    complete = [tuple(t.params.values()) for t in trials if t.state == TrialState.COMPLETE]
    assert len(set(complete)) == 6  # every point, and only the queued ones twice
    assert orphan_params == study.trials[1].params and len(complete) == 6 + 2


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # PartialFixedSampler
def test_a_sampler_that_keeps_proposing_seen_points_gets_an_unseen_one_and_no_extra_rows(tmp_path):
    """After MAX_REDRAWS seen proposals, a random unseen point; rejected draws leave no trial behind."""
    from hpsearch.search import FiniteSpace
    from hpsearch.study._scheduling import MAX_REDRAWS, Dedupe

    dists = {
        "a": optuna.distributions.CategoricalDistribution(["a", "b", "c"]),
        "b": optuna.distributions.CategoricalDistribution(["x", "y"]),
    }
    stuck = optuna.samplers.PartialFixedSampler({"a": "a", "b": "x"}, optuna.samplers.RandomSampler(seed=0))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'd.db'}", sampler=stuck)
    space = FiniteSpace.of(dists)
    assert space is not None and space.size == 6
    dedupe = Dedupe(space, 0, "d")
    while not dedupe.exhausted(study):
        trial = dedupe.ask(study)
        study.tell(trial, 1.0)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({tuple(t.params.values()) for t in trials}) == 6
    assert trials[0].params == {"a": "a", "b": "x"} and trials[0].system_attrs["hpsearch:redraws"] == 0
    assert all(t.system_attrs["hpsearch:redraws"] == MAX_REDRAWS for t in trials[1:])
    assert all(t.system_attrs.get("hpsearch:dedupe_fallback") for t in trials[1:])


def test_finite_space_counts_steps_and_refuses_a_continuous_range():
    from hpsearch.search import FiniteSpace

    dists = {
        "lr": optuna.distributions.FloatDistribution(0.1, 0.4, step=0.1),
        "n": optuna.distributions.IntDistribution(8, 32, step=8),
        "k": optuna.distributions.IntDistribution(1, 4, log=True),
    }
    space = FiniteSpace.of(dists)
    assert space is not None and space.size == 4 * 4 * 4
    assert space.key({"lr": 0.30000000000000004, "n": 24, "k": 4}) == (2, 2, 3)
    assert space.params((2, 2, 3)) == {"lr": 0.3, "n": 24, "k": 4}
    assert space.key({"lr": 0.25, "n": 24, "k": 4}) is None  # off the step grid
    assert FiniteSpace.of({**dists, "x": optuna.distributions.FloatDistribution(0, 1)}) is None


def test_dedupe_defaults_per_sampler_and_a_bad_value_names_the_field(write_study):
    for sampler, want in [("random", True), ("tpe", True), ("grid", False), ("cmaes", False)]:
        path = write_study(_study(sampler).replace(", options: {n_startup_trials: 2}", ""), **{"obj.py": OBJ})
        assert hpsearch.load_config(path).sampler.dedupe is want
    path = write_study(_study("gp", dedupe=True), **{"obj.py": OBJ})
    assert hpsearch.load_config(path).sampler.dedupe is True
    path = write_study(_study("random").replace("seed: 0", "seed: 0, dedupe: maybe"), **{"obj.py": OBJ})
    with pytest.raises(hpsearch.ConfigError, match=r"study\.yaml: sampler\.dedupe"):
        hpsearch.load_config(path)
