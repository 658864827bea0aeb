"""Warm start (issue 14): ``enqueue`` points run first, an earlier study's trials seed a new one.

The earlier study ("src") runs a known set of points (its own ``enqueue``), so which of its
trials are the best and which fall outside the new study's space is known exactly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import hpsearch
from hpsearch.study import StudyManager
from hpsearch.study._scheduling import WARM_START_ATTR
from tests.conftest import OBJECTIVES, run_cli
from tests.gate import wait_until

HELD = """
import time
from pathlib import Path

HERE = Path(__file__).parent


def held(params, ctx):
    # The third trial of this run waits for "release" (the test kills the driver meanwhile).
    calls = len(list(HERE.glob("call-*")))
    (HERE / f"call-{ctx.trial_number}").write_text("")
    if calls == 2 and not (HERE / "release").exists():
        (HERE / "held").write_text("")
        while not (HERE / "release").exists():
            time.sleep(0.02)
    return (params["x"] - 2) ** 2
"""

#: The earlier study's points and their values (x - 2) ** 2: best first 1.9, 2.2, 3.0, -1.0, 8.0, -6.0.
SRC_POINTS = [-6.0, -1.0, 1.9, 2.2, 3.0, 8.0]


def _study(name: str, *, n_trials: int, extra: str = "", low: float = -10, fn: str = "quadratic") -> str:
    return textwrap.dedent(f"""\
        name: {name}
        objective: {{metric: value, direction: minimize}}
        sampler: {{name: random, seed: 0}}
        n_trials: {n_trials}
        max_concurrent_trials: 1
        executor: local
        trainer: {{kind: python, function: "obj.py:{fn}"}}
        search_space:
          x: {{type: float, low: {low}, high: 10}}
        """) + textwrap.dedent(extra)


def _run(path: Path) -> hpsearch.StudyResult:
    return StudyManager(hpsearch.load_config(path), progress=False).run()


def _trials(folder: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'hpsearch.db'}").trials


def _src(folder: Path) -> None:
    """The earlier study: exactly SRC_POINTS, in order."""
    (folder / "obj.py").write_text(OBJECTIVES + HELD)
    points = ", ".join(f"{{x: {x}}}" for x in SRC_POINTS)
    path = folder / "src.yaml"
    path.write_text(_study("src", n_trials=len(SRC_POINTS), extra=f"enqueue: [{points}]\n"))
    _run(path)


def _split(
    trials: list[optuna.trial.FrozenTrial],
) -> tuple[list[optuna.trial.FrozenTrial], list[optuna.trial.FrozenTrial]]:
    """(warm-start copies, the study's own trials)."""
    warm = [t for t in trials if WARM_START_ATTR in t.user_attrs]
    return warm, [t for t in trials if WARM_START_ATTR not in t.user_attrs]


def test_enqueued_points_run_first_in_order_and_are_not_enqueued_again_on_a_rerun(tmp_path):
    (tmp_path / "obj.py").write_text(OBJECTIVES)
    path = tmp_path / "study.yaml"
    # A point listed twice runs twice.
    path.write_text(_study("s", n_trials=4, extra="enqueue: [{x: 1.5}, {x: -3}, {x: 1.5}]\n"))
    _run(path)
    trials = _trials(tmp_path, "s")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert [t.params["x"] for t in trials[:3]] == [1.5, -3.0, 1.5]
    assert trials[3].params["x"] not in (1.5, -3.0)  # then the sampler
    _run(path)  # the same command again: the study is done, and nothing is queued again
    again = _trials(tmp_path, "s")
    assert len(again) == 4 and not [t for t in again if t.state == TrialState.WAITING]
    path.write_text(_study("s", n_trials=5, extra="enqueue: [{x: 1.5}, {x: -3}, {x: 1.5}, {x: 7}]\n"))
    _run(path)  # a point added later is queued (once); the others are not
    xs = [t.params["x"] for t in _trials(tmp_path, "s")]
    assert len(xs) == 5 and xs[4] == 7.0 and xs.count(1.5) == 2


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ("[{x: 1, c: a}, {x: 2, c: b, y: 3}]", "enqueue[1].y: not a search_space param; use only x, c"),
        ("[{x: 11, c: a}]", "enqueue[0].x: 11 is outside [-10.0, 10.0]; give a value in that range"),
        ("[{x: 1}]", "enqueue[0].c: missing; give every search_space param a value"),
        ("[{x: 1, c: z}]", "enqueue[0].c: 'z' is not one of the choices ['a', 'b']; use one of them"),
        ("[{x: yes, c: a}]", "enqueue[0].x: expected a number, got True"),
    ],
)
def test_a_bad_enqueue_point_is_refused_with_one_line_and_nothing_written(tmp_path, points, expected):
    (tmp_path / "obj.py").write_text(OBJECTIVES)
    path = tmp_path / "study.yaml"
    path.write_text(_study("s", n_trials=2, extra=f"  c: [a, b]\nenqueue: {points}\n"))
    with pytest.raises(hpsearch.ConfigError) as err:
        _run(path)
    assert str(err.value) == f"{path}: {expected}"
    assert not (tmp_path / "hpsearch.db").exists()


def test_the_cli_refuses_a_bad_enqueue_point_with_exit_2_and_writes_nothing(tmp_path):
    (tmp_path / "obj.py").write_text(OBJECTIVES)
    (tmp_path / "study.yaml").write_text(_study("s", n_trials=2, extra="enqueue: [{x: 1}, {lr: 0.1}]\n"))
    proc = run_cli("run", "study.yaml", "-q", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: study.yaml: enqueue[1].lr: not a search_space param; use only x"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obj.py", "study.yaml"]


def test_warm_start_copies_the_top_trials_once_and_runs_n_trials_of_its_own(tmp_path):
    _src(tmp_path)
    # x in [0, 10]: of src's 4 best (1.9, 2.2, 3.0, -1.0) the last is outside and skipped.
    path = tmp_path / "dst.yaml"
    path.write_text(_study("dst", n_trials=3, low=0, extra="warm_start: {from: src.yaml, top: 4}\n"))
    proc = run_cli("run", "dst.yaml", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("skipped 1 whose params fall outside") == 1, proc.stderr
    warm, own = _split(_trials(tmp_path, "dst"))
    src = {t.number: t for t in _trials(tmp_path, "src")}
    assert [t.user_attrs[WARM_START_ATTR] for t in warm] == ["src#2", "src#3", "src#4"]
    assert [(t.params, t.value) for t in warm] == [(src[n].params, src[n].value) for n in (2, 3, 4)]
    assert [t.number for t in warm] == [0, 1, 2]  # history before the first ask
    assert len(own) == 3 and all(t.state == TrialState.COMPLETE for t in own)
    study = optuna.load_study(study_name="dst", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    record = study.user_attrs["warm_start"]
    assert (record["from"], record["top"], record["copied"], record["skipped"]) == ("src.yaml", 4, 3, 1)
    # `hpsearch best` is this study's own best, though src's 1.9 (0.01) may beat it.
    best = hpsearch.load_result(path).best_trial
    assert WARM_START_ATTR not in best.user_attrs and best.value == min(t.value for t in own)
    # The same command again: nothing copied, nothing printed, no trial run.
    proc = run_cli("run", "dst.yaml", "-q", cwd=tmp_path)
    assert proc.returncode == 0 and "warm_start" not in proc.stderr, proc.stderr
    assert len(_trials(tmp_path, "dst")) == 6


def test_a_copy_cut_short_is_completed_by_the_rerun_without_duplicates(tmp_path):
    _src(tmp_path)
    path = tmp_path / "dst.yaml"
    path.write_text(_study("dst", n_trials=2, extra="warm_start: {study: src, top: 3}\n"))
    # As a driver killed half-way through copying leaves it: one copy, and no record of the copy.
    storage = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    study = optuna.create_study(study_name="dst", storage=storage, direction="minimize")
    first = next(t for t in _trials(tmp_path, "src") if t.number == 2)
    dist = optuna.distributions.FloatDistribution(-10, 10)
    study.add_trial(
        optuna.trial.create_trial(
            value=first.value, params=first.params, distributions={"x": dist}, user_attrs={WARM_START_ATTR: "src#2"}
        )
    )
    _run(path)
    warm, own = _split(_trials(tmp_path, "dst"))
    assert sorted(t.user_attrs[WARM_START_ATTR] for t in warm) == ["src#2", "src#3", "src#4"]
    assert len(own) == 2


def test_kill_9_of_a_warm_started_study_then_the_rerun_ends_with_n_trials_of_its_own(tmp_path):
    _src(tmp_path)
    path = tmp_path / "dst.yaml"
    path.write_text(_study("dst", n_trials=4, fn="held", extra="warm_start: {from: src.yaml}\n"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", "dst.yaml", "-q"],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    wait_until("the third trial held", (tmp_path / "held").exists, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    (tmp_path / "release").write_text("")
    done = run_cli("run", "dst.yaml", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    warm, own = _split(_trials(tmp_path, "dst"))
    assert sorted(t.user_attrs[WARM_START_ATTR] for t in warm) == [f"src#{n}" for n in range(6)]
    assert [t.state for t in own].count(TrialState.COMPLETE) == 4
    assert [t.user_attrs.get("fail_reason") for t in own if t.state == TrialState.FAIL] == ["orphaned"]


def test_a_changed_search_space_is_refused_with_how_to_fork_and_the_fork_works(tmp_path):
    _src(tmp_path)
    path = tmp_path / "src.yaml"
    path.write_text(_study("src", n_trials=6, low=0))
    with pytest.raises(hpsearch.ConfigError) as err:
        _run(path)
    assert "rename the study (name:) to start a new one, and add `warm_start: {study: src}`" in str(err.value)
    path.write_text(_study("src2", n_trials=2, low=0, extra="warm_start: {study: src}\n"))  # as the message says
    manager = StudyManager(hpsearch.load_config(path), progress=False)
    manager.run()
    warm, own = _split(_trials(tmp_path, "src2"))
    assert sorted(t.params["x"] for t in warm) == [1.9, 2.2, 3.0, 8.0]  # -6 and -1 are outside [0, 10]
    assert len(own) == 2
    # The run's counts and best (progress line, dashboard note) are its own trials'.
    status = manager.status()
    assert (status.done, status.total, status.best) == (2, 2, min(t.value for t in own))
