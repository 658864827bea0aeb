"""sklearn_search resumes: a re-run loads the fits an earlier run finished and fits only the others.

"Equal" is ``==`` (NaN equal to NaN) on everything but wall times: ``cv_results_``
(every column but ``*_time``), ``best_params_``, ``best_index_``, ``best_score_`` and
the records the manager stores as trials, against an uninterrupted run without a cache.
Fits are counted by :class:`CountingTree` (in this process) and by the trainer's
``sklearn.cached_fits`` / ``sklearn.new_fits`` study attributes.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from sklearn.tree import DecisionTreeClassifier

from hpsearch.trainers._base import RECORDS_ATTR, RecordingChannel, TrialContext, TrialResources
from hpsearch.trainers.sklearn import SklearnSearchSettings, SklearnSearchTrainer
from tests.conftest import run_cli


class Interrupted(BaseException):
    """Stands for a kill: not an Exception, so scikit-learn's error_score does not catch it."""


class CountingTree(DecisionTreeClassifier):
    """A DecisionTreeClassifier that counts its fits and, with ``stop_after``, stops the search."""

    fits = 0
    stop_after: int | None = None

    def fit(self, X, y, sample_weight=None, check_input=True):
        if CountingTree.stop_after is not None and CountingTree.fits >= CountingTree.stop_after:
            raise Interrupted
        CountingTree.fits += 1
        return super().fit(X, y, sample_weight=sample_weight, check_input=check_input)


TREE = f"{CountingTree.__module__}.CountingTree"
#: 9 candidates x 3 folds; min_samples_split=1.5 fails at fit time (error_score=nan).
GRID = {"max_depth": [3, 10, None], "min_samples_split": [2, 10, 1.5]}
CONFIGS = {
    "grid": {"param_grid": GRID, "return_train_score": True},
    "randomized": {
        "strategy": "randomized_search_cv",
        "n_iter": 6,
        "seed": 3,
        # A float range: no candidate twice (a repeated candidate's fits would come from the cache).
        "param_distributions": {
            "max_depth": {"type": "int", "low": 2, "high": 12},
            "min_samples_leaf": {"type": "float", "low": 0.001, "high": 0.05},
        },
    },
    "halving": {
        "strategy": "halving_grid_search_cv",
        "param_grid": {"max_depth": [3, 10, None], "min_samples_split": [2, 10, 30]},
    },
}


@pytest.fixture(autouse=True)
def _reset_counter():
    CountingTree.fits, CountingTree.stop_after = 0, None
    yield
    CountingTree.fits, CountingTree.stop_after = 0, None


class Run:
    """One run of the trainer: its fitted search, user attrs (records, study attrs) and CountingTree fits."""

    def __init__(self, tmp_path: Path, cache: Path | None, *, cpus: float = 1.0, **settings: Any) -> None:
        base = {"estimator": TREE, "estimator_params": {"random_state": 0}, "dataset": "digits", "cv": 3}
        trainer = SklearnSearchTrainer(
            SklearnSearchSettings(**(base | settings)), study_dir=tmp_path, objective="accuracy"
        )
        fit_search = trainer.fit_search
        found: list[Any] = []

        def spy(ctx: TrialContext) -> Any:  # keep the search object run() builds its records from
            out = fit_search(ctx)
            found.append(out[0])
            return out

        trainer.fit_search = spy  # type: ignore[method-assign]
        ctx = TrialContext(
            trial_number=0,
            params={},
            resources=TrialResources(cpus=cpus),
            channel=RecordingChannel(),
            objective="accuracy",
            work_dir=tmp_path / "work",
            cache_dir=cache,
        )
        before = CountingTree.fits
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FitFailedWarning of the failing candidate
            trainer.run({}, ctx)
        self.fits = CountingTree.fits - before
        self.search = found[0]
        self.attrs = ctx.user_attrs

    @property
    def n_fits(self) -> int:
        """Fits a search makes: candidates x folds, plus the refit."""
        return len(self.search.cv_results_["params"]) * self.search.n_splits_ + 1


def _nan_free(value: Any) -> Any:
    """``value`` with every NaN replaced by a marker, so that ``==`` compares NaN as equal."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {k: _nan_free(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_free(v) for v in value]
    return value


def _untimed(record: dict[str, Any]) -> dict[str, Any]:
    attrs = {k: v for k, v in record["user_attrs"].items() if not k.endswith("_time")}
    return _nan_free({**{k: v for k, v in record.items() if k != "duration_s"}, "user_attrs": attrs})


def assert_same(run: Run, ref: Run) -> None:
    a, b = run.search.cv_results_, ref.search.cv_results_
    assert a.keys() == b.keys()
    for col in a:
        if col.endswith("_time"):
            continue
        if col == "params":
            assert a[col] == b[col]
        else:
            np.testing.assert_array_equal(a[col], b[col], err_msg=col, strict=True)
    assert run.search.best_params_ == ref.search.best_params_
    assert run.search.best_index_ == ref.search.best_index_
    assert run.search.best_score_ == ref.search.best_score_
    records = [_untimed(r) for r in run.attrs[RECORDS_ATTR]]
    assert records == [_untimed(r) for r in ref.attrs[RECORDS_ATTR]]
    for key in ("sklearn.best_params", "sklearn.best_score", "sklearn.best_index", "sklearn.fit_failures"):
        assert run.attrs[key] == ref.attrs[key], key
    # The refit estimator (the study artifact) is the reference's, a plain estimator of the class.
    best, ref_best = run.search.best_estimator_, ref.search.best_estimator_
    assert type(best) is type(ref_best) is CountingTree
    digits = ref.search.n_features_in_
    X = np.arange(5 * digits, dtype=float).reshape(5, digits) % 17
    assert (best.predict(X) == ref_best.predict(X)).all()


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "sklearn_search").glob("*.joblib"))


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_second_run_fits_nothing_new(kind, tmp_path):
    settings = CONFIGS[kind]
    ref = Run(tmp_path, None, **settings)
    assert ref.fits == ref.n_fits and "sklearn.cached_fits" not in ref.attrs  # no cache: as before
    cache = tmp_path / "cache"
    first = Run(tmp_path, cache, **settings)
    failed = 9 if kind == "grid" else 0  # the 3 candidates with min_samples_split=1.5, on 3 folds
    assert first.fits == first.n_fits == ref.n_fits
    assert (first.attrs["sklearn.cached_fits"], first.attrs["sklearn.new_fits"]) == (0, ref.n_fits)
    assert len(_entries(cache)) == ref.n_fits - failed  # failed fits are not cached
    assert_same(first, ref)

    second = Run(tmp_path, cache, **settings)
    assert second.fits == failed  # only the failed fits run again
    assert (second.attrs["sklearn.cached_fits"], second.attrs["sklearn.new_fits"]) == (ref.n_fits - failed, failed)
    assert_same(second, ref)


def test_interrupted_search_fits_only_what_it_had_not_finished(tmp_path):
    ref = Run(tmp_path, None, **CONFIGS["grid"])
    cache = tmp_path / "cache"
    CountingTree.stop_after = CountingTree.fits + 11
    with pytest.raises(Interrupted):
        Run(tmp_path, cache, **CONFIGS["grid"])
    CountingTree.stop_after = None
    kept = _entries(cache)
    assert len(kept) == 11 - 3  # 2 candidates, then (3, 1.5) fails on 3 folds (no entry), then 2 fits
    # A kill during a write leaves a temporary file (never read); a torn entry is refitted.
    folder = cache / "sklearn_search"
    (folder / f".{kept[0].stem}.x.tmp").write_bytes(b"half")
    kept[1].write_bytes(kept[1].read_bytes()[:100])
    # What a run killed hours ago left (a temporary file, its log) is removed; recent ones are left alone.
    old = [folder / f".{kept[2].stem}.y.tmp", folder / ".run-dead.log"]
    for path in old:
        path.write_text("left by a killed run")
        os.utime(path, (time.time() - 7200, time.time() - 7200))

    again = Run(tmp_path, cache, **CONFIGS["grid"])
    assert again.fits == ref.n_fits - len(kept) + 1
    assert again.attrs["sklearn.cached_fits"] == len(kept) - 1
    assert again.attrs["sklearn.new_fits"] == ref.n_fits - len(kept) + 1
    assert_same(again, ref)
    assert not any(path.exists() for path in old)
    assert (folder / f".{kept[0].stem}.x.tmp").exists()
    assert len(_entries(cache)) == ref.n_fits - 9  # every fit but the failed ones, the torn one rewritten


def test_pipeline_with_n_jobs_shares_the_cache(tmp_path):
    """Fits made in loky workers (n_jobs=2) are served to a one-process run, and the other way round."""
    settings = {
        "estimator": [
            {"name": "scale", "estimator": "sklearn.preprocessing.StandardScaler"},
            {"name": "tree", "estimator": "sklearn.tree.DecisionTreeClassifier", "params": {"random_state": 0}},
        ],
        "estimator_params": {},
        "param_grid": {"tree__max_depth": [3, 10], "scale__with_mean": [True, False]},
    }
    ref = Run(tmp_path, None, **settings)
    cache = tmp_path / "cache"
    workers = Run(tmp_path, cache, cpus=2, **settings)
    assert (workers.attrs["sklearn.cached_fits"], workers.attrs["sklearn.new_fits"]) == (0, ref.n_fits)
    local = Run(tmp_path, cache, **settings)
    assert (local.attrs["sklearn.cached_fits"], local.attrs["sklearn.new_fits"]) == (ref.n_fits, 0)
    for run in (workers, local):
        a, b = run.search.cv_results_, ref.search.cv_results_
        for col in (c for c in a if not c.endswith("_time") and c != "params"):
            np.testing.assert_array_equal(a[col], b[col], err_msg=col, strict=True)
        assert run.search.best_params_ == ref.search.best_params_
        assert type(run.search.best_estimator_) is type(ref.search.best_estimator_)


@pytest.mark.parametrize(
    ("change", "refit_hits"),
    [
        ({"max_examples": 900}, False),  # other data
        ({"estimator_params": {"random_state": 1}}, False),
        ({"scoring": ["accuracy", "f1_macro"]}, False),
        # Other folds: every fold's fit is new, but the refit on all the data is the same fit.
        ({"cv": 4}, True),
        ({"data_seed": 1}, True),
    ],
)
def test_changed_data_or_settings_never_hit_and_old_entries_go(change, refit_hits, tmp_path):
    grid = {"param_grid": {"max_depth": [3, None]}}
    cache = tmp_path / "cache"
    first = Run(tmp_path, cache, **grid)
    assert first.attrs["sklearn.cached_fits"] == 0
    run = Run(tmp_path, cache, **grid, **change)
    assert run.attrs["sklearn.cached_fits"] == int(refit_hits)
    assert run.fits == run.n_fits - int(refit_hits)
    # A finished search keeps only its own fits: the other settings' entries were removed.
    assert len(_entries(cache)) == run.n_fits
    assert Run(tmp_path, cache, **grid, **change).fits == 0


def test_cache_fits_false_stores_nothing(tmp_path):
    run = Run(tmp_path, tmp_path / "cache", cache_fits=False, param_grid={"max_depth": [3]})
    assert run.fits == run.n_fits and "sklearn.cached_fits" not in run.attrs
    assert not _entries(tmp_path / "cache")


# ------------------------------------------------------------------ a real kill -9

HELD_TREE = """
import os, time
from sklearn.tree import DecisionTreeClassifier

FITS = 0

class HeldTree(DecisionTreeClassifier):
    # With HOLD_AFTER=N in the environment, the fit after the N-th waits (to be killed there).
    def fit(self, X, y, sample_weight=None, check_input=True):
        global FITS
        hold = int(os.environ.get("HOLD_AFTER", "0"))
        if hold and FITS >= hold:
            time.sleep(300)
        FITS += 1
        return super().fit(X, y, sample_weight=sample_weight, check_input=check_input)
"""

KILL_STUDY = """
name: resume-kill
objective: {metric: accuracy, direction: maximize}
executor: local
trainer:
  kind: sklearn_search
  strategy: grid_search_cv
  estimator: heldtree.HeldTree
  estimator_params: {random_state: 0}
  dataset: digits
  cv: 3
  param_grid:
    max_depth: [2, 4, 8, null]
    min_samples_split: [2, 8, 32]
"""
#: 12 candidates x 3 folds + the refit.
KILL_FITS = 37
#: The killed run is killed while its fit after this many waits.
HELD = 10


def _study_dir(root: Path) -> Path:
    root.mkdir()
    (root / "heldtree.py").write_text(textwrap.dedent(HELD_TREE))
    (root / "study.yaml").write_text(textwrap.dedent(KILL_STUDY))
    return root


def _cli(root: Path) -> list[str]:
    return [sys.executable, "-m", "hpsearch", "run", str(root / "study.yaml"), "--executor", "local", "-q"]


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}


def _kill_after_some_fits(root: Path, cache: Path) -> int:
    """Start the study, kill -9 its process group while its 11th fit waits; the fits cached then."""
    proc = subprocess.Popen(
        _cli(root),
        cwd=root,
        env=_env(root) | {"HOLD_AFTER": str(HELD)},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and len(_entries(cache)) < HELD and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (
        f"the run ended (rc {proc.returncode}) before {HELD} fits were cached under {cache}: "
        f"is TrialContext.cache_dir wired in the executor? {err.decode()[-1500:]}"
    )
    return len(_entries(cache))


def _trials(root: Path) -> tuple[list[Any], dict[str, Any]]:
    study = optuna.load_study(study_name="resume-kill", storage=f"sqlite:///{root / 'hpsearch.db'}")
    trials = [
        _nan_free(
            {
                "number": t.number,
                "state": t.state.name,
                "params": t.params,
                "value": t.value,
                "distributions": {k: repr(d) for k, d in t.distributions.items()},
                # placement: where the job ran (host, pid, run_s), as for any trial.
                "user_attrs": {k: v for k, v in t.user_attrs.items() if not k.endswith("_time") and k != "placement"},
            }
        )
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    ]
    return trials, study.user_attrs


# Needs TrialContext.cache_dir wired by the executors (the lead's part of issue 13):
# the cache is <dir of hpsearch.db>/hpsearch-checkpoints/<study name>/cache/sklearn_search.
def test_kill_9_then_rerun_equals_an_uninterrupted_run(tmp_path):
    killed = _study_dir(tmp_path / "killed")
    cache = killed / "hpsearch-checkpoints" / "resume-kill" / "cache"
    cached = _kill_after_some_fits(killed, cache)
    assert cached == HELD
    done = run_cli("run", killed / "study.yaml", "--executor", "local", "-q", cwd=killed, env=_env(killed))
    assert done.returncode == 0, done.stderr[-2000:]

    whole = _study_dir(tmp_path / "whole")
    done = run_cli("run", whole / "study.yaml", "--executor", "local", "-q", cwd=whole, env=_env(whole))
    assert done.returncode == 0, done.stderr[-2000:]

    trials, attrs = _trials(killed)
    ref_trials, ref_attrs = _trials(whole)
    assert len(trials) == 12
    for trial, ref_trial in zip(trials, ref_trials, strict=True):
        assert trial == ref_trial
    for key in ("sklearn.best_params", "sklearn.best_score", "sklearn.best_index"):
        assert attrs[key] == ref_attrs[key], key
    assert (attrs["sklearn.cached_fits"], attrs["sklearn.new_fits"]) == (cached, KILL_FITS - cached)
    assert (ref_attrs["sklearn.cached_fits"], ref_attrs["sklearn.new_fits"]) == (0, KILL_FITS)
