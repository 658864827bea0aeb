"""compare's table: narrow without params, a second params table, and compute to beat each baseline."""

from __future__ import annotations

import datetime as dt
import io
import json

import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

import hpsearch
from hpsearch.views import COLUMNS, compare_rows, render
from tests.conftest import OBJECTIVES, quadratic_study, run_cli

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real baseline run, a real tuned run comparing with it, an easy and a hard baseline, one never run."""
    tmp = tmp_path_factory.mktemp("cmpfmt")
    (tmp / "obj.py").write_text(OBJECTIVES)
    for name in ("quad-base", "easy", "hard", "ghost"):
        (tmp / f"{name}.yaml").write_text(quadratic_study(name, n_trials=2, sampler="random"))
    tuned = quadratic_study("quad-tuned", n_trials=8, sampler="tpe")
    tuned += "compare_with: [quad-base.yaml, easy.yaml, hard.yaml, ghost.yaml]\n"
    (tmp / "quad-tuned.yaml").write_text(tuned)
    hpsearch.run_study(str(tmp / "quad-base.yaml"))
    hpsearch.run_study(str(tmp / "quad-tuned.yaml"))
    url = f"sqlite:///{tmp / 'hpsearch.db'}"
    for name, value in (("easy", 50.0), ("hard", -1.0)):  # (x - 2) ** 2 on [-10, 10]: 50 is beaten, -1 never
        study = optuna.create_study(study_name=name, storage=url, direction="minimize")
        study.add_trial(create_trial(value=value, params={"x": 0.0}, distributions={"x": FloatDistribution(-10, 10)}))
    return tmp, url


def expected_to_beat(url: str, study: str, target: float) -> float | None:
    """Sum of finished trials' durations, in trial order, up to the first COMPLETE one below ``target``."""
    total = 0.0
    for t in sorted(optuna.load_study(study_name=study, storage=url).trials, key=lambda t: t.number):
        if t.state in FINISHED:
            total += t.duration.total_seconds()
        if t.state == TrialState.COMPLETE and t.value < target:
            return total
    return None


def test_compute_to_beat_from_the_stored_trials(store):
    tmp, url = store
    rows = compare_rows([str(tmp / "quad-tuned.yaml"), str(tmp / "quad-base.yaml")])
    assert list(rows[0]) == COLUMNS and rows[1]["compute_to_beat_s"] == {}
    beat = rows[0]["compute_to_beat_s"]
    assert list(beat) == ["quad-base", "easy", "hard", "ghost"]
    base_best = optuna.load_study(study_name="quad-base", storage=url).best_value
    assert beat["quad-base"] == pytest.approx(expected_to_beat(url, "quad-tuned", base_best))
    assert beat["easy"] is not None and beat["easy"] == pytest.approx(expected_to_beat(url, "quad-tuned", 50.0))
    assert beat["hard"] is None and expected_to_beat(url, "quad-tuned", -1.0) is None
    assert beat["ghost"] is None  # a baseline never run has no best value to beat
    frame = hpsearch.compare([str(tmp / "quad-tuned.yaml")])
    assert frame.loc[0, "compute_to_beat_s"] == beat


def test_compute_to_beat_in_gpu_seconds(store):
    """A study that used GPUs: compute to beat x GPUs per trial x workers, as gpu_s."""
    tmp, url = store
    (tmp / "gpu.yaml").write_text(quadratic_study("gpu") + "compare_with: [easy.yaml, hard.yaml]\n")
    study = optuna.create_study(study_name="gpu", storage=url, direction="minimize")
    study.set_user_attr("hpsearch.config", "resources: {gpus: 1, workers: 2}\n")
    t0 = dt.datetime(2026, 1, 1)
    trials = []
    for state, value, secs in [
        (TrialState.COMPLETE, 80.0, 10),
        (TrialState.PRUNED, None, 5),
        (TrialState.COMPLETE, 40.0, 30),
        (TrialState.COMPLETE, 1.0, 100),
    ]:
        t = create_trial(state=state, value=value, params={"x": 1.0}, distributions={"x": FloatDistribution(-10, 10)})
        t.datetime_start, t.datetime_complete = t0, t0 + dt.timedelta(seconds=secs)
        trials.append(t)
    study.add_trials(trials)
    (row,) = compare_rows([str(tmp / "gpu.yaml")])
    assert row["gpu_s"] == 145 * 2
    assert row["compute_to_beat_s"] == {"easy": (10 + 5 + 30) * 2, "hard": None}


def test_table_is_narrow_and_has_no_params(store):
    tmp, url = store
    res = run_cli("compare", "quad-tuned.yaml", "quad-base.yaml", cwd=tmp, env={"COLUMNS": "80"})
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "{" not in out and "}" not in out and '"x"' not in out
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert out.splitlines()[0].split()[:3] == ["study", "trainer", "method"]
    assert "beat quad-base" in out and "beat easy" in out and "beat hard" in out and "not beaten" in out
    assert "param" not in out.split()  # no second table without --params
    # Wrapped: every block starts with the study column and names both studies.
    blocks = out.strip().split("\n\n")
    assert len(blocks) >= 2
    for block in blocks:
        lines = block.splitlines()
        assert lines[0].startswith("study") and [ln.split()[0] for ln in lines[1:]] == ["quad-tuned", "quad-base"]


def test_params_second_table(store):
    tmp, url = store
    res = run_cli("compare", "quad-tuned.yaml", "quad-base.yaml", "--params", cwd=tmp, env={"COLUMNS": "80"})
    assert res.returncode == 0, res.stderr
    params = res.stdout.strip().split("\n\n")[-1].splitlines()
    assert params[0].split() == ["study", "param", "value"]
    for name in ("quad-tuned", "quad-base"):
        x = optuna.load_study(study_name=name, storage=url).best_params["x"]
        assert [name, "x", f"{x:.4g}"] in [line.split() for line in params[1:]]
    assert all(len(line) <= 80 for line in res.stdout.splitlines())

    res = run_cli("compare", "quad-tuned.yaml", "--params", "-f", "markdown", cwd=tmp)
    assert res.returncode == 0, res.stderr
    main, second = res.stdout.strip().split("\n\n")
    assert "best_params" not in main and "compute_to_beat_s" in main and "easy " in main
    x = optuna.load_study(study_name="quad-tuned", storage=url).best_params["x"]
    assert second.splitlines()[0] == "| study | param | value |" and f"| quad-tuned | x | {x:.4g} |" in second


def test_machine_formats_keep_every_column(store):
    tmp, url = store
    args = ["quad-tuned.yaml", "quad-base.yaml"]
    rows = compare_rows([str(tmp / a) for a in args])
    res = run_cli("compare", *args, "-f", "json", cwd=tmp)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert [list(r) for r in got] == [COLUMNS, COLUMNS]
    assert got[0]["best_params"] == rows[0]["best_params"] and "x" in got[0]["best_params"]
    assert got[0]["compute_to_beat_s"] == rows[0]["compute_to_beat_s"]
    res = run_cli("compare", *args, "-f", "csv", cwd=tmp)
    assert res.returncode == 0, res.stderr
    csv = pd.read_csv(io.StringIO(res.stdout))
    assert list(csv.columns) == COLUMNS
    assert json.loads(csv.loc[1, "best_params"]) == rows[1]["best_params"]
    assert json.loads(csv.loc[0, "compute_to_beat_s"]) == rows[0]["compute_to_beat_s"]
    assert render(rows, "csv", params=True) == render(rows, "csv")  # --params changes only table/markdown


def test_long_names_are_cut_and_width_is_respected(store):
    tmp, url = store
    rows = compare_rows([str(tmp / "quad-tuned.yaml")])
    rows[0]["study"] = "a-very-long-study-name-that-goes-on-and-on"
    text = render(rows, "table", width=60)
    assert all(len(line) <= 60 for line in text.splitlines()), text
    assert "a-very-long-study-name-…" in text and "on-and-on" not in text
    # Rows that are not compare rows (``show`` renders through here too) stay one plain table.
    assert render([{"number": 3, "value": 0.5}], "table").splitlines() == ["number  value", "3       0.5"]
