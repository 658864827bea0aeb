"""The ``tracking:`` block: defaults resolved beside the study file, bad values refused with one line."""

from __future__ import annotations

import pytest

import hpsearch
from hpsearch import ConfigError
from hpsearch.tracking import make_trackers
from tests.conftest import run_cli
from tests.tracking.helpers import TRAINER, study_yaml


@pytest.mark.parametrize(
    ("tracking", "field", "says"),
    [
        ("mlflow: {tracking_uri: ''}", "tracking.mlflow.tracking_uri", "non-empty MLflow tracking URI"),
        ("mlflow: {experiment: '  '}", "tracking.mlflow.experiment", "non-empty MLflow experiment name"),
        ("mlflow: {uri: http://x}", "tracking.mlflow.uri", ""),
        ("mlflow: {log_model: maybe}", "tracking.mlflow.log_model", ""),
        ("tensorboard: {dir: 's3://bucket/tb'}", "tracking.tensorboard.dir", "must be a local folder"),
        ("wandb: {}", "tracking.wandb", ""),
    ],
)
def test_bad_tracking_values_are_refused_naming_file_and_field(write_study, tracking, field, says):
    path = write_study(study_yaml("bad", tracking))
    with pytest.raises(ConfigError) as info:
        hpsearch.load_config(path)
    text = str(info.value)
    assert "\n" not in text and f"{path}: {field}" in text and says in text, text


def test_the_cli_refuses_a_bad_tracking_block_with_exit_2_before_writing(write_study, tmp_path):
    path = write_study(study_yaml("bad", "tensorboard: {dir: ''}"), **{"obj.py": TRAINER})
    proc = run_cli("run", path)
    assert proc.returncode == 2
    assert "tracking.tensorboard.dir" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "hpsearch.db").exists()


def test_defaults_resolve_beside_the_study_file_and_uris_stay_as_written(write_study, tmp_path):
    both = "mlflow: {}\n  tensorboard: {}"
    mlflow, board = make_trackers(hpsearch.load_config(write_study(study_yaml("d", both))))
    assert mlflow.uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"  # type: ignore[attr-defined]
    assert mlflow.experiment == "d"  # type: ignore[attr-defined]
    assert board.root == tmp_path / "tensorboard" / "d"  # type: ignore[attr-defined]

    custom = "mlflow: {tracking_uri: 'http://127.0.0.1:5000', experiment: e, log_model: true}\n  tensorboard: {dir: tb}"
    mlflow, board = make_trackers(hpsearch.load_config(write_study(study_yaml("c", custom))))
    assert (mlflow.uri, mlflow.experiment, mlflow.log_model) == ("http://127.0.0.1:5000", "e", True)  # type: ignore[attr-defined]
    assert board.root == tmp_path / "tb" / "c"  # type: ignore[attr-defined]
    assert mlflow.key != make_trackers(hpsearch.load_config(write_study(study_yaml("d", both))))[0].key

    folder = make_trackers(hpsearch.load_config(write_study(study_yaml("f", "mlflow: {tracking_uri: runs/ml}"))))[0]
    assert folder.uri == f"sqlite:///{tmp_path / 'runs' / 'ml' / 'mlflow.db'}"  # type: ignore[attr-defined]
    assert make_trackers(hpsearch.load_config(write_study(study_yaml("n", "{}")))) == []


def test_a_tracker_whose_package_is_missing_is_refused_before_anything_is_written(write_study, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    path = write_study(study_yaml("nopkg", "mlflow: {}"), **{"obj.py": TRAINER})
    with pytest.raises(ConfigError, match=r"tracking\.mlflow: needs the mlflow package; install it with pip install"):
        hpsearch.run_study(path, progress=False)
    assert not (tmp_path / "hpsearch.db").exists()
