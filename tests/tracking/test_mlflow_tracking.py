"""MLflow tracking against the real thing: an ``mlflow server`` (SQLite backend) on 127.0.0.1, and local stores.

Read back with ``MlflowClient``: one study run, one nested run per trial with its params,
curve, final metrics, state, fail reason and artifacts; nothing twice after a re-run, a
server that went down mid-study (caught up on the next run), or a ``kill -9`` of the driver.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import optuna
import pytest

import hpsearch
from tests.conftest import run_cli
from tests.services import require_module
from tests.tracking.helpers import TRAINER, MlflowServer, child_runs, numbers, study_yaml


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """One ``mlflow server`` for the module (about 10 s to start); tests use their own experiments."""
    require_module("mlflow", "pip install -e '.[mlflow]'")
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


def _trials(path: Path) -> list[optuna.trial.FrozenTrial]:
    return hpsearch.load_result(path).study.get_trials()


@pytest.mark.slow  # the server takes 10 to 30 s to start on 2 busy cores; the local stores run by default
def test_server_gets_one_study_run_and_one_nested_run_per_trial_with_everything(write_study, mlflow_server):
    from mlflow import MlflowClient

    tracking = f"mlflow: {{tracking_uri: '{mlflow_server.url}', experiment: full}}"
    path = write_study(study_yaml("full", tracking, n_trials=6), **{"obj.py": TRAINER})
    result = hpsearch.run_study(path, progress=False)
    trials = _trials(path)
    assert {t.state.name for t in trials} == {"COMPLETE", "FAIL"}  # seed 3 draws small and large slopes
    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("full")
    study_runs = client.search_runs([exp.experiment_id], "tags.`hpsearch.role` = 'study'")
    assert len(study_runs) == 1
    parent = study_runs[0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_score"] == pytest.approx(result.best_value)
    runs = {int(r.data.tags["hpsearch.trial_number"]): r for r in child_runs(mlflow_server.url, "full")}
    assert sorted(runs) == [t.number for t in trials]
    for t in trials:
        run = runs[t.number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params == {k: str(v) for k, v in t.params.items()}
        assert run.data.tags["hpsearch.state"] == t.state.name
        history = client.get_metric_history(run.info.run_id, "score")
        assert [(m.step, m.value) for m in history] == sorted(t.intermediate_values.items())
        # A failed trial keeps its trial.log too (hpsearch stores it; MLflow gets every artifact).
        expected = ["notes.txt"] if t.state.name == "COMPLETE" else ["notes.txt", "trial.log"]
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == expected
        text = Path(client.download_artifacts(run.info.run_id, "notes.txt", str(path.parent))).read_text()
        assert text == f"trial {t.number}"
        if t.state.name == "COMPLETE":
            assert run.info.status == "FINISHED"
            assert run.data.metrics == {"score": pytest.approx(t.value), "extra": 1.5}
        else:
            assert run.info.status == "FAILED" and "slope too small" in run.data.tags["hpsearch.fail_reason"]

    hpsearch.run_study(path, progress=False)  # nothing left to run: nothing logged again
    hpsearch.run_study(path, more=1, progress=False)
    assert numbers(child_runs(mlflow_server.url, "full")) == [t.number for t in _trials(path)]
    assert len(_trials(path)) > 6


@pytest.mark.slow
def test_a_server_down_mid_study_warns_once_never_fails_it_and_the_next_run_catches_up(
    write_study, mlflow_server, monkeypatch, caplog
):
    """Trial 2 stops the server: the study still ends well, with one warning; after a restart a
    re-run with nothing to run logs every missed trial, none twice."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a request cut mid-way fails at once
    tracking = f"mlflow: {{tracking_uri: '{mlflow_server.url}', experiment: down}}"
    path = write_study(study_yaml("down", tracking, n_trials=5, function="stop_server_at_2"), **{"obj.py": TRAINER})
    assert mlflow_server.proc is not None
    (path.parent / "server.pid").write_text(str(mlflow_server.proc.pid))
    try:
        with caplog.at_level(logging.WARNING, logger="hpsearch.tracking"):
            hpsearch.run_study(path, progress=False)
        assert not mlflow_server.up()
        warnings = [r.getMessage() for r in caplog.records if r.name == "hpsearch.tracking"]
        assert len(warnings) == 1 and "the study goes on" in warnings[0], warnings
        assert mlflow_server.url in warnings[0]
    finally:
        mlflow_server.stop()
        mlflow_server.start()
    expected = [t.number for t in _trials(path)]
    assert len(expected) >= 5
    hpsearch.run_study(path, progress=False)  # nothing to run: the catch-up alone
    assert numbers(child_runs(mlflow_server.url, "down")) == expected
    hpsearch.run_study(path, progress=False)
    assert numbers(child_runs(mlflow_server.url, "down")) == expected


@pytest.mark.slow
def test_kill_9_of_the_driver_then_a_rerun_logs_no_trial_twice(write_study, mlflow_server):
    """Trial 3 waits until MLflow holds trials 0-2 (their references not yet stored) and kills
    its driver; a half-written run is there too. The re-run logs each trial exactly once."""
    from mlflow import MlflowClient

    tracking = f"mlflow: {{tracking_uri: '{mlflow_server.url}', experiment: killed}}"
    path = write_study(study_yaml("killed", tracking, n_trials=6, function="kill_driver_at_3"), **{"obj.py": TRAINER})
    env = {"HPS_TEST_MLFLOW_URI": mlflow_server.url, "HPS_TEST_MLFLOW_EXPERIMENT": "killed"}
    first = run_cli("run", path, env=env)
    assert first.returncode == -9, first.stderr
    assert numbers(child_runs(mlflow_server.url, "killed")) == [0, 1, 2]
    client = MlflowClient(mlflow_server.url)
    parent = client.search_runs(
        [client.get_experiment_by_name("killed").experiment_id], "tags.`hpsearch.role` = 'study'"
    )[0]
    half = client.create_run(  # what a kill in the middle of logging trial 3 leaves: no hpsearch.logged tag
        parent.info.experiment_id,
        tags={"mlflow.parentRunId": parent.info.run_id, "hpsearch.trial_number": "3"},
    )
    second = run_cli("run", path, env=env)
    assert second.returncode == 0, second.stderr
    trials = _trials(path)
    assert trials[3].state.name == "FAIL"  # the killed trial, recovered; its params run again
    runs = child_runs(mlflow_server.url, "killed")
    assert numbers(runs) == [t.number for t in trials]
    assert all(r.data.tags.get("hpsearch.logged") == "1" for r in runs)
    assert client.get_run(half.info.run_id).info.lifecycle_stage == "deleted"


def test_default_store_is_a_mlruns_folder_beside_the_study(write_study):
    """No URI: ``mlruns/`` beside the study (MLflow's SQLite store and artifacts), read back as MLflow reads it."""
    require_module("mlflow", "pip install -e '.[mlflow]'")
    path = write_study(study_yaml("local", "mlflow: {}", n_trials=3), **{"obj.py": TRAINER})
    hpsearch.run_study(path, progress=False)
    uri = f"sqlite:///{path.parent / 'mlruns' / 'mlflow.db'}"
    runs = child_runs(uri, "local")  # the experiment defaults to the study's name
    trials = _trials(path)
    assert numbers(runs) == [t.number for t in trials]
    artifacts = sorted(p.name for p in (path.parent / "mlruns" / "artifacts").rglob("notes.txt"))
    assert artifacts == ["notes.txt"] * len(trials)


def test_file_store_uri(write_study, tmp_path, monkeypatch):
    """A ``file://`` URI: MLflow's plain-folder store, where MLflow allows it (MLflow 3: MLFLOW_ALLOW_FILE_STORE)."""
    require_module("mlflow", "pip install -e '.[mlflow]'")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "filestore"
    tracking = f"mlflow: {{tracking_uri: '{store.as_uri()}', experiment: files}}"
    path = write_study(study_yaml("files", tracking, n_trials=3), **{"obj.py": TRAINER})
    hpsearch.run_study(path, progress=False)
    hpsearch.run_study(path, progress=False)
    runs = child_runs(store.as_uri(), "files")
    trials = _trials(path)
    assert numbers(runs) == [t.number for t in trials]
    best = max((t for t in trials if t.value is not None), key=lambda t: t.value)
    run = next(r for r in runs if r.data.tags["hpsearch.trial_number"] == str(best.number))
    assert math.isclose(run.data.metrics["score"], best.value)
    assert (store / "meta.yaml").exists() or any(store.glob("*/meta.yaml"))


def test_a_store_that_fails_warns_once_and_the_next_run_writes_what_it_missed(write_study, caplog):
    """``mlruns`` is a file, so MLflow's store cannot be made: one warning, the study ends well;
    once the way is clear, a re-run with nothing to run logs every trial, and a third run nothing more."""
    require_module("mlflow", "pip install -e '.[mlflow]'")
    path = write_study(study_yaml("blocked", "mlflow: {}", n_trials=4), **{"obj.py": TRAINER})
    blocker = path.parent / "mlruns"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="hpsearch.tracking"):
        result = hpsearch.run_study(path, progress=False)
    assert result.counts().get("COMPLETE") == 4
    warnings = [r.getMessage() for r in caplog.records if r.name == "hpsearch.tracking"]
    assert len(warnings) == 1 and "the study goes on" in warnings[0] and "mlruns" in warnings[0], warnings
    blocker.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hpsearch.tracking"):
        hpsearch.run_study(path, progress=False)
    assert not [r for r in caplog.records if r.name == "hpsearch.tracking"]
    uri = f"sqlite:///{blocker / 'mlflow.db'}"
    expected = [t.number for t in _trials(path)]
    assert numbers(child_runs(uri, "blocked")) == expected
    hpsearch.run_study(path, progress=False)
    assert numbers(child_runs(uri, "blocked")) == expected


def test_log_model_sends_the_model_that_hpsearch_kept(write_study):
    """``log_model: true``: a trial whose model hpsearch kept (a new best) has ``model.tar`` in MLflow too."""
    require_module("mlflow", "pip install -e '.[mlflow]'")
    from mlflow import MlflowClient

    from tests.tracking.helpers import MODEL_TRAINER

    path = write_study(
        study_yaml("models", "mlflow: {log_model: true}", function="with_model"), **{"obj.py": MODEL_TRAINER}
    )
    hpsearch.run_study(path, progress=False)
    uri = f"sqlite:///{path.parent / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri)
    kept = {t.number for t in _trials(path) if "model.tar" in t.user_attrs.get("artifacts", {})}
    assert kept  # the first COMPLETE trial is a new best
    for run in child_runs(uri, "models"):
        listed = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert ("model.tar" in listed) == (int(run.data.tags["hpsearch.trial_number"]) in kept)


def test_a_tracker_back_mid_study_gets_what_it_missed_in_the_same_run(write_study, monkeypatch, caplog):
    """Blocked for trials 0-1, cleared by trial 2: the same run logs every trial, with one warning and one 'back'."""
    require_module("mlflow", "pip install -e '.[mlflow]'")
    import hpsearch.tracking._callback as callback

    monkeypatch.setattr(callback, "RETRY_EVERY_S", 0.0)  # try again at every trial end, not every 10 s
    path = write_study(study_yaml("back", "mlflow: {}", n_trials=6, function="unblock_at_2"), **{"obj.py": TRAINER})
    (path.parent / "mlruns").write_text("not a folder")

    class Signal(logging.Handler):  # tells trial 2 that the tracker has failed
        def emit(self, record: logging.LogRecord) -> None:
            (path.parent / "warned").touch()

    handler = Signal(logging.WARNING)
    logging.getLogger("hpsearch.tracking").addHandler(handler)
    try:
        with caplog.at_level(logging.WARNING, logger="hpsearch.tracking"):
            hpsearch.run_study(path, progress=False)
    finally:
        logging.getLogger("hpsearch.tracking").removeHandler(handler)
    messages = [r.getMessage() for r in caplog.records if r.name == "hpsearch.tracking"]
    assert len(messages) == 2 and "the study goes on" in messages[0] and "back" in messages[1], messages
    uri = f"sqlite:///{path.parent / 'mlruns' / 'mlflow.db'}"
    assert numbers(child_runs(uri, "back")) == [t.number for t in _trials(path)]
