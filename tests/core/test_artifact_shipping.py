"""Only a model that can be kept travels from the worker to the driver (issue 12, bug 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsearch.executors import TrialJob, execute_trial
from hpsearch.trainers import RecordingChannel, TrialResources
from hpsearch.trainers._python import PythonSettings, PythonTrainer

SAVES_A_MODEL = '''
def fit(params, ctx):
    model = ctx.artifact_dir / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"w" * 1_000_000)
    (ctx.artifact_dir / "curve.json").write_text("[]")
    return {"accuracy": params["acc"]}
'''


def _job(tmp_path: Path, acc: float, best: float | None, *, maximize: bool = True) -> TrialJob:
    (tmp_path / "fit.py").write_text(SAVES_A_MODEL)
    trainer = PythonTrainer(PythonSettings(function="fit.py:fit"), study_dir=tmp_path)
    return TrialJob(0, {"acc": acc}, trainer, TrialResources(cpus=1), "s", "accuracy",
                    work_dir=str(tmp_path / "work"), best_value=best, maximize=maximize)


@pytest.mark.parametrize(
    ("acc", "best", "maximize", "shipped"),
    [
        (0.9, None, True, True),    # the first trial is the best so far
        (0.9, 0.8, True, True),     # beats the best
        (0.7, 0.8, True, False),    # cannot be kept: its model stays in the worker
        (0.8, 0.8, True, False),    # a tie keeps the earlier model
        (0.7, 0.8, False, True),    # minimising: smaller is better
    ],
)
def test_model_ships_only_when_it_can_be_the_best(tmp_path, acc, best, maximize, shipped) -> None:
    outcome = execute_trial(_job(tmp_path, acc, best, maximize=maximize), RecordingChannel())
    assert outcome.failure is None, outcome.failure
    assert "curve.json" in outcome.artifacts  # other artifacts always travel
    assert ("model/weights.bin" in outcome.artifacts) is shipped
