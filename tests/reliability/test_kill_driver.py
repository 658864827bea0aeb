"""kill -9 of `hpsearch run` at random points, then a re-run: nothing lost, nothing twice.

The default suite kills each study kind a few times; `-m slow` runs the
README's 10 kills per kind.
"""

from __future__ import annotations

import pytest

from tests.reliability.kill_loop import kill_loop


@pytest.mark.parametrize("kind", ["grid", "tpe"])
def test_kill_driver_then_resume(kind, tmp_path):
    summary = kill_loop(kind, kills=3, workdir=tmp_path, seed=1)
    assert summary["kills"] >= 1


@pytest.mark.ray
@pytest.mark.slow
def test_kill_driver_during_ddp_trial(tmp_path):
    summary = kill_loop("ddp", kills=1, workdir=tmp_path, seed=1)
    assert summary["kills"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["grid", "tpe", "ddp"])
def test_kill_driver_ten_times(kind, tmp_path):
    summary = kill_loop(kind, kills=10, workdir=tmp_path, seed=7)
    # Once the study is complete a later start has nothing to do and exits before its kill.
    assert summary["kills"] >= 1
