"""Conditional parameters (``when:``): sampled, stored and passed only where their condition holds (issue 14)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import run_cli
from tests.gate import wait_until

OBJ = """
import json, os, time, uuid
HERE = os.path.dirname(os.path.abspath(__file__))

def f(params):
    os.makedirs(os.path.join(HERE, "seen"), exist_ok=True)
    with open(os.path.join(HERE, "seen", uuid.uuid4().hex + ".json"), "w") as fh:
        json.dump(params, fh)
    if os.path.exists(os.path.join(HERE, "hold")):  # the kill test: hold until `hold` is gone
        open(os.path.join(HERE, "held"), "w").close()
        while os.path.exists(os.path.join(HERE, "hold")):
            time.sleep(0.02)
    return {"sgd": 1.0, "adam": 2.0}[params["opt"]] - params.get("momentum", 0) + params.get("depth", 0)
"""

#: ``dampening`` comes first in the file but depends on ``nesterov`` (itself conditional on two params).
SPACE = """\
  dampening: {choices: [0.0, 0.1], when: {nesterov: false}}
  opt: {choices: [sgd, adam]}
  model: {choices: [cnn, resnet, mlp]}
  momentum: {type: float, low: 0.5, high: 0.9, MOMENTUM_STEP when: {opt: sgd}}
  depth: {type: int, low: 1, high: 3, when: {model: [cnn, resnet]}}
  nesterov: {choices: [true, false], when: {opt: sgd, model: cnn}}
"""


def _study(sampler: str, *, n_trials: int = 12, step: bool = False, space: str = SPACE, dedupe: str = "") -> str:
    opts = ", options: {n_startup_trials: 4}" if sampler == "tpe" else ""
    space = space.replace("MOMENTUM_STEP", "step: 0.4," if step else "")
    return (
        "name: c\nobjective: {metric: value, direction: minimize}\n"
        f"sampler: {{name: {sampler}, seed: 0{opts}{dedupe}}}\n"
        f"n_trials: {n_trials}\nexecutor: local\nsearch_space:\n{space}"
        'trainer: {kind: python, function: "obj.py:f"}\n'
    )


def _expected_names(p: dict) -> set[str]:
    """The params a point holds, written out by hand from SPACE's conditions."""
    names = {"opt", "model"}
    if p["opt"] == "sgd":
        names.add("momentum")
    if p["model"] in ("cnn", "resnet"):
        names.add("depth")
    if p["opt"] == "sgd" and p["model"] == "cnn":
        names.add("nesterov")
        if p["nesterov"] is False:
            names.add("dampening")
    return names


def _trials(folder: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="c", storage=f"sqlite:///{folder / 'hpsearch.db'}").trials


def _seen(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((folder / "seen").glob("*.json"))]


def _run(path: Path) -> None:
    r = run_cli("run", path, "--quiet", cwd=path.parent)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_conditional_params_are_present_exactly_when_their_condition_holds(write_study, tmp_path, sampler):
    path = write_study(_study(sampler, n_trials=16), **{"obj.py": OBJ})
    _run(path)
    trials = _trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 16
    for t in trials:
        assert set(t.params) == _expected_names(t.params), t.params
    seen = _seen(tmp_path)
    assert len(seen) == 16
    for params in seen:  # the trainer got the same params: no absent one, none missing
        assert set(params) == _expected_names(params), params
    assert sorted(map(json.dumps, seen)) == sorted(json.dumps(t.params) for t in trials)
    assert {t.params["opt"] for t in trials} == {"sgd", "adam"}  # both branches were exercised
    assert any("momentum" not in t.params for t in trials) and any("momentum" in t.params for t in trials)


def test_show_leaves_absent_params_blank(write_study, tmp_path):
    path = write_study(_study("random", n_trials=8), **{"obj.py": OBJ})
    _run(path)
    r = run_cli("show", path, "--limit", "0", cwd=tmp_path, env={"COLUMNS": "300"})
    assert r.returncode == 0, r.stderr
    assert "nan" not in r.stdout.lower() and "None" not in r.stdout
    # The same cells as CSV (the table's, with full names), so blanks can be told apart.
    r = run_cli("show", path, "--limit", "0", "-f", "csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    cols = list(rows[0])
    assert len(rows) == 8 and "momentum" in cols
    by_number = {t.number: t.params for t in _trials(tmp_path)}
    assert {"momentum" in p for p in by_number.values()} == {True, False}  # both kinds of row are shown
    for cells in rows:
        params = by_number[int(cells["number"])]
        for name in ("momentum", "depth", "nesterov", "dampening"):
            if name in cols:  # blank exactly where the param is absent
                assert (cells[name] == "") == (name not in params), (name, cells, params)
    assert "nan" not in r.stdout.lower() and "None" not in r.stdout


def _valid_grid_points() -> set[str]:
    """Every valid point of SPACE with momentum's step 0.4, enumerated by hand."""
    out = set()
    for opt, model in itertools.product(["sgd", "adam"], ["cnn", "resnet", "mlp"]):
        momenta = [{"momentum": m} for m in (0.5, 0.9)] if opt == "sgd" else [{}]
        depths = [{"depth": d} for d in (1, 2, 3)] if model != "mlp" else [{}]
        if opt == "sgd" and model == "cnn":
            nest = [{"nesterov": True}, {"nesterov": False, "dampening": 0.0}, {"nesterov": False, "dampening": 0.1}]
        else:
            nest = [{}]
        for m, d, n in itertools.product(momenta, depths, nest):
            out.add(json.dumps({"opt": opt, "model": model, **m, **d, **n}, sort_keys=True))
    return out


def test_a_grid_enumerates_exactly_the_valid_combinations(write_study, tmp_path):
    expected = _valid_grid_points()
    assert len(expected) == 33  # 18 (sgd, cnn) + 6 (sgd, resnet) + 2 (sgd, mlp) + 3 + 3 + 1 (adam)
    path = write_study(_study("grid", n_trials=100, step=True), **{"obj.py": OBJ})
    _run(path)
    trials = _trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 33
    got = [json.dumps(t.params, sort_keys=True) for t in trials]
    assert len(set(got)) == 33 and set(got) == expected
    assert {json.dumps(p, sort_keys=True) for p in _seen(tmp_path)} == expected


def test_dedupe_runs_each_valid_point_of_a_finite_conditional_space_once(write_study, tmp_path):
    space = (
        "  opt: {choices: [sgd, adam]}\n"
        "  momentum: {choices: [0.5, 0.9], when: {opt: sgd}}\n"
        "  model: {choices: [cnn, mlp]}\n"
        "  depth: {type: int, low: 1, high: 2, when: {model: cnn}}\n"
    )  # sgd: 2 momenta, adam: none; cnn: 2 depths, mlp: none -> 3 * 3 = 9 points
    path = write_study(_study("tpe", n_trials=40, space=space), **{"obj.py": OBJ})
    r = run_cli("run", path, "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "search space exhausted after 9 distinct points" in r.stdout + r.stderr
    trials = _trials(tmp_path)
    points = {json.dumps(t.params, sort_keys=True) for t in trials}
    assert len(trials) == 9 and len(points) == 9
    for t in trials:
        assert ("momentum" in t.params) == (t.params["opt"] == "sgd")
        assert ("depth" in t.params) == (t.params["model"] == "cnn")


REFUSALS = {
    "unknown": ("  opt: {choices: [sgd, adam]}\n  m: {type: float, low: 0, high: 1, when: {optimizer: sgd}}\n", "m"),
    "value": ("  opt: {choices: [sgd, adam]}\n  m: {type: float, low: 0, high: 1, when: {opt: [sgd, rms]}}\n", "m"),
    "numeric": ("  n: {type: int, low: 1, high: 3}\n  m: {type: float, low: 0, high: 1, when: {n: 2}}\n", "m"),
    "cycle": ("  a: {choices: [x, y], when: {b: u}}\n  b: {choices: [u, v], when: {a: x}}\n", "a"),
    "self": ("  a: {choices: [x, y], when: {a: x}}\n", "a"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_bad_condition_is_refused_with_one_line_and_nothing_written(write_study, tmp_path, case):
    space, name = REFUSALS[case]
    path = write_study(_study("random", space=space), **{"obj.py": OBJ})
    r = run_cli("run", path, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "study.yaml" in lines[0] and f"search_space.{name}.when" in lines[0]
    hint = {"unknown": "one of: opt", "value": "'rms'", "numeric": "categorical", "cycle": "cycle", "self": "cycle"}
    assert hint[case] in lines[0]
    assert not (tmp_path / "hpsearch.db").exists() and not (tmp_path / "seen").exists()


def test_a_killed_conditional_study_completes_on_rerun_and_a_changed_condition_is_refused(write_study, tmp_path):
    path = write_study(_study("random", n_trials=5), **{"obj.py": OBJ})
    (tmp_path / "hold").write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "-q"],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    wait_until("the first trial held", (tmp_path / "held").exists, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    (tmp_path / "hold").unlink()
    _run(path)
    trials = _trials(tmp_path)
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["fail_reason"] == "orphaned"
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 5
    retry = next(t for t in trials if t.user_attrs.get("hpsearch.retry_of") == 0)
    assert retry.params == trials[0].params  # the queued retry kept its point: no param added or dropped
    for t in trials:
        assert set(t.params) == _expected_names(t.params), t.params
    path.write_text(path.read_text().replace("when: {opt: sgd}", "when: {opt: adam}"))
    r = run_cli("run", path, cwd=tmp_path)
    assert r.returncode == 2 and "search_space: differs" in r.stderr, r.stderr
    assert len(_trials(tmp_path)) == len(trials)


def _write_study(tmp_path: Path, text: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "obj.py").write_text(OBJ)
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_enqueue_points_leave_out_the_params_whose_condition_fails(tmp_path):
    point = "{opt: adam, model: mlp}"
    path = _write_study(tmp_path, _study("random", n_trials=2) + f"enqueue: [{point}]\n")
    _run(path)
    first = _trials(tmp_path)[0]
    assert first.params == {"opt": "adam", "model": "mlp"}  # no momentum, depth, nesterov, dampening
    bad = _write_study(tmp_path / "bad", _study("random", n_trials=2) + "enqueue: [{opt: adam, model: mlp, depth: 2}]\n")
    res = run_cli("run", bad, cwd=bad.parent)
    assert res.returncode == 2 and "enqueue[0].depth: its when:" in res.stderr and "leave it out" in res.stderr
    assert not (bad.parent / "hpsearch.db").exists()


def test_conditions_with_pbt_are_refused(tmp_path):
    text = _study("random", n_trials=2).replace("n_trials: 2\n", "scheduler: {name: pbt, population: 2, generations: 2}\n")
    path = _write_study(tmp_path, text)
    res = run_cli("run", path, cwd=tmp_path)
    assert res.returncode == 2 and "PBT keeps one set of params per member" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "hpsearch.db").exists()
