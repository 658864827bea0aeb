"""Data-parallel trials: torch DDP through Ray Train, gloo on 2 CPU workers.

The NCCL/GPU branch cannot run here (no GPU); it differs only in the backend
name and device, chosen from resources.gpus.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import DDP, run_cli

# The text trainer's DDP tests (tests/text) run in the default suite; these
# python-function ones cover the same Ray Train path and are kept for `-m slow`.
pytestmark = [pytest.mark.ray, pytest.mark.slow]

STUDY = """
name: ddp
objective: {metric: neg_loss, direction: maximize}
sampler: {name: random, seed: 0}
n_trials: 1
resources: {cpus: 0.9, workers: 2}
search_space:
  lr: {type: float, low: 0.01, high: 0.1, log: true}
trainer: {kind: python, function: "obj.py:ddp_fit"}
"""


def test_two_gloo_ranks_same_params_same_weights(write_study, tmp_path):
    path = write_study(STUDY, **{"obj.py": DDP})
    res = run_cli("run", path, cwd=tmp_path, timeout=400)
    assert res.returncode == 0, res.stderr[-4000:]
    study = optuna.load_study(study_name="ddp", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    ranks = trial.user_attrs["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["params"] == ranks[1]["params"] == trial.params
    assert ranks[0]["weights_checksum"] == ranks[1]["weights_checksum"]
    assert trial.user_attrs["world_size"] == 2
    assert sorted(trial.intermediate_values) == [1, 2, 3]  # rank 0 reported each epoch


def test_pruned_ddp_trial_ends_on_every_rank(write_study, tmp_path):
    text = STUDY.replace("n_trials: 1", "n_trials: 1\npruner: {name: threshold, options: {lower: 1000.0}}")
    text = text.replace('function: "obj.py:ddp_fit"', 'function: "obj.py:ddp_fit", defaults: {epochs: 50}')
    path = write_study(text, **{"obj.py": DDP})
    res = run_cli("run", path, cwd=tmp_path, timeout=400)
    assert res.returncode == 0, res.stderr[-4000:]
    study = optuna.load_study(study_name="ddp", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]
