"""`hpsearch dashboard` without a browser: it never writes, never locks a running study, and its CLI."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.storage import open_readonly_storage
from hpsearch.errors import StorageError
from tests.conftest import run_cli
from tests.dashboard.helpers import dashboard
from tests.gate import GATED, PATIENCE_S, Gate
from tests.services import pg_db, pg_server, pg_url  # noqa: F401 - fixtures

SLEEPY = '''
import time

def f(params):
    time.sleep(0.05)
    return (params["x"] - 1) ** 2
'''

STUDY = """
name: busy
objective: {direction: minimize}
sampler: {name: random, seed: 0}
n_trials: 30
search_space:
  x: {type: float, low: -5, high: 5}
trainer: {kind: python, function: "sleepy.py:f"}
executor: local
"""

GATED_TRIALS = 8
GATED_STUDY = STUDY.replace("n_trials: 30", f"n_trials: {GATED_TRIALS}").replace("sleepy.py:f", "gate.py:gated")


@pytest.mark.slow  # 30 s: run by hand (pytest -m slow) to keep the default run under 10 minutes
def test_dashboard_polled_while_a_sqlite_study_writes(write_study, tmp_path: Path) -> None:
    # Every trial blocks at a gate until the test lets it through (tests/gate.py), so the
    # study cannot finish before the dashboard has seen each of its trials arrive.
    gate = Gate(tmp_path / "gate")
    path = write_study(GATED_STUDY, **{"gate.py": GATED})
    gate.release(1)
    first = run_cli("run", path, "-q", "--n-trials", "1", cwd=tmp_path, env=gate.env)  # database and study exist
    assert first.returncode == 0, first.stderr
    out_log, err_log = tmp_path / "run.out", tmp_path / "run.err"
    with open(out_log, "w") as out_fh, open(err_log, "w") as err_fh:
        run = subprocess.Popen(
            [sys.executable, "-m", "hpsearch", "run", str(path), "-q"],
            cwd=tmp_path, stdout=out_fh, stderr=err_fh, text=True, env={**os.environ, **gate.env},
        )
    polls, counts, running_seen = 0, [], []
    try:
        with dashboard(path, cwd=tmp_path) as dash:
            sid = dash.study_id("busy")

            def look() -> list[dict]:
                nonlocal polls
                dash.get_json("/api/studies")
                trials = dash.get_json(f"/api/studies/{sid}?after=0")["trials"]  # type: ignore[index]
                polls += 1
                counts.append(sum(t["state"] == "Complete" for t in trials))
                return trials

            for number in range(1, GATED_TRIALS):
                gate.wait(f"trial {number} at the gate", lambda: number in gate.arrived(), run)
                # Trial `number` is blocked: the study is running and has exactly `number` trials done.
                gate.wait(f"the dashboard to show trial {number} running",
                          lambda: any(t["number"] == number and t["state"] == "Running" for t in look()))
                assert run.poll() is None and counts[-1] == number, (number, counts[-3:])
                running_seen.append(number)
                if number == GATED_TRIALS // 2:
                    # The dashboard holds no lock: with the study idle at the gate, a writer gets the
                    # write lock (the timeout is a safety net; a held lock would time out).
                    con = sqlite3.connect(tmp_path / "hpsearch.db", timeout=30)
                    con.execute("BEGIN IMMEDIATE")
                    con.rollback()
                    con.close()
                gate.release(1)
            run.wait(timeout=PATIENCE_S)
            # The dashboard refreshes its view of the study on its own schedule: wait for it.
            gate.wait("the dashboard to show every trial complete", lambda: look() and counts[-1] == GATED_TRIALS)
            assert dash.proc.poll() is None, dash.log.read_text()[-2000:]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    out, err = out_log.read_text(), err_log.read_text()
    assert run.returncode == 0, err[-3000:]
    assert "database is locked" not in err and "locked" not in out
    assert running_seen == list(range(1, GATED_TRIALS))  # each trial seen running, in order
    assert counts == sorted(counts), f"trial counts went backwards: {counts}"
    assert counts[-1] == GATED_TRIALS
    assert polls >= GATED_TRIALS, polls
    study = optuna.load_study(study_name="busy", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    states = [t.state for t in study.trials]
    assert len(states) == GATED_TRIALS and set(states) == {TrialState.COMPLETE}


def test_readonly_storage_cannot_write_or_create(write_study, tmp_path: Path) -> None:
    path = write_study(STUDY.replace("n_trials: 30", "n_trials: 2"), **{"sleepy.py": SLEEPY})
    assert run_cli("run", path, "-q", cwd=tmp_path).returncode == 0
    url = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    storage = open_readonly_storage(url)
    sid = storage.get_study_id_from_name("busy")
    assert len(storage.get_all_trials(sid)) == 2
    with pytest.raises(Exception) as info:
        storage.set_study_user_attr(sid, "x", 1)
    chain, err = [], info.value
    while err is not None:
        chain.append(str(err))
        err = err.__cause__ or err.__context__
    assert any("readonly" in c or "read-only" in c for c in chain), chain
    storage.engine.dispose()
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StorageError):
        open_readonly_storage(f"sqlite:///{empty}")
    assert empty.stat().st_size == 0  # no tables were created


def test_non_loopback_host_warns_before_anything(tmp_path: Path) -> None:
    res = run_cli("dashboard", "--storage", f"sqlite:///{tmp_path / 'missing.db'}", "--host", "0.0.0.0", cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("warning: the dashboard listens on 0.0.0.0")
    assert lines[-1].startswith("error: ") and "no database" in lines[-1]
    quiet = run_cli("dashboard", "--storage", f"sqlite:///{tmp_path / 'missing.db'}", cwd=tmp_path)
    assert quiet.returncode == 2 and "warning" not in quiet.stderr


def test_dashboard_needs_a_study_or_storage(tmp_path: Path) -> None:
    res = run_cli("dashboard", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: dashboard: give a study file, or --storage URL"
    ]


def test_missing_extra_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "shadow" / "optuna_dashboard"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('simulated: not installed')\n")
    res = run_cli("dashboard", "--storage", "sqlite:///x.db", cwd=tmp_path, env={"PYTHONPATH": str(fake.parent)})
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: optuna_dashboard cannot be imported (simulated: not installed); run: pip install 'hpsearch[dashboard]'"
    ]


@pytest.mark.postgres
def test_readonly_storage_on_postgres(write_study, tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    path = write_study(STUDY.replace("n_trials: 30", "n_trials: 2"), **{"sleepy.py": SLEEPY})
    assert run_cli("run", path, "-q", "--storage", pg_url, cwd=tmp_path).returncode == 0
    storage = open_readonly_storage(pg_url)
    sid = storage.get_study_id_from_name("busy")
    assert len(storage.get_all_trials(sid)) == 2
    with pytest.raises(Exception) as info:
        storage.set_study_user_attr(sid, "x", 1)
    assert "read-only transaction" in repr(info.value) + repr(info.value.__cause__) + repr(info.value.__context__)
    storage.engine.dispose()
