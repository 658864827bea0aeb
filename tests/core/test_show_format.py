"""`hpsearch show` is readable at 80 columns (issue 15): short numbers, no empty or constant columns."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.conftest import run_cli

OBJ = '''
def f(params):
    return (params["learning_rate_of_the_head"] * 1000 - 2) ** 2 + params["width"]
'''

STUDY = """
name: fmt
objective: {metric: value, direction: minimize}
sampler: {name: random, seed: 0}
n_trials: 6
executor: local
search_space:
  learning_rate_of_the_head: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
  width: {type: int, low: 4, high: 64}
  constant_choice: [only]
trainer: {kind: python, function: "obj.py:f"}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("show")
    (folder / "obj.py").write_text(OBJ)
    path = folder / "study.yaml"
    path.write_text(STUDY)
    res = run_cli("run", path, "-q", cwd=folder)
    assert res.returncode == 0, res.stderr[-2000:]
    return path


def _show(path, *args: str):
    res = run_cli("show", path, *args, cwd=path.parent, env={"COLUMNS": "80"})
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_the_table_fits_80_columns_with_short_numbers(study):
    out = _show(study)
    assert max(len(line) for line in out.splitlines()) <= 80
    header = next(line for line in out.splitlines() if "number" in line).split()
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 6
    # The long name is cut; the constant columns (one choice; every state COMPLETE) and the
    # empty fail reason are left out.
    assert header == ["number", "value", "lear…_head", "width", "time_s"]
    lrs = [r[2] for r in rows]
    assert all("e-0" in v and len(v) == len("1.515e-04") for v in lrs), lrs


def test_all_keeps_constant_columns_and_columns_picks(study):
    wide = run_cli("show", study, "--all", cwd=study.parent, env={"COLUMNS": "200"}).stdout
    assert "cons…hoice" in wide and wide.count(" only ") == 6 and " only " not in _show(study)
    picked = _show(study, "--columns", "number,value,width")
    header = next(line for line in picked.splitlines() if "number" in line).split()
    assert header == ["number", "value", "width"]


def test_machine_formats_keep_full_names_and_values(study):
    rows = list(csv.DictReader(io.StringIO(_show(study, "-f", "csv"))))
    assert len(rows) == 6 and "learning_rate_of_the_head" in rows[0]
    assert 1e-5 <= float(rows[0]["learning_rate_of_the_head"]) <= 1e-3
    records = json.loads(_show(study, "-f", "json", "--all"))
    assert {r["constant_choice"] for r in records} == {"only"}
    assert _show(study, "-f", "markdown").splitlines()[1].startswith("|")


def test_bad_columns_and_format_are_one_line(study):
    for args, needle in ((["--columns", "nope"], "--columns: no column 'nope'"), (["-f", "xml"], "--format: expected")):
        res = run_cli("show", study, *args, cwd=study.parent)
        assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr


def test_cut_headers_stay_distinct():
    from hpsearch.views import short_names

    names = short_names(["params_aug_mask_prob", "params_aug_delete_prob", "params_clf__C", "params_lr", "duration_s"])
    assert names == ["aug_m…prob", "aug_d…prob", "clf__C", "lr", "time_s"]
    assert all(len(n) <= 10 for n in names)
