"""Optuna's own storage contract suite, run against the in-memory mirror over SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from optuna.testing.pytest_storages import StorageTestCase

from hpsearch._mirror import MirroredStorage
from hpsearch.storage import open_storage
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
