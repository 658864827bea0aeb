"""Shared by the tracking tests: a real ``mlflow server`` on 127.0.0.1, study files, read-back helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.services import free_port

#: The trainer of the tracking studies: a curve of 5 reports, a file artifact, a FAIL for small slopes.
TRAINER = '''
import os, signal, time
from pathlib import Path

def curve(params, ctx):
    value = 0.0
    for step in range(1, 6):
        value = params["slope"] * step
        ctx.report(value, step)
    (ctx.artifact_dir / "notes.txt").write_text(f"trial {ctx.trial_number}")
    if params["slope"] < 0.3:
        raise ValueError("slope too small")
    return {"score": value, "extra": 1.5}

def stop_server_at_2(params, ctx):
    """Trial 2 stops the MLflow server (pid in server.pid) before it runs: the server goes down mid-study."""
    pid_file = Path(__file__).with_name("server.pid")
    if ctx.trial_number == 2 and pid_file.exists():
        os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        pid_file.unlink()
        time.sleep(1.0)
    return curve(params, ctx)

def unblock_at_2(params, ctx):
    """Trial 2 waits until the tracker has failed (the test writes ``warned``), then removes the file that
    stands where the MLflow store's folder goes: the tracker comes back mid-study."""
    blocker = Path(__file__).with_name("mlruns")
    if ctx.trial_number == 2 and blocker.is_file():
        deadline = time.monotonic() + 60
        while not Path(__file__).with_name("warned").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        blocker.unlink()
    return curve(params, ctx)

def kill_driver_at_3(params, ctx):
    """Trial 3 waits until MLflow holds trials 0-2, then kills its own driver (local executor): kill -9."""
    marker = Path(__file__).with_name("killed")
    if ctx.trial_number == 3 and not marker.exists():
        from mlflow import MlflowClient
        client = MlflowClient(os.environ["HPS_TEST_MLFLOW_URI"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            exp = client.get_experiment_by_name(os.environ["HPS_TEST_MLFLOW_EXPERIMENT"])
            runs = client.search_runs([exp.experiment_id], "tags.`hpsearch.logged` = '1'") if exp else []
            if len(runs) >= 3:
                break
            time.sleep(0.2)
        marker.write_text("1")
        os.kill(os.getpid(), signal.SIGKILL)
    return curve(params, ctx)
'''


def study_yaml(name: str, tracking: str, *, n_trials: int = 4, function: str = "curve") -> str:
    """A study on the local executor, one trial at a time, with a ``tracking:`` block."""
    return f"""
name: {name}
objective: {{metric: score, direction: maximize}}
sampler: {{name: random, seed: 3}}
n_trials: {n_trials}
max_failures: 20
executor: local
max_concurrent_trials: 1
search_space:
  slope: {{type: float, low: 0.1, high: 1}}
  opt: [adam, sgd]
trainer: {{kind: python, function: "obj.py:{function}"}}
tracking:
  {tracking}
"""


class MlflowServer:
    """``mlflow server`` with a SQLite backend and served artifacts, on 127.0.0.1; stop() and start() again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        cmd = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
               "--artifacts-destination", str(self.root / "artifacts")]  # fmt: skip
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server writes to it until stopped
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True, cwd=self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            if self.up():
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server not up after {timeout} s")

    def up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server's process group (it was started in its own session)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # a throwaway server: no graceful stop needed
        self.proc.wait(timeout=30)
        self.proc = None


def child_runs(uri: str, experiment: str) -> list[Any]:
    """Every active trial run of ``experiment`` (the study's own run left out)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} at {uri}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("hpsearch.role") != "study"]


def numbers(runs: list[Any]) -> list[int]:
    return sorted(int(r.data.tags["hpsearch.trial_number"]) for r in runs)


#: A trainer that also leaves a model (files under ``model/``): hpsearch keeps it for a new best trial.
MODEL_TRAINER = (
    TRAINER
    + """
def with_model(params, ctx):
    (ctx.artifact_dir / "model").mkdir()
    (ctx.artifact_dir / "model" / "weights.bin").write_bytes(b"w" * 10)
    return curve(params, ctx)
"""
)
