"""A Ray node lost mid-trial (issue 13): the trial is retried on another node, from its checkpoint.

A three-node Ray on 127.0.0.1: a head without CPUs and two 1-CPU worker nodes, each
started in a session of its own. The trial checkpoints after each epoch and is held
in epoch 3; the test kills every process of the node that runs it (its raylet, its
workers), as a preempted machine would go. Checkpoints live in an absolute folder
both nodes reach (one machine here: the same disk stands for a shared mount).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from optuna.trial import TrialState

from tests.core.test_checkpoints import _trials, _uninterrupted, _write
from tests.gate import wait_until
from tests.services import start_two_node_ray

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def three_nodes():
    cluster, stop = start_two_node_ray(worker_resources={"a": 1}, head_cpus=0, more_workers=({"b": 1},))
    try:
        yield cluster
    finally:
        stop()


def _kill_session(sid: int) -> set[int]:
    """SIGKILL every process of session ``sid``; their pids."""
    killed = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    os.kill(int(entry), signal.SIGKILL)
                    killed.add(int(entry))
            except (ProcessLookupError, PermissionError):
                continue
    return killed


def test_a_node_lost_mid_trial_is_retried_on_another_node_from_its_checkpoint(three_nodes, tmp_path):
    ckpts = tmp_path / "shared-ckpts"
    path = _write(tmp_path / "run", executor="ray", extra=f"checkpoints: {{path: {ckpts}}}")
    env = {**os.environ, **three_nodes.env, "RAY_ADDRESS": three_nodes.address}
    proc = subprocess.Popen([sys.executable, "-m", "hpsearch", "run", str(path), "-q"], cwd=path.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    held = path.parent / "held"
    wait_until("the trial held in epoch 3", held.exists, proc)
    worker = int(held.read_text())
    assert os.getsid(worker) != os.getsid(proc.pid)  # on a worker node, not in the driver's session
    killed = _kill_session(os.getsid(worker))  # the whole node: raylet, workers, agents
    assert worker in killed and len(killed) > 2
    (path.parent / "release").write_text("")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    first, second = _trials(path.parent)
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"].startswith("worker died")
    assert second.state == TrialState.COMPLETE
    assert second.user_attrs["resumed_from"] == {"trial": 0, "step": 2}
    assert json.loads((path.parent / "started-1.json").read_text())["from"] == 2
    # It ran on the node that survived.
    assert second.user_attrs["placement"]["pid"] not in killed
    assert second.user_attrs["placement"]["node_id"] in {three_nodes.worker_node_id, *three_nodes.more_node_ids}
    assert second.value == _uninterrupted(tmp_path).value
