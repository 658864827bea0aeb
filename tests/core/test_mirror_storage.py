"""Optuna's own storage contract suite, run against the in-memory mirror over SQLite."""

from __future__ import annotations

import pytest
from optuna.testing.pytest_storages import StorageTestCase

from hpsearch._mirror import MirroredStorage
from hpsearch.storage import open_storage


class TestMirroredStorage(StorageTestCase):
    @pytest.fixture
    def storage(self, tmp_path):
        # refresh_s=0: every read also syncs, as the contract expects other writers' data at once.
        return MirroredStorage(open_storage(f"sqlite:///{tmp_path / 'm.db'}"), refresh_s=0.0)


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
