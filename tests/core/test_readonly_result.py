"""A StudyResult (what `hpsearch show`/`export` and hpsearch.load_result read) cannot write its storage."""

import hashlib

import optuna
import pytest

from hpsearch.views import StudyResult


def test_result_reads_the_study_and_any_write_raises_leaving_the_file_unchanged(tmp_path):
    db = tmp_path / "r.db"
    url = f"sqlite:///{db}"
    study = optuna.create_study(storage=url, study_name="r")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    result = StudyResult("r", url)
    assert len(result.study.trials) == 3 and result.best_params.keys() == {"x"}
    with pytest.raises(optuna.exceptions.StorageInternalError) as err:
        result.study.set_user_attr("k", 1)
    assert "readonly" in str(err.value.__cause__)  # refused by the connection, not by bad data
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
