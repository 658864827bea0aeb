"""TensorBoard tracking read back with tensorboard's own reader, metadata parser and server.

Each trial is a run folder with its curve, final metrics and the HParams plugin's session
start/end; a real ``tensorboard`` on 127.0.0.1 lists the trials in its HParams tab.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import hpsearch
from tests.services import free_port, require_module
from tests.tracking.helpers import TRAINER, study_yaml


def _read(folder: Path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    return acc


def _hparams_groups(logdir: Path) -> list[dict]:
    """The HParams tab's session groups, as a real ``tensorboard`` serves them."""
    port = free_port()
    cmd = [str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(logdir), "--host", "127.0.0.1",
           "--port", str(port), "--reload_interval", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    body = {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE"],
            "colParams": [], "startIndex": 0, "sliceSize": 100}  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/data/plugin/hparams/session_groups",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    groups: list[dict] = json.loads(resp.read())["sessionGroups"]
                if groups or time.monotonic() > deadline:
                    return groups
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_each_trial_is_a_run_with_its_curve_final_metrics_and_hparams_listed_by_tensorboard(write_study):
    require_module("tensorboard", "pip install -e '.[tensorboard]'")
    from tensorboard.plugins.hparams import api_pb2, metadata

    path = write_study(study_yaml("tb", "tensorboard: {}", n_trials=4), **{"obj.py": TRAINER})
    hpsearch.run_study(path, progress=False)
    trials = hpsearch.load_result(path).study.get_trials()
    assert {t.state.name for t in trials} == {"COMPLETE", "FAIL"}
    root = path.parent / "tensorboard" / "tb"  # default: tensorboard/ beside the study, a folder per study
    assert sorted(p.name for p in root.iterdir()) == [f"trial-{t.number:05d}" for t in trials]
    for t in trials:
        acc = _read(root / f"trial-{t.number:05d}")
        curve = [(e.step, e.value) for e in acc.Scalars("score")]
        assert curve == [(s, pytest.approx(v, rel=1e-6)) for s, v in sorted(t.intermediate_values.items())]
        start = metadata.parse_session_start_info_plugin_data(
            acc.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
        )
        assert {k: v.number_value or v.string_value for k, v in start.hparams.items()} == t.params
        end = metadata.parse_session_end_info_plugin_data(
            acc.SummaryMetadata(metadata.SESSION_END_INFO_TAG).plugin_data.content
        )
        if t.state.name == "COMPLETE":
            assert end.status == api_pb2.STATUS_SUCCESS
            assert acc.Scalars("final/score")[0].value == pytest.approx(t.value, rel=1e-6)
            assert acc.Scalars("final/extra")[0].value == 1.5
        else:
            assert end.status == api_pb2.STATUS_FAILURE and "final/score" not in acc.Tags()["scalars"]

    files = {p: p.stat().st_mtime_ns for p in root.rglob("events.out.tfevents.*")}
    assert len(files) == len(trials)
    hpsearch.run_study(path, progress=False)  # nothing to run, nothing written again
    assert {p: p.stat().st_mtime_ns for p in root.rglob("events.out.tfevents.*")} == files

    groups = {g["name"]: g for g in _hparams_groups(path.parent / "tensorboard")}
    assert sorted(groups) == [f"trial-{t.number:05d}" for t in trials]
    for t in trials:
        group = groups[f"trial-{t.number:05d}"]
        assert group["hparams"] == pytest.approx(t.params)
        metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        if t.value is not None:
            assert metrics["final/score"] == pytest.approx(t.value, rel=1e-6)


def test_a_half_written_trial_folder_is_written_anew(write_study):
    """A folder a killed run left (no reference stored) is replaced whole: one event file, the full curve."""
    require_module("tensorboard", "pip install -e '.[tensorboard]'")
    path = write_study(study_yaml("tbk", "tensorboard: {dir: boards}", n_trials=2), **{"obj.py": TRAINER})
    stale = path.parent / "boards" / "tbk" / "trial-00000"
    stale.mkdir(parents=True)
    (stale / "events.out.tfevents.0.stale").write_bytes(b"half")
    hpsearch.run_study(path, progress=False)
    assert not (stale / "events.out.tfevents.0.stale").exists()
    assert len(list(stale.iterdir())) == 1
    assert len(_read(stale).Scalars("score")) == 5


def test_a_whole_search_import_logs_every_trial_it_adds(write_study):
    """``sklearn_search`` adds all its trials at one trial end: the catch-up logs each of them."""
    require_module("tensorboard", "pip install -e '.[tensorboard]'")
    path = write_study(
        """
        name: grid
        objective: {metric: accuracy, direction: maximize}
        executor: local
        trainer:
          kind: sklearn_search
          strategy: grid_search_cv
          estimator: sklearn.tree.DecisionTreeClassifier
          estimator_params: {random_state: 0}
          dataset: iris
          cv: 3
          scoring: accuracy
          param_grid: {max_depth: [1, 2, 3], min_samples_split: [2, 4]}
        tracking:
          tensorboard: {}
        """
    )
    hpsearch.run_study(path, progress=False)
    trials = hpsearch.load_result(path).study.get_trials()
    assert len(trials) == 6
    root = path.parent / "tensorboard" / "grid"
    assert sorted(p.name for p in root.iterdir()) == [f"trial-{t.number:05d}" for t in trials]
    for t in trials:
        acc = _read(root / f"trial-{t.number:05d}")
        assert acc.Scalars("final/accuracy")[0].value == pytest.approx(t.value, rel=1e-6)
