"""Shared helpers: write study files into tmp_path and run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def pytest_unconfigure(config: pytest.Config) -> None:
    services = sys.modules.get("tests.services")
    if services is not None:  # stop the PostgreSQL cluster this process started, if any
        services.stop_own_server()


def quadratic_study(name: str = "s", *, n_trials: int = 2, sampler: str | None = None) -> str:
    """The smallest study YAML: minimise ``(x - 2) ** 2`` on the local executor.

    Its trainer is ``obj.py:quadratic``: write :data:`OBJECTIVES` as ``obj.py`` beside it.
    ``sampler`` adds ``sampler: {name: SAMPLER, seed: 0}``.
    """
    lines = [f"name: {name}", "objective: {metric: value, direction: minimize}"]
    if sampler:
        lines.append(f"sampler: {{name: {sampler}, seed: 0}}")
    lines += [
        f"n_trials: {n_trials}",
        "executor: local",
        "search_space:",
        "  x: {type: float, low: -10, high: 10}",
        'trainer: {kind: python, function: "obj.py:quadratic"}',
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def write_study(tmp_path: Path):
    """Write a study YAML (and optional extra files) into tmp_path; return its path."""

    def write(text: str, name: str = "study.yaml", **files: str) -> Path:
        for fname, content in files.items():
            (tmp_path / fname).write_text(textwrap.dedent(content))
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def run_cli(*args: str | os.PathLike[str], cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m hpsearch ARGS`` as a user would, capturing output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hpsearch", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


OBJECTIVES = '''
import math, os, time

def quadratic(params):
    return (params["x"] - 2) ** 2

def slow_grid(params):
    time.sleep(float(os.environ.get("HPS_TEST_SLEEP", "1.0")))
    return params["a"] * 10 + params["b"]

def always_fails(params):
    raise ValueError("boom: the trainer always fails")

def curve(params, ctx):
    # Good slopes climb, bad ones stay low; a pruner should stop the bad ones.
    value = 0.0
    for step in range(1, 11):
        value = params["slope"] * step
        ctx.report(value, step)
        if ctx.should_prune():
            from hpsearch.trainers import TrialPruned
            raise TrialPruned()
        time.sleep(0.01)
    return {"score": value, "steps": step}
'''

WORKER_KILL = '''
import os, time
from pathlib import Path

def die_once(params):
    marker = Path(__file__).with_name("attempted")
    if not marker.exists():
        marker.write_text("1")
        Path(__file__).with_name("worker.pid").write_text(str(os.getpid()))
        time.sleep(120)
    return params["x"]
'''

DDP = '''
import hashlib, time
import torch
import torch.distributed as dist
from hpsearch.trainers import TrialPruned

def ddp_fit(params, ctx):
    torch.manual_seed(dist.get_rank())  # different init per rank: DDP must sync it
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=params["lr"])
    g = torch.Generator().manual_seed(100 + dist.get_rank())  # each rank its own shard
    x = torch.randn(64, 8, generator=g)
    y = x.sum(dim=1, keepdim=True)
    for epoch in range(1, params.get("epochs", 3) + 1):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ctx.report(-float(loss), epoch)
        if ctx.should_prune():
            raise TrialPruned()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    ctx.set_user_attr("weights_checksum", hashlib.sha256(flat.numpy().tobytes()).hexdigest())
    ctx.set_user_attr("world_size", dist.get_world_size())
    return {"neg_loss": -float(loss)}
'''

SLOW_EPOCHS = '''
import time
from pathlib import Path
from hpsearch.trainers import TrialPruned

def epochs(params, ctx):
    Path(__file__).with_name(f"started-{ctx.trial_number}").write_text("1")
    for step in range(1, 6):
        time.sleep(float(__import__("os").environ.get("HPS_EPOCH_S", "0.6")))
        ctx.report(params["x"] * step, step)
        if ctx.should_prune():
            raise TrialPruned()
    return params["x"]
'''
