"""CI detection: which ``CI`` values count, that ``.ci/run`` sets one, and that a missing
service or package fails a test under CI instead of skipping it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.services import in_ci, missing, require_module


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "True", " true\n", "yes"])
def test_ci_values_that_count(value: str) -> None:
    assert in_ci({"CI": value})


@pytest.mark.parametrize("value", [None, "", "0", "false", "FALSE", "no", "off"])
def test_ci_values_that_do_not_count(value: str | None) -> None:
    assert not in_ci({} if value is None else {"CI": value})


@pytest.mark.parametrize(("value", "outcome"), [("1", pytest.fail.Exception), ("true", pytest.fail.Exception),
                                                ("0", pytest.skip.Exception), ("", pytest.skip.Exception)])
def test_missing_fails_under_ci_and_skips_otherwise(monkeypatch, value: str, outcome: type) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(outcome, match="no such service"):
        missing("no such service")
    with pytest.raises(outcome, match="hps_no_such_module is not installed"):
        require_module("hps_no_such_module")
    assert require_module("json").dumps([1]) == "[1]"  # an installed module is simply imported


def test_ci_run_exports_ci_true(tmp_path: Path) -> None:
    # .ci/run as it is, with .ci/test replaced by a stub that reports what it was given.
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / ".ci" / "test").write_text('echo "CI=${CI-unset} args=$*"\n')
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    res = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "CI=true args="
