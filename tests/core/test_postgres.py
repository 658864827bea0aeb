"""PostgreSQL storage for real: a study end to end, secrets never shown, a restart mid-study,
and the retry rules for a write whose acknowledgement was lost."""

from __future__ import annotations

import datetime
import os
import secrets
import subprocess
import sys
import time

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from hpsearch.storage import MirroredStorage, _mirror, is_transient, open_storage
from tests.conftest import OBJECTIVES, run_cli
from tests.gate import GATED, PATIENCE_S, Gate
from tests.services import SECRET_ROLE, PgServer, pg_db, pg_server, require_module  # noqa: F401 - fixtures

STUDY = """
name: pg
objective: {metric: value, direction: minimize}
sampler: {name: tpe, seed: 0}
n_trials: N_TRIALS
max_concurrent_trials: 2
storage: STORAGE
search_space:
  x: {type: float, low: -10, high: 10}
  a: [0, 1]
  b: {type: int, low: 0, high: 3}
trainer: {kind: python, function: "obj.py:slow_grid"}
resources: {cpus: 0.5}
"""


@pytest.fixture
def secret_db(pg_server: PgServer, pg_db: str):
    """(database, password): pg_db owned by role hps_secret, which must give its password."""
    password = "pw-" + secrets.token_hex(12)
    if not pg_server.execute(f"SELECT 1 FROM pg_roles WHERE rolname = '{SECRET_ROLE}'"):
        pg_server.execute(f"CREATE ROLE {SECRET_ROLE} LOGIN")
    pg_server.execute(f"ALTER ROLE {SECRET_ROLE} PASSWORD '{password}'")
    pg_server.execute(f"ALTER DATABASE {pg_db} OWNER TO {SECRET_ROLE}")
    pg_server.execute(f"GRANT ALL ON SCHEMA public TO {SECRET_ROLE}", db=pg_db)
    return pg_db, password


def _dump(server: PgServer, db: str) -> str:
    """Every row of every table, as text."""
    tables = [r[0] for r in server.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", db=db)]
    assert "trial_user_attributes" in tables and "study_user_attributes" in tables
    return "\n".join(f"{t}: {server.execute(f'SELECT * FROM {t}', db=db)}" for t in tables)


def _trials(url: str, name: str = "pg") -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(url, create=False)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()


@pytest.mark.postgres
@pytest.mark.ray
def test_study_on_postgres_never_shows_the_password(pg_server, secret_db, write_study, tmp_path):
    db, password = secret_db
    # Wrong password first: refused before anything is written, password masked.
    wrong = write_study(STUDY.replace("N_TRIALS", "3").replace(
        "STORAGE", f"postgresql+psycopg://{SECRET_ROLE}:${{HPS_PW}}@127.0.0.1:{pg_server.port}/{db}"),
        name="wrong.yaml", **{"obj.py": OBJECTIVES})
    res = run_cli("run", wrong, cwd=tmp_path, env={"HPS_PW": "not-" + password}, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "cannot connect" in res.stderr and "password authentication failed" in res.stderr
    assert "not-" + password not in res.stdout + res.stderr and "***@" in res.stderr

    # ${ENV} in the study file, executor ray: the study runs and the password shows nowhere.
    path = write_study(STUDY.replace("N_TRIALS", "6").replace(
        "STORAGE", f"postgresql+psycopg://{SECRET_ROLE}:${{HPS_PW}}@127.0.0.1:{pg_server.port}/{db}"),
        **{"obj.py": OBJECTIVES})
    env = {"HPS_PW": password, "HPS_TEST_SLEEP": "0"}
    res = run_cli("run", path, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    shown = run_cli("show", path, cwd=tmp_path, env=env)
    assert shown.returncode == 0 and "pg (6 trials)" in shown.stdout, shown.stderr
    url = f"postgresql+psycopg://{SECRET_ROLE}:{password}@127.0.0.1:{pg_server.port}/{db}"
    trials = _trials(url)
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert all(t.user_attrs["placement"]["node_id"] for t in trials)
    for out in (res, shown):
        assert password not in out.stdout + out.stderr
    dump = _dump(pg_server, db)
    assert password not in dump
    assert f"{SECRET_ROLE}:***@127.0.0.1" in dump  # the stored config keeps the masked URL

    # The standard PG env vars work too: no password in the URL at all.
    res = run_cli(
        "run", path, "--more", "1", "--executor", "local",
        "--storage", f"postgresql+psycopg://{SECRET_ROLE}@127.0.0.1:{pg_server.port}/{db}",
        cwd=tmp_path, env={"HPS_TEST_SLEEP": "0", "PGPASSWORD": password, "HPS_PW": "unused"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(_trials(url)) == 7
    assert password not in res.stdout + res.stderr + _dump(pg_server, db)


def _count_complete(server: PgServer, db: str) -> dict[int, float]:
    try:
        rows = server.execute(
            "SELECT t.number, v.value FROM trials t JOIN trial_values v USING (trial_id) "
            "WHERE t.state = 'COMPLETE'", db=db)
    except Exception:  # noqa: BLE001 - the server is restarting
        return {}
    return {n: v for n, v in rows}


@pytest.mark.postgres
def test_postgres_restart_mid_study_loses_no_complete_trial(pg_server, secret_db, write_study, tmp_path):
    # Trials block at a gate the test opens one ticket at a time (tests/gate.py), so the restart
    # and the outage happen mid-study by construction, whatever the machine's load.
    db, password = secret_db
    url = f"postgresql+psycopg://{SECRET_ROLE}:{password}@127.0.0.1:{pg_server.port}/{db}"
    gate = Gate(tmp_path / "gate")
    study = STUDY.replace("N_TRIALS", "10").replace("STORAGE", "${HPS_URL}").replace("obj.py:slow_grid", "gate.py:gated")
    path = write_study(study, **{"gate.py": GATED})
    # The retry window is a safety net far beyond the outage, which ends as soon as the test saw it.
    env = {**os.environ, **gate.env, "HPS_URL": url, "HPSEARCH_STORAGE_RETRY_S": "600"}
    out_log, err_log = tmp_path / "run.out", tmp_path / "run.err"

    def complete() -> dict[int, float]:
        return _count_complete(pg_server, db)

    gate.release(2)
    with open(out_log, "w") as out_fh, open(err_log, "w") as err_fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpsearch", "run", str(path), "--executor", "local"],
            cwd=tmp_path, env=env, stdout=out_fh, stderr=err_fh, text=True,
        )
    try:
        # 2 trials done, the next 2 (max_concurrent_trials: 2) blocked at the gate.
        gate.wait("2 trials done and 2 at the gate",
                  lambda: len(gate.waiting()) == 2 and len(complete()) == 2, proc)
        before_restart = complete()
        t_restart = datetime.datetime.now()
        pg_server.restart()  # pg_ctl restart: every connection is cut
        gate.release(2)  # the 2 blocked trials finish after the restart
        gate.wait("4 trials done and 2 at the gate",
                  lambda: len(gate.waiting()) == 2 and len(complete()) == 4, proc)
        before_outage = complete()
        in_outage = gate.waiting()
        t_down = datetime.datetime.now()
        seen = err_log.stat().st_size
        pg_server.stop()
        gate.release(2)  # the 2 blocked trials finish while the database is down ...
        gate.wait("the trials running in the outage to return", lambda: in_outage <= gate.claimed(), proc)
        # ... and the driver hits the outage (its retry warning) before the database comes back.
        gate.wait("a lost-connection warning in the outage",
                  lambda: "lost the database connection" in err_log.read_text()[seen:], proc)
        t_up = datetime.datetime.now()
        pg_server.start()
        gate.release(4)  # the last 4 trials run after the outage
        proc.wait(timeout=PATIENCE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = out_log.read_text(), err_log.read_text()
    assert proc.returncode == 0, err[-3000:]
    assert password not in out + err  # the retry warnings are masked
    trials = _trials(url)
    done = {t.number: t for t in trials if t.state == TrialState.COMPLETE}
    assert len(done) == 10, [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for seen_values in (before_restart, before_outage):
        assert all(done[n].value == v for n, v in seen_values.items())  # none lost, none changed
    # The restart and the outage fell inside the study: 8 trials completed after the restart,
    # the 2 trials running through the outage completed, and 4 trials completed after it.
    after_restart = {n for n, t in done.items() if t.datetime_complete > t_restart}
    assert after_restart == set(range(10)) - set(before_restart) and len(after_restart) == 8
    assert len(in_outage) == 2 and all(done[n].datetime_complete > t_down for n in in_outage)
    after_outage = set(range(10)) - set(before_outage) - in_outage
    assert len(after_outage) == 4 and all(done[n].datetime_complete > t_up for n in after_outage)


# ------------------------------------------------------- retry rules, no server needed


def _lost(message: str = "server closed the connection unexpectedly") -> Exception:
    """What Optuna raises when the connection drops mid-call."""
    import psycopg

    err = sqlalchemy.exc.OperationalError("COMMIT", {}, psycopg.OperationalError(message))
    try:
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from err
    except optuna.exceptions.StorageInternalError as e:
        return e


def test_transient_errors_are_told_apart():
    require_module("psycopg", "pip install -e '.[postgres]'")  # skips; fails under CI
    import sqlite3

    assert is_transient(_lost())
    assert is_transient(_lost("connection failed: Connection refused"))
    assert not is_transient(_lost('password authentication failed for user "x"'))
    locked = sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    assert not is_transient(locked)
    assert not is_transient(ValueError("boom"))


class _VirtualClock:
    """Stands in for the ``time`` module in hpsearch.storage._mirror: ``sleep`` only moves ``monotonic``."""

    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __getattr__(self, name: str):
        return getattr(time, name)


def _ack_lost_once(monkeypatch, obj, name: str) -> None:
    """The first call commits, then raises a lost connection (the acknowledgement is lost)."""
    real = getattr(obj, name)
    calls = []

    def flaky(*args, **kwargs):
        result = real(*args, **kwargs)
        if not calls:
            calls.append(1)
            raise _lost()
        return result

    monkeypatch.setattr(obj, name, flaky)


def test_retried_writes_after_a_lost_acknowledgement(tmp_path, monkeypatch, caplog):
    require_module("psycopg", "pip install -e '.[postgres]'")  # skips; fails under CI
    storage = MirroredStorage(open_storage(f"sqlite:///{tmp_path / 'r.db'}"), retry_s=10,
                              trial_system_attrs={"hpsearch:driver": "me"})
    study = optuna.create_study(storage=storage, direction="minimize")
    sid = study._study_id
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    # Attributes: an upsert, retried harmlessly.
    _ack_lost_once(monkeypatch, storage._remote, "set_trial_user_attr")
    storage.set_trial_user_attr(trial._trial_id, "k", 1)
    assert storage.get_trial(trial._trial_id).user_attrs["k"] == 1
    assert storage.retries == 1 and "lost the database connection during set_trial_user_attr" in caplog.text
    # Finishing a trial: the retry finds it finished as asked, and that counts as done.
    _ack_lost_once(monkeypatch, storage._remote, "set_trial_state_values")
    study.tell(trial, 0.5)
    assert storage.get_trial(trial._trial_id).state == TrialState.COMPLETE
    assert storage.retries == 2
    # Creating a trial: the first one becomes a ghost the manager can find (and FAIL).
    _ack_lost_once(monkeypatch, storage._remote, "create_new_trial")
    real = study.ask()
    ghosts = storage.ghosts(sid, running=[real.number])
    assert [g.number for g in ghosts] == [real.number - 1]
    assert ghosts[0].system_attrs["hpsearch:driver"] == "me"
    # A lost connection that never comes back: retried with backoff until retry_s, then raised.
    # The retry loop runs on a virtual clock, so this checks the schedule, not the machine's speed.
    storage.retry_s = 0.6
    calls, clock = [], _VirtualClock()

    def down(*args, **kwargs):
        calls.append(clock.now)
        raise _lost("connection failed: Connection refused")

    monkeypatch.setattr(storage._remote, "set_trial_user_attr", down)
    monkeypatch.setattr(_mirror, "time", clock)
    retries = storage.retries
    with pytest.raises(optuna.exceptions.StorageInternalError):
        storage.set_trial_user_attr(real._trial_id, "k", 2)
    # Backoff 0.25 s, then the 0.35 s left of retry_s; the third failure is raised.
    assert clock.sleeps == pytest.approx([0.25, 0.35]) and calls == pytest.approx([0.0, 0.25, 0.6])
    assert storage.retries == retries + 2


def test_manager_fails_the_ghost_of_a_trial_created_twice(write_study, tmp_path, monkeypatch):
    require_module("psycopg", "pip install -e '.[postgres]'")  # skips; fails under CI
    from optuna.storages._cached_storage import _CachedStorage

    import hpsearch

    _ack_lost_once(monkeypatch, _CachedStorage, "create_new_trial")
    path = write_study("""
        name: ghost
        objective: {metric: value, direction: minimize}
        n_trials: 4
        executor: local
        max_concurrent_trials: 1
        search_space:
          x: {type: float, low: -10, high: 10}
        trainer: {kind: python, function: "obj.py:quadratic"}
        """, **{"obj.py": OBJECTIVES})
    hpsearch.run_study(str(path))
    trials = optuna.load_study(study_name="ghost", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}").trials
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 4 and states.count(TrialState.FAIL) == 1
    (ghost,) = [t for t in trials if t.state == TrialState.FAIL]
    assert ghost.number == 0 and ghost.user_attrs["fail_reason"].startswith("duplicate: created twice")
