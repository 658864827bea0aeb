"""`hpsearch dashboard` without a browser: it never writes, never locks a running study, and its CLI."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch._dashboard import open_readonly_storage
from hpsearch.errors import StorageError
from tests.conftest import run_cli
from tests.dashboard.helpers import dashboard
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


def test_dashboard_polled_while_a_sqlite_study_writes(write_study, tmp_path: Path) -> None:
    path = write_study(STUDY, **{"sleepy.py": SLEEPY})
    first = run_cli("run", path, "-q", "--n-trials", "1", cwd=tmp_path)  # the database and study exist
    assert first.returncode == 0, first.stderr
    run = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "-q"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    polls, counts = 0, []
    try:
        with dashboard(path, cwd=tmp_path) as dash:
            sid = dash.study_id("busy")
            deadline = time.monotonic() + 240
            while run.poll() is None and time.monotonic() < deadline and polls < 2000:
                dash.get_json("/api/studies")
                counts.append(len(dash.get_json(f"/api/studies/{sid}?after=0")["trials"]))  # type: ignore[index]
                polls += 1
            assert dash.proc.poll() is None, dash.log.read_text()[-2000:]
            # The dashboard holds no lock: a writer gets the write lock at once.
            con = sqlite3.connect(tmp_path / "hpsearch.db", timeout=0.5)
            con.execute("BEGIN IMMEDIATE")
            con.rollback()
            con.close()
        out, err = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    print(f"{polls} dashboard polls while the study ran; trial counts seen {counts[:1]}..{counts[-1:]}")
    assert run.returncode == 0, err[-3000:]
    assert "database is locked" not in err and "locked" not in out
    assert polls >= 5, f"the dashboard was polled only {polls} times while the study ran"
    assert counts == sorted(counts), "trial counts went backwards"
    study = optuna.load_study(study_name="busy", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    states = [t.state for t in study.trials]
    assert len(states) == 30 and set(states) == {TrialState.COMPLETE}


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
