"""What the README promises about storage: SQLite's pragmas, and the cross-host heartbeat."""

from __future__ import annotations

import sqlite3
import time

from tests.conftest import OBJECTIVES, run_cli

STUDY = """
    name: promises
    objective: {metric: value, direction: minimize}
    sampler: {name: random, seed: 0}
    n_trials: 2
    executor: local
    search_space:
      x: {type: float, low: -10, high: 10}
    trainer: {kind: python, function: "obj.py:quadratic"}
    """


def test_sqlite_runs_in_wal_with_synchronous_normal_and_a_60_s_busy_timeout(write_study, tmp_path, monkeypatch):
    """Every connection the manager opens has the pragmas; the file stays in WAL mode."""
    import sqlalchemy

    import hpsearch

    path = write_study(STUDY, **{"obj.py": OBJECTIVES})
    seen: list[tuple[str, int, int]] = []

    def on_connect(dbapi_con, record):
        cur = dbapi_con.cursor()
        pragmas = tuple(cur.execute(f"PRAGMA {p}").fetchone()[0] for p in ("journal_mode", "synchronous", "busy_timeout"))
        cur.close()
        seen.append(pragmas)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", on_connect)
    try:
        result = hpsearch.run_study(str(path))
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "connect", on_connect)
    assert result.counts() == {"COMPLETE": 2}
    # synchronous 1 is NORMAL; the busy timeout is in milliseconds.
    assert seen and set(seen) == {("wal", 1, 60_000)}, seen

    con = sqlite3.connect(tmp_path / "hpsearch.db")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # kept in the file
        # The other two are per connection: a plain one has the defaults (SQLite's FULL,
        # Python's 5 s), so the values above are hpsearch's own.
        assert con.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert con.execute("PRAGMA busy_timeout").fetchone()[0] == 5_000
    finally:
        con.close()


def test_a_driver_on_another_host_is_presumed_dead_after_2_minutes_without_heartbeat(write_study, tmp_path):
    """Its RUNNING trials are FAIL "orphaned" and re-run; a live one's (fresh heartbeat) are left alone."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from hpsearch.study._manager import (
        DRIVER_ATTR,
        HEARTBEAT_EVERY_S,
        HEARTBEAT_PREFIX,
        HEARTBEAT_STALE_S,
    )

    assert HEARTBEAT_STALE_S == 120.0 and HEARTBEAT_EVERY_S < HEARTBEAT_STALE_S
    path = write_study(STUDY, **{"obj.py": OBJECTIVES})
    first = run_cli("run", path, "--n-trials", "1", "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]

    # Trials of three drivers on other hosts, as they left them in storage.
    url = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    study = optuna.load_study(study_name="promises", storage=url)
    drivers = {"stale": ("stale-host.invalid:4242:1", 1.5), "silent": ("silent-host.invalid:4343:1", -3.0),
               "live": ("live-host.invalid:4444:1", 7.0)}
    number = {}
    for name, (ident, x) in drivers.items():
        study.add_trial(create_trial(state=TrialState.RUNNING, params={"x": x},
                                     distributions={"x": FloatDistribution(-10, 10)}, system_attrs={DRIVER_ATTR: ident}))
        number[name] = study.trials[-1].number
    now = time.time()
    beat = study._storage.set_study_system_attr  # where the manager keeps heartbeats
    beat(study._study_id, HEARTBEAT_PREFIX + drivers["stale"][0], now - HEARTBEAT_STALE_S - 1)
    # "live" beat in the future: fresh however long this machine takes to start the next run.
    beat(study._study_id, HEARTBEAT_PREFIX + drivers["live"][0], now + 3600)
    # "silent" never wrote a heartbeat.

    # 1 COMPLETE + 1 RUNNING elsewhere + the 2 orphans' re-runs.
    res = run_cli("run", path, "--n-trials", "4", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    trials = optuna.load_study(study_name="promises", storage=url).trials
    by_number = {t.number: t for t in trials}
    for name in ("stale", "silent"):
        t = by_number[number[name]]
        assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "orphaned", name
        (rerun,) = [r for r in trials if r.user_attrs.get("hpsearch.retry_of") == t.number]
        assert rerun.state == TrialState.COMPLETE and rerun.params == {"x": drivers[name][1]}
    live = by_number[number["live"]]
    assert live.state == TrialState.RUNNING and "fail_reason" not in live.user_attrs
    assert not [r for r in trials if r.user_attrs.get("hpsearch.retry_of") == live.number]
    assert len(trials) == 1 + 3 + 2
    # Each run's driver beats too (others see it alive): one key per driver, the last after the crafting.
    study = optuna.load_study(study_name="promises", storage=url)
    attrs = study._storage.get_study_system_attrs(study._study_id)
    mine = [k for k in attrs if k.startswith(HEARTBEAT_PREFIX) and k[len(HEARTBEAT_PREFIX):] not in
            {d for d, _ in drivers.values()}]
    assert len(mine) == 2 and max(attrs[k] for k in mine) >= now, mine
