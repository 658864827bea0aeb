"""Optuna's own storage contract suite, run against the in-memory mirror over SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os

import pytest
from optuna.testing.pytest_storages import StorageTestCase

from hpsearch.storage._mirror import MirroredStorage
from hpsearch.storage._urls import open_storage
from tests.services import pg_empty_url, pg_module_db, pg_server  # noqa: F401 - fixtures

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def storage_url(request, tmp_path):
    """An empty database: a new SQLite file, or the module's PostgreSQL database, truncated."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return request.getfixturevalue("pg_empty_url")


class TestMirroredStorage(StorageTestCase):
    @pytest.fixture
    def storage(self, storage_url):
        # refresh_s=0: every read also syncs, as the contract expects other writers' data at once.
        backend = open_storage(storage_url)
        yield MirroredStorage(backend, refresh_s=0.0)
        backend.engine.dispose()  # let the database be dropped


def test_reads_come_from_memory_and_see_own_writes(tmp_path):
    import optuna

    storage = MirroredStorage(open_storage(f"sqlite:///{tmp_path / 'm.db'}"), refresh_s=3600)
    study = optuna.create_study(storage=storage)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.report(0.5, 1)
    study.tell(trial, 0.25)
    (t,) = storage.get_all_trials(study._study_id)
    assert t.value == 0.25 and t.intermediate_values == {1: 0.5} and "x" in t.params
    # The database holds the same thing.
    (db,) = open_storage(f"sqlite:///{tmp_path / 'm.db'}").get_all_trials(study._study_id)
    assert db.value == 0.25 and db.params == t.params and db.intermediate_values == {1: 0.5}


# ------------------------------------------------------------ batches


def _in_own_batch(name: str):
    def write(self, *args, **kwargs):
        with self.batch():
            return getattr(MirroredStorage, name)(self, *args, **kwargs)

    return write


class _EveryWriteBatched(MirroredStorage):
    """Each trial write goes through a batch of its own: the contract suite on the batched path."""

    set_trial_param = _in_own_batch("set_trial_param")
    set_trial_user_attr = _in_own_batch("set_trial_user_attr")
    set_trial_system_attr = _in_own_batch("set_trial_system_attr")
    set_trial_intermediate_value = _in_own_batch("set_trial_intermediate_value")
    set_trial_state_values = _in_own_batch("set_trial_state_values")


class TestBatchedMirroredStorage(StorageTestCase):
    @pytest.fixture
    def storage(self, storage_url):
        backend = open_storage(storage_url)
        yield _EveryWriteBatched(backend, refresh_s=0.0)
        backend.engine.dispose()


def _count_write_transactions(target) -> tuple[list[int], callable]:
    """Count committed transactions that wrote (INSERT/UPDATE/DELETE); returns (counter, remove)."""
    import sqlalchemy

    commits = [0]

    def on_execute(conn, cursor, statement, *args):
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            conn.info["hps_wrote"] = True

    def on_commit(conn):
        if conn.info.pop("hps_wrote", False):
            commits[0] += 1

    sqlalchemy.event.listen(target, "before_cursor_execute", on_execute)
    sqlalchemy.event.listen(target, "commit", on_commit)

    def remove():
        sqlalchemy.event.remove(target, "before_cursor_execute", on_execute)
        sqlalchemy.event.remove(target, "commit", on_commit)

    return commits, remove


def _db_trial(path, study_id):
    (t,) = open_storage(f"sqlite:///{path}").get_all_trials(study_id)
    return t


def test_a_batch_commits_once_at_its_end_and_reads_see_it_before(tmp_path):
    import optuna

    backend = open_storage(f"sqlite:///{tmp_path / 'b.db'}")
    # refresh_s=0: every read re-syncs from the database, and must keep the queued writes.
    storage = MirroredStorage(backend, refresh_s=0.0)
    study = optuna.create_study(storage=storage)
    commits, _ = _count_write_transactions(backend.engine)
    with storage.batch():
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        trial.set_user_attr("u", 1)
        storage.set_trial_system_attr(trial._trial_id, "s", "a")
        assert commits[0] == 1  # the trial's creation only
        t = storage.get_all_trials(study._study_id)[0]
        assert "x" in t.params and t.user_attrs == {"u": 1} and t.system_attrs == {"s": "a"}
        db = _db_trial(tmp_path / "b.db", study._study_id)
        assert db.params == {} and db.user_attrs == {}
    assert commits[0] == 2
    db = _db_trial(tmp_path / "b.db", study._study_id)
    assert db.params == t.params and db.user_attrs == {"u": 1} and db.system_attrs == {"s": "a"}
    # Attributes and the final state: one transaction.
    with storage.batch():
        trial.set_user_attr("metrics", {"v": 0.5})
        trial.set_user_attr("placement", {"host": "h"})
        study.tell(trial, 0.5)
        assert commits[0] == 3
    assert commits[0] == 3
    db = _db_trial(tmp_path / "b.db", study._study_id)
    assert db.state.name == "COMPLETE" and db.value == 0.5
    assert db.user_attrs == {"u": 1, "metrics": {"v": 0.5}, "placement": {"host": "h"}}
    assert storage.get_trial(trial._trial_id) == db


def test_a_failed_batch_writes_nothing_and_memory_follows_the_database(tmp_path):
    import optuna

    backend = open_storage(f"sqlite:///{tmp_path / 'f.db'}")
    storage = MirroredStorage(backend, refresh_s=3600)
    study = optuna.create_study(storage=storage)
    first = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(first, 0.1)
    trial = study.ask()
    with pytest.raises(ValueError, match="distribution kind") as err:
        with storage.batch():
            trial.set_user_attr("u", 1)
            # Same name, another distribution: Optuna refuses it, at commit.
            trial.suggest_int("x", 0, 3)
    assert any(entry.name == "_write_batch" for entry in err.traceback)
    got = storage.get_trial(trial._trial_id)
    assert got.params == {} and got.user_attrs == {}
    db = open_storage(f"sqlite:///{tmp_path / 'f.db'}").get_trial(trial._trial_id)
    assert db.params == {} and db.user_attrs == {}


def test_a_batch_whose_acknowledgement_was_lost_counts_once(tmp_path, monkeypatch):
    from tests.services import require_module

    require_module("psycopg", "pip install -e '.[postgres]'")  # skips; fails under CI
    import optuna

    from tests.core.test_postgres import _ack_lost_once

    storage = MirroredStorage(open_storage(f"sqlite:///{tmp_path / 'r.db'}"), retry_s=10)
    study = optuna.create_study(storage=storage)
    _ack_lost_once(monkeypatch, storage, "_write_batch")
    with storage.batch():  # params: a re-insert would violate the key; the retry sees them stored
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    assert storage.retries == 1
    _ack_lost_once(monkeypatch, storage, "_write_batch")
    with storage.batch():  # the final state: the retry finds it finished as asked
        trial.set_user_attr("u", 1)
        study.tell(trial, 0.5)
    assert storage.retries == 2
    db = _db_trial(tmp_path / "r.db", study._study_id)
    assert db.state.name == "COMPLETE" and db.value == 0.5 and db.user_attrs == {"u": 1} and "x" in db.params


# ------------------------------------------------------------ what a run writes

#: Runs the real CLI with every committed write transaction of the driver recorded, as the
#: list of tables each one wrote, in the JSON file $HPS_TX_OUT.
_COUNTING_CLI = """
import atexit, json, os, runpy, sys
import sqlalchemy

txs = []

def on_execute(conn, cursor, statement, *args):
    words = statement.split()
    if words and words[0].upper() in ("INSERT", "UPDATE", "DELETE"):
        table = words[2] if words[0].upper() in ("INSERT", "DELETE") else words[1]
        conn.info.setdefault("hps_tables", set()).add(table.strip('"'))

def on_commit(conn):
    tables = conn.info.pop("hps_tables", None)
    if tables:
        txs.append(sorted(tables))

def on_rollback(conn):
    conn.info.pop("hps_tables", None)

sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", on_execute)
sqlalchemy.event.listen(sqlalchemy.engine.Engine, "commit", on_commit)
sqlalchemy.event.listen(sqlalchemy.engine.Engine, "rollback", on_rollback)

import hpsearch.views._notes, hpsearch.study._recovery

# Both are paced by the clock (a heartbeat every 30 s, the dashboard note at most every
# 10 s): one heartbeat per run and no note keep the count independent of the run's length.
hpsearch.study._recovery.HEARTBEAT_EVERY_S = 1e9
hpsearch.views._notes.StudyNote.maybe_write = lambda self, study, status: None
atexit.register(lambda: open(os.environ["HPS_TX_OUT"], "w").write(json.dumps(txs)))
sys.argv = ["hpsearch", *sys.argv[1:]]
runpy.run_module("hpsearch", run_name="__main__")
"""

REPORTING = """
def fit(params, ctx):
    for step in range(1, int(params["k"]) + 1):
        ctx.report(params["x"] * step, step)
        ctx.should_prune()
    for i in range(int(params["files"])):
        (ctx.artifact_dir / f"log{i}.txt").write_text(f"trial {ctx.trial_number}")
    ctx.set_user_attr("steps", int(params["k"]))
    return (params["x"] - 2) ** 2
"""


def _counted_run(tmp_path, *args: str) -> list[list[str]]:
    import subprocess
    import sys

    out = tmp_path / "tx.json"
    res = subprocess.run([sys.executable, "-c", _COUNTING_CLI, "run", *map(str, args), "--quiet"],
                         cwd=tmp_path, env={**os.environ, "HPS_TX_OUT": str(out)},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.ray
def test_the_manager_writes_three_transactions_per_trial_and_one_per_report(write_study, tmp_path):
    """Counted through Ray, with reports and artifacts: the exact number the README states."""
    from collections import Counter

    import optuna

    n, k, files = 4, 3, 2
    path = write_study(f"""
        name: tx
        objective: {{metric: value, direction: minimize}}
        sampler: {{name: random, seed: 0}}
        n_trials: {n}
        executor: ray
        max_concurrent_trials: 2
        search_space:
          x: {{type: float, low: -10, high: 10}}
          k: [{k}]
          files: [{files}]
        trainer: {{kind: python, function: "fit.py:fit"}}
        """, **{"fit.py": REPORTING})
    txs = _counted_run(tmp_path, path)
    study = optuna.load_study(study_name="tx", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * n
    for t in trials:  # everything a trial wrote is there
        assert len(t.intermediate_values) == k and t.user_attrs["steps"] == k
        assert sorted(t.user_attrs["artifacts"]) == [f"log{i}.txt" for i in range(files)]
        assert len([a for a in t.system_attrs if a.startswith("artifacts:")]) == files

    # A fresh database: Optuna stamps its schema (2) and creates the study (1); the manager
    # names its objective (1), writes each study attribute (1 each) and its first heartbeat (1).
    setup = 2 + 1 + 1 + len(study.user_attrs) + 1
    # Per trial: its creation; its params; its end (attributes, artifact references, state).
    per_trial, per_report = 3, 1
    kinds = Counter(tuple(t) for t in txs)
    assert len(txs) == setup + n * per_trial + n * k * per_report, kinds
    assert kinds[("trial_intermediate_values",)] == n * k
    assert kinds[("trial_params",)] == n
    assert kinds[("trial_system_attributes", "trials")] == n  # created with the driver's stamp
    assert kinds[("trial_system_attributes", "trial_user_attributes", "trial_values", "trials")] == n

    # Resumed with another executor: of the study attributes only the resolved config
    # changed (1), then the heartbeat (1).
    txs = _counted_run(tmp_path, path, "--more", "2", "--executor", "local")
    assert len(optuna.load_study(study_name="tx", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}").trials) == n + 2
    kinds = Counter(tuple(t) for t in txs)
    assert len(txs) == 2 + 2 * per_trial + 2 * k * per_report, kinds
    assert kinds[("study_user_attributes",)] == 1
