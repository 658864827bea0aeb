"""Several `hpsearch run` processes on one study: exact totals, no duplicate grid points, no lock errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import OBJECTIVES
from tests.services import pg_db, pg_server, pg_url  # noqa: F401 - fixtures

GRID = """
name: conc-grid
objective: {{metric: value, direction: maximize}}
storage: {storage}
sampler: {{name: grid, seed: 0}}
executor: local
search_space:
  a: [0, 1, 2, 3]
  b: [0, 1, 2]
trainer: {{kind: python, function: "obj.py:slow_grid"}}
"""

TPE = """
name: conc-tpe
objective: {{metric: value, direction: minimize}}
storage: {storage}
sampler: {{name: tpe, seed: 0}}
n_trials: 24
executor: local
search_space:
  x: {{type: float, low: -10, high: 10}}
trainer: {{kind: python, function: "obj.py:shared_quadratic"}}
"""

# Each driver's first trial waits (at most a minute) until a second driver has started a
# trial, so "the work was shared" does not depend on how fast four processes import hpsearch
# on a loaded machine. Local trials run on the driver's threads: the pid names the driver.
SHARED = '''

def shared_quadratic(params):
    from pathlib import Path
    here = Path(__file__).with_name("started")
    here.mkdir(exist_ok=True)
    (here / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(here.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return (params["x"] - 2) ** 2
'''


def _run_four(tmp_path, text, storage):
    (tmp_path / "obj.py").write_text(textwrap.dedent(OBJECTIVES) + SHARED)
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(text.format(storage=storage)))
    env = {**os.environ, "HPS_TEST_SLEEP": "0.05"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "hpsearch", "run", str(path), "-q"], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert "locked" not in err.lower() and "Traceback" not in err
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return request.getfixturevalue("pg_url")


def test_four_drivers_grid_no_duplicates(tmp_path, storage_url):
    _run_four(tmp_path, GRID, storage_url)
    trials = optuna.load_study(study_name="conc-grid", storage=storage_url).trials
    complete = [(t.params["a"], t.params["b"]) for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(complete) == [(a, b) for a in range(4) for b in range(3)]
    assert not [k for k, n in Counter(complete).items() if n > 1]
    assert len(trials) == 12


def test_four_drivers_exact_total(tmp_path, storage_url):
    _run_four(tmp_path, TPE, storage_url)
    trials = optuna.load_study(study_name="conc-tpe", storage=storage_url).trials
    assert len(trials) == 24
    assert all(t.state == TrialState.COMPLETE for t in trials)
    drivers = {t.system_attrs["hpsearch:driver"] for t in trials}
    assert len(drivers) >= 2  # the work really was shared
