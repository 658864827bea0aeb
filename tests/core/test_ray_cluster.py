"""Joining an existing Ray cluster: two nodes on 127.0.0.1, token auth, a custom resource."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import OBJECTIVES, run_cli
from tests.services import start_two_node_ray

pytestmark = pytest.mark.ray

STUDY = """
name: custom
objective: {metric: value, direction: minimize}
sampler: {name: random, seed: 0}
n_trials: 4
search_space:
  x: {type: float, low: -10, high: 10}
trainer: {kind: python, function: "obj.py:quadratic"}
resources: {cpus: 0.5, custom: {special: 1}}
"""


@pytest.fixture(scope="module")
def two_nodes():
    cluster, stop = start_two_node_ray(worker_resources={"special": 1})
    try:
        yield cluster
    finally:
        stop()


def test_trials_needing_a_custom_resource_run_on_the_node_that_has_it(two_nodes, write_study, tmp_path):
    path = write_study(STUDY, **{"obj.py": OBJECTIVES})
    res = run_cli("run", path, "--ray-address", two_nodes.address, cwd=tmp_path, env=two_nodes.env)
    assert res.returncode == 0, res.stderr[-3000:]
    trials = optuna.load_study(study_name="custom", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}").trials
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    nodes = {t.user_attrs["placement"]["node_id"] for t in trials}
    assert nodes == {two_nodes.worker_node_id}, (nodes, two_nodes)
    assert {t.user_attrs["placement"]["node_ip"] for t in trials} == {"127.0.0.1"}
    # RAY_ADDRESS works as well as --ray-address; without the custom resource trials may go anywhere.
    plain = write_study(STUDY.replace("name: custom", "name: plain").replace(", custom: {special: 1}", ""),
                        name="plain.yaml")
    res = run_cli("run", plain, cwd=tmp_path, env={**two_nodes.env, "RAY_ADDRESS": two_nodes.address})
    assert res.returncode == 0, res.stderr[-3000:]
    trials = optuna.load_study(study_name="plain", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}").trials
    assert {t.user_attrs["placement"]["node_id"] for t in trials} <= {two_nodes.head_node_id, two_nodes.worker_node_id}


@pytest.mark.slow  # 24 s: run by hand (pytest -m slow) to keep the default run under 10 minutes
def test_joining_without_the_token_fails_with_a_hint(two_nodes, write_study, tmp_path):
    path = write_study(STUDY, **{"obj.py": OBJECTIVES})
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(RAY_TMPDIR=two_nodes.env["RAY_TMPDIR"], RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64)
    res = subprocess.run([sys.executable, "-m", "hpsearch", "run", str(path), "--ray-address", two_nodes.address],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert "ray.address: cannot join Ray at" in last and "RAY_AUTH_TOKEN" in last
    assert "0" * 64 not in res.stderr
