"""Several objectives and constraints (issue 14): the study file, the Pareto front everywhere, bad files.

Real SQLite studies on the local executor; the trainer is a plain Python function.
"""

from __future__ import annotations

import json
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
from tests.conftest import run_cli
from tests.gate import wait_until

OBJ = """
import time
from pathlib import Path

HERE = Path(__file__).parent


def two(params, ctx):
    x, y = params["x"], params.get("y", 0.5)
    for step in range(2):
        ctx.report(x * x + step, step)
    return {"f1": x * x + y, "f2": (x - 2) ** 2 + y, "cost": x + 5}


def held(params, ctx):
    # The third trial of a run waits for "release" (the test kills the driver meanwhile).
    calls = len(list(HERE.glob("call-*")))
    (HERE / f"call-{ctx.trial_number}").write_text("")
    if calls == 2 and not (HERE / "release").exists():
        (HERE / "held").write_text("")
        while not (HERE / "release").exists():
            time.sleep(0.02)
    return two(params, ctx)


def single(params, ctx):
    return {"value": (params["x"] - 2) ** 2, "x": params["x"]}
"""

TWO = "[{metric: f1, direction: minimize}, {metric: f2, direction: minimize}]"


def _study(
    name: str = "mo",
    *,
    objective: str = TWO,
    sampler: str = "nsga2",
    n_trials: int = 12,
    fn: str = "two",
    extra: str = "",
    space: str = "x: {type: float, low: -5, high: 5}\n  y: {type: float, low: 0, high: 1}",
) -> str:
    lines = [
        f"name: {name}",
        f"objective: {objective}",
        f"sampler: {{name: {sampler}, seed: 0}}",
        f"n_trials: {n_trials}",
        "max_concurrent_trials: 1",
        "executor: local",
        f'trainer: {{kind: python, function: "obj.py:{fn}"}}',
        "search_space:",
        *(f"  {line.strip()}" for line in space.splitlines()),
    ]
    return "\n".join(lines) + "\n" + extra


def _write(folder: Path, text: str, name: str = "s.yaml") -> Path:
    (folder / "obj.py").write_text(OBJ)
    path = folder / name
    path.write_text(text)
    return path


def _run(path: Path) -> hpsearch.StudyResult:
    return StudyManager(hpsearch.load_config(path), progress=False).run()


def _brute_front(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """The non-dominated feasible COMPLETE trials (both objectives minimised), computed here from scratch."""
    ok = [t for t in trials if t.state == TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())]
    front = set()
    for t in ok:
        beaten = any(
            all(a <= b for a, b in zip(o.values, t.values, strict=True))
            and any(a < b for a, b in zip(o.values, t.values, strict=True))
            for o in ok
        )
        if not beaten:
            front.add(t.number)
    return front


def test_a_two_objective_study_with_a_constraint_has_the_right_front_everywhere(tmp_path):
    path = _write(tmp_path, _study(extra="constraints: [{metric: cost, max: 8}]\n"))
    result = _run(path)
    trials = result.study.get_trials()
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 12
    # The constraint was told to Optuna: cost = x + 5 > 8 means x > 3.
    for t in trials:
        assert t.constraints == {"cost": pytest.approx(t.params["x"] + 5 - 8)}
    assert any(t.params["x"] > 3 for t in trials), "the seed must draw an infeasible point for this test"
    expected = _brute_front(trials)
    assert {t.number for t in result.best_trials} == expected
    assert {t.number for t in result.study.best_trials} == expected  # Optuna agrees
    assert all(t.params["x"] <= 3 for t in result.best_trials)
    # The dashboard reads the objectives' names, not "Objective 0".
    assert result.study.metric_names == ["f1", "f2"]
    # Reported curves are kept (the first objective's), though Optuna's report takes one objective.
    assert all(t.intermediate_values == {0: t.params["x"] ** 2, 1: t.params["x"] ** 2 + 1} for t in trials)

    best = run_cli("best", "s.yaml", "--json", cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    data = json.loads(best.stdout)
    assert data["objectives"] == [{"metric": "f1", "direction": "minimize"}, {"metric": "f2", "direction": "minimize"}]
    assert {r["number"] for r in data["pareto_front"]} == expected
    assert all(set(r["values"]) == {"f1", "f2"} for r in data["pareto_front"])

    text = run_cli("best", "s.yaml", cwd=tmp_path)
    assert text.stdout.splitlines()[0] == f"Pareto front: {len(expected)} trials of f1 (minimize), f2 (minimize)"

    shown = run_cli("show", "s.yaml", "-f", "json", "--limit", "0", cwd=tmp_path)
    rows = json.loads(shown.stdout)
    assert {r["number"] for r in rows if r["pareto"]} == expected
    assert {r["number"] for r in rows if r.get("feasible") is False} == {t.number for t in trials if t.params["x"] > 3}
    table = run_cli("show", "s.yaml", "--limit", "0", cwd=tmp_path).stdout
    assert "front" in table and "feasible" in table

    ran = run_cli("run", "s.yaml", cwd=tmp_path)  # budget met: nothing runs, the summary names the front
    assert f"Pareto front of {len(expected)} trials (f1, f2)" in ran.stdout


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid", "nsga3", "qmc", "gp"])
def test_every_multi_objective_sampler_runs_a_two_objective_study(tmp_path, sampler):
    space = "x: [-1.0, 0.0, 1.0, 2.0]" if sampler == "grid" else "x: {type: float, low: -5, high: 5}"
    path = _write(tmp_path, _study(sampler=sampler, n_trials=4, space=space))
    result = _run(path)
    done = [t for t in result.study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) == 4 and all(len(t.values) == 2 for t in done)
    assert {t.number for t in result.best_trials} == _brute_front(done)


def test_single_objective_best_is_never_an_infeasible_trial(tmp_path):
    # (x - 2)^2 is smallest at x = 2, but x must be >= 3: the best feasible trial is x = 3.
    path = _write(
        tmp_path,
        _study(
            objective="{metric: value, direction: minimize}",
            sampler="grid",
            n_trials=5,
            fn="single",
            space="x: [0.0, 1.0, 2.0, 3.0, 4.0]",
            extra="constraints: [{metric: x, min: 3}]\n",
        ),
    )
    result = _run(path)
    assert result.best_trial.params == {"x": 3.0}
    assert result.best_value == 1.0
    assert result.study.best_trial.params == {"x": 3.0}  # Optuna's own best skips it too
    best = json.loads(run_cli("best", "s.yaml", "--json", cwd=tmp_path).stdout)
    assert best["params"] == {"x": 3.0}
    rows = json.loads(run_cli("show", "s.yaml", "-f", "json", cwd=tmp_path).stdout)
    assert rows[0]["x"] == 3.0  # best first: feasible trials before infeasible ones
    assert {r["x"] for r in rows if r["feasible"] is False} == {0.0, 1.0, 2.0}


def test_result_best_trial_of_a_multi_objective_study_says_to_use_the_front(tmp_path):
    result = _run(_write(tmp_path, _study(n_trials=3)))
    with pytest.raises(hpsearch.StorageError, match="Pareto front, not one best trial; use best_trials"):
        _ = result.best_trial
    assert len(result.best_trials) >= 1


def test_report_draws_the_pareto_front(tmp_path):
    _run(_write(tmp_path, _study(n_trials=4)))
    out = tmp_path / "r.html"
    done = run_cli("report", "s.yaml", "-o", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert 'data-figure="pareto-front"' in html
    assert 'class="empty"' not in html  # every figure drawn (the first objective's where they take one)
    assert "cannot draw it" not in html


BAD = [
    ("pruner: {name: median}\n", "pruner.name: Optuna's pruners compare one objective, and this study has 2"),
    ("scheduler: {name: pbt, population: 2}\n", "scheduler.name: PBT ranks members by one objective"),
    ("constraints: [{metric: cost}]\n", "constraints[0]: give `max` or `min` (or both) for 'cost'"),
    ("constraints: [{metric: cost, min: 3, max: 1}]\n", "constraints[0]: min (3.0) must be <= max (1.0)"),
    ("constraints: [{metric: cost, max: 1}, {metric: cost, min: 0}]\n", "constraints: metric 'cost' has two"),
]


@pytest.mark.parametrize(("extra", "expected"), BAD)
def test_bad_multi_objective_files_are_refused_in_one_line_with_nothing_written(tmp_path, extra, expected):
    _write(tmp_path, _study(extra=extra))
    done = run_cli("run", "s.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "s.yaml" in done.stderr and expected in done.stderr, done.stderr
    assert not (tmp_path / "hpsearch.db").exists()


@pytest.mark.parametrize(
    ("objective", "sampler", "expected"),
    [
        (TWO, "cmaes", "sampler.name: 'cmaes' optimises one objective, and this study has 2; use one of: nsga2"),
        ("[]", "nsga2", "objective: is an empty list"),
        ("[{metric: f1}, {metric: f1, direction: minimize}]", "nsga2", "metric 'f1' is listed twice"),
    ],
)
def test_bad_objective_lists_are_refused(tmp_path, objective, sampler, expected):
    _write(tmp_path, _study(objective=objective, sampler=sampler))
    done = run_cli("run", "s.yaml", cwd=tmp_path)
    assert done.returncode == 2 and expected in done.stderr, done.stderr
    assert not (tmp_path / "hpsearch.db").exists()


def test_a_metric_the_trainer_never_returns_is_refused_up_front(tmp_path):
    (tmp_path / "s.yaml").write_text(
        textwrap.dedent("""\
        name: cv
        objective: [{metric: accuracy}, {metric: latency_ms, direction: minimize}]
        sampler: {name: nsga2}
        n_trials: 2
        executor: local
        search_space:
          max_depth: [2, 4]
        trainer: {kind: sklearn_cv, dataset: digits, estimator: sklearn.tree.DecisionTreeClassifier, cv: 3}
        """)
    )
    done = run_cli("run", "s.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "objective[1].metric: 'latency_ms' is not a metric trainer 'sklearn_cv' returns" in done.stderr
    assert not (tmp_path / "hpsearch.db").exists()


def test_a_trial_without_a_constraint_metric_fails_with_the_reason(tmp_path):
    path = _write(tmp_path, _study(n_trials=1, extra="constraints: [{metric: memory, max: 1}]\n"))
    with pytest.raises(hpsearch.StudyFailedError):
        StudyManager(hpsearch.load_config(path).model_copy(update={"max_failures": 1}), progress=False).run()
    (t,) = optuna.load_study(study_name="mo", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}").trials
    assert t.state == TrialState.FAIL
    assert t.user_attrs["fail_reason"].startswith("trainer returned no metric 'memory'")


def test_switching_a_stored_study_to_several_objectives_is_refused(tmp_path):
    _run(_write(tmp_path, _study(objective="{metric: f1, direction: minimize}", sampler="tpe", n_trials=1)))
    _write(tmp_path, _study(n_trials=2))
    done = run_cli("run", "s.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "objective: study 'mo' in storage was created with direction minimize; keep it or rename" in done.stderr


def test_warm_start_copies_both_values_and_refuses_another_objective(tmp_path):
    _run(_write(tmp_path, _study("src", n_trials=5), "src.yaml"))
    dst = _write(tmp_path, _study("dst", n_trials=2, extra="warm_start: {from: src.yaml, top: 3}\n"), "dst.yaml")
    result = _run(dst)
    copies = [t for t in result.study.get_trials() if "warm_start_from" in t.user_attrs]
    src = optuna.load_study(study_name="src", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    assert len(copies) == 3
    assert {tuple(t.values) for t in copies} <= {tuple(t.values) for t in src.trials}
    # The 3 copied are the least dominated: every trial of the source's front is among them when it fits.
    front = {tuple(t.values) for t in src.best_trials}
    assert len(front) > 3 or front <= {tuple(t.values) for t in copies}
    other = _write(
        tmp_path,
        _study(
            "dst2",
            objective="[{metric: f1, direction: minimize}, {metric: f2, direction: maximize}]",
            extra="warm_start: {from: src.yaml}\n",
        ),
        "dst2.yaml",
    )
    done = run_cli("run", other.name, cwd=tmp_path)
    assert done.returncode == 2
    assert "warm_start: study 'src' optimised f1 (minimize), f2 (minimize), this one f1 (minimize), f2 (maximize)" in (
        done.stderr
    )


def test_kill_9_of_a_multi_objective_study_then_the_rerun_completes_it(tmp_path):
    _write(tmp_path, _study(n_trials=4, fn="held", extra="constraints: [{metric: cost, max: 8}]\n"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", "s.yaml", "-q"],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ},
    )
    wait_until("the third trial held", (tmp_path / "held").exists, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    (tmp_path / "release").write_text("")
    done = run_cli("run", "s.yaml", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    trials = optuna.load_study(study_name="mo", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}").trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and all(len(t.values) == 2 and "cost" in t.constraints for t in complete)
    assert [t.user_attrs.get("fail_reason") for t in trials if t.state == TrialState.FAIL] == ["orphaned"]


def test_the_dashboard_serves_the_named_objectives_and_the_front(tmp_path):
    """The real optuna-dashboard over the study: its API names both objectives and marks the front."""
    from tests.dashboard.helpers import dashboard

    result = _run(_write(tmp_path, _study(n_trials=6)))
    front = {t.number for t in result.best_trials}
    with dashboard("s.yaml", cwd=tmp_path) as dash:
        sid = dash.study_id("mo")
        detail = dash.get_json(f"/api/studies/{sid}?after=0")
    assert detail["objective_names"] == ["f1", "f2"]  # type: ignore[index]
    assert [d for d in detail["directions"]] == ["minimize", "minimize"]  # type: ignore[index]
    assert {t["number"] for t in detail["best_trials"]} == front  # type: ignore[index]


def _hv_2d(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """The area two minimised objectives' points dominate up to ``ref``, by a sweep written here."""
    area, y_prev = 0.0, ref[1]
    for x, y in sorted(p for p in points if p[0] < ref[0] and p[1] < ref[1]):
        if y < y_prev:
            area += (ref[0] - x) * (y_prev - y)
            y_prev = y
    return area


def test_front_summaries_share_one_reference_and_match_a_hand_computed_hypervolume(tmp_path):
    from hpsearch.views._front import front_summaries

    a = _run(_write(tmp_path, _study("a", n_trials=8), "a.yaml")).study
    b = _run(_write(tmp_path, _study("b", n_trials=4, sampler="random"), "b.yaml")).study
    sa, sb = front_summaries([a, b])
    assert sa is not None and sb is not None
    assert sa.reference == sb.reference and sa.reference is not None
    for study, summary in ((a, sa), (b, sb)):
        front = [tuple(t.values) for t in study.best_trials]
        assert summary.size == len(front)
        assert summary.hypervolume == pytest.approx(_hv_2d(front, tuple(summary.reference)))  # type: ignore[arg-type]
    # The default reference is 10% beyond the worst front value of either study, per objective.
    worst = [max(t.values[i] for s in (a, b) for t in s.best_trials) for i in (0, 1)]
    best = [min(t.values[i] for s in (a, b) for t in s.best_trials) for i in (0, 1)]
    assert sa.reference == pytest.approx([w + 0.1 * (w - lo) for w, lo in zip(worst, best, strict=True)])
    (given,) = front_summaries([a], [100.0, 100.0])
    assert given is not None and given.hypervolume == pytest.approx(
        _hv_2d([tuple(t.values) for t in a.best_trials], (100.0, 100.0))
    )


def test_several_objectives_on_a_whole_search_import_are_refused(tmp_path):
    (tmp_path / "s.yaml").write_text(
        textwrap.dedent("""\
        name: gs
        objective: [{metric: accuracy}, {metric: f1_macro}]
        sampler: {name: nsga2}
        executor: local
        trainer:
          kind: sklearn_search
          strategy: grid_search_cv
          dataset: digits
          estimator: sklearn.tree.DecisionTreeClassifier
          param_grid: {max_depth: [2, 4]}
          cv: 3
          scoring: [accuracy, f1_macro]
        """)
    )
    done = run_cli("run", "s.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "objective: trainer 'sklearn_search' imports a whole search scored on one objective" in done.stderr
    assert not (tmp_path / "hpsearch.db").exists()


def test_sklearn_cv_trades_accuracy_against_fit_time(tmp_path):
    (tmp_path / "s.yaml").write_text(
        textwrap.dedent("""\
        name: cv2
        objective: [{metric: accuracy}, {metric: fit_time, direction: minimize}]
        sampler: {name: random, seed: 0}
        n_trials: 3
        executor: local
        search_space:
          max_depth: [2, 4, 8]
        trainer: {kind: sklearn_cv, dataset: digits, estimator: sklearn.tree.DecisionTreeClassifier, cv: 3}
        """)
    )
    result = _run(tmp_path / "s.yaml")
    done = [t for t in result.study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) == 3
    assert all(t.values == [t.user_attrs["metrics"]["accuracy"], t.user_attrs["metrics"]["fit_time"]] for t in done)


def test_compare_gives_front_size_hypervolume_and_infeasible_counts(tmp_path):
    from hpsearch.views._front import front_summaries

    _write(tmp_path, _study("a", n_trials=8, extra="constraints: [{metric: cost, max: 8}]\n"), "a.yaml")
    _write(tmp_path, _study("b", sampler="tpe", n_trials=6), "b.yaml")
    a, b = _run(tmp_path / "a.yaml").study, _run(tmp_path / "b.yaml").study
    done = run_cli("compare", "a.yaml", "b.yaml", "-f", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ra, rb = json.loads(done.stdout)
    sa, sb = front_summaries([a, b])
    assert (ra["front"], rb["front"]) == (len(a.best_trials), len(b.best_trials))
    assert (ra["hypervolume"], rb["hypervolume"]) == (pytest.approx(sa.hypervolume), pytest.approx(sb.hypervolume))
    assert ra["metric"] == "f1,f2" and ra["best_value"] is None
    assert ra["infeasible"] == sum(t.params["x"] > 3 for t in a.trials) and rb["infeasible"] == 0
    given = json.loads(run_cli("compare", "a.yaml", "--reference", "40,40", "-f", "json", cwd=tmp_path).stdout)
    assert given[0]["hypervolume"] == pytest.approx(_hv_2d([tuple(t.values) for t in a.best_trials], (40.0, 40.0)))
    table = run_cli("compare", "a.yaml", "b.yaml", cwd=tmp_path).stdout
    assert "front" in table and "hypervol" in table and "infeas" in table
    bad = run_cli("compare", "a.yaml", "--reference", "1,2,3", cwd=tmp_path)
    assert bad.returncode == 2 and "--reference: give one value per objective (f1, f2), got 3" in bad.stderr


def test_compare_never_takes_an_infeasible_trial_as_the_best(tmp_path):
    _write(
        tmp_path,
        _study(
            objective="{metric: value, direction: minimize}",
            sampler="grid",
            n_trials=5,
            fn="single",
            space="x: [0.0, 1.0, 2.0, 3.0, 4.0]",
            extra="constraints: [{metric: x, min: 3}]\n",
        ),
    )
    _run(tmp_path / "s.yaml")
    (row,) = json.loads(run_cli("compare", "s.yaml", "-f", "json", cwd=tmp_path).stdout)
    assert (row["best_value"], row["infeasible"], row["complete"]) == (1.0, 3, 5)
    assert row["best_params"] == {"x": 3.0}


def test_checkpoint_cleanup_keeps_the_front_and_drops_dominated_trials(tmp_path):
    from optuna.distributions import FloatDistribution

    from hpsearch.checkpoints import CheckpointStore
    from hpsearch.study._resume import CheckpointCleanup

    study = optuna.create_study(directions=["minimize", "minimize"], storage=f"sqlite:///{tmp_path / 'c.db'}")
    dist = {"x": FloatDistribution(0, 1)}
    # Trials 0 and 1 are on the front; 2 is dominated by 0; 3 is infeasible (on the front by value).
    for values, constraint in (([1, 3], -1), ([2, 1], -1), ([2, 4], -1), ([0, 0], 1)):
        study.add_trial(
            optuna.trial.create_trial(
                values=values, params={"x": 0.5}, distributions=dist, system_attrs={"constraints:c": constraint}
            )
        )
    store = CheckpointStore(str(tmp_path / "ckpt"), "s")
    kept = CheckpointCleanup(store, directions=["minimize", "minimize"])._needed(study.get_trials())
    assert kept == {0, 1}


def test_a_report_of_two_multi_objective_studies_draws_both_fronts(tmp_path):
    _run(_write(tmp_path, _study("a", n_trials=4), "a.yaml"))
    _run(_write(tmp_path, _study("b", sampler="random", n_trials=4), "b.yaml"))
    out = tmp_path / "r.html"
    done = run_cli("report", "a.yaml", "b.yaml", "-o", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr  # no "best so far" across studies without one best value
    html = out.read_text()
    assert html.count('data-figure="pareto-front"') == 2 and 'data-figure="cross-study"' not in html
