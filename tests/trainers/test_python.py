"""The ``python`` trainer loads the user's function without changing the process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import hpsearch
from hpsearch.errors import ConfigError
from hpsearch.trainers._python import load_function
from tests.conftest import OBJECTIVES

STUDY = """
name: syspath
objective: {{metric: value, direction: minimize}}
sampler: {{name: random, seed: 0}}
n_trials: 2
executor: local
search_space:
  x: {{type: float, low: -10, high: 10}}
trainer: {{kind: python, function: "{function}"}}
"""


@pytest.mark.parametrize("function", ["syspath_obj:quadratic", "syspath_obj.py:quadratic"])
def test_a_study_run_in_process_leaves_sys_path_unchanged(write_study, function: str) -> None:
    before = list(sys.path)
    path = write_study(STUDY.format(function=function), **{"syspath_obj.py": OBJECTIVES})
    result = hpsearch.run_study(str(path))
    assert result.counts() == {"COMPLETE": 2}
    assert sys.path == before
    assert str(path.parent) not in sys.path


def test_a_module_that_fails_to_import_leaves_sys_path_unchanged(tmp_path: Path) -> None:
    (tmp_path / "broken_obj.py").write_text("raise RuntimeError('boom')\n")
    before = list(sys.path)
    with pytest.raises(ConfigError, match=r"trainer\.function: importing 'broken_obj' raised RuntimeError: boom"):
        load_function("broken_obj:f", tmp_path)
    assert sys.path == before
