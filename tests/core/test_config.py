"""Study schema and search-space units."""

from __future__ import annotations

import pytest

from hpsearch import ConfigError
from hpsearch.config import load_config
from hpsearch.search import grid_points, grid_values, to_distributions

BASE = """
name: s
trainer: {kind: python, function: "obj.py:quadratic"}
"""


def test_defaults_and_storage_beside_file(write_study, tmp_path):
    cfg = load_config(write_study(BASE))
    assert cfg.sampler.name == "tpe" and cfg.pruner.name == "none"
    assert cfg.objective.direction == "maximize"
    assert cfg.resolved_storage() == f"sqlite:///{tmp_path.resolve()}/hpsearch.db"
    assert cfg.resources.cpus == 1 and cfg.resources.workers == 1


def test_search_space_kinds(write_study):
    cfg = load_config(
        write_study(
            BASE
            + """
search_space:
  lr: {type: float, low: 1e-5, high: 1e-2, log: true}
  layers: {type: int, low: 1, high: 4}
  opt: [adam, sgd]
  drop: {choices: [0.0, 0.1]}
  wd: {type: float, low: 0.0, high: 0.3, step: 0.1}
"""
        )
    )
    d = to_distributions(cfg)
    assert d["lr"].log and d["lr"].low == pytest.approx(1e-5)
    assert d["layers"].high == 4
    assert d["opt"].choices == ("adam", "sgd")
    assert d["drop"].choices == (0.0, 0.1)
    assert grid_values("wd", cfg.search_space["wd"], "f") == [0.0, 0.1, 0.2, 0.3]


def test_grid_over_int_range_with_step(write_study):
    cfg = load_config(write_study(BASE + "search_space:\n  n: {type: int, low: 2, high: 10, step: 4}\n"))
    assert grid_points(cfg) == {"n": [2, 6, 10]}


def test_grid_needs_step_for_float(write_study):
    cfg = load_config(write_study(BASE + "search_space:\n  x: {type: float, low: 0, high: 1}\n"))
    with pytest.raises(ConfigError, match=r"search_space\.x: a grid needs explicit values"):
        grid_points(cfg)


def test_env_interpolation(write_study, monkeypatch):
    monkeypatch.setenv("HPS_DB", "sqlite:///x.db")
    cfg = load_config(write_study(BASE + "storage: ${HPS_DB}\n"))
    assert cfg.storage == "sqlite:///x.db"
    cfg = load_config(write_study(BASE + "storage: ${HPS_NOPE:-sqlite:///d.db}\n"))
    assert cfg.storage == "sqlite:///d.db"
    with pytest.raises(ConfigError, match=r"storage: environment variable HPS_MISSING is not set"):
        load_config(write_study(BASE + "storage: ${HPS_MISSING}\n"))


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        ("search_space:\n  x: {type: float, low: 2, high: 1}\n", r"search_space\.x: low \(2\.0\) must be <= high"),
        ("search_space:\n  x: {type: float, low: 0, high: 1, log: true}\n", r"search_space\.x: low must be > 0 when log"),
        ("search_space:\n  x: {type: int, low: 0, high: 5, log: true}\n", r"search_space\.x: low must be >= 1"),
        ("search_space:\n  x: {type: float, low: 0, high: 1, step: -1}\n", r"search_space\.x: step must be > 0"),
        ("search_space:\n  x: {type: floaty, low: 0, high: 1}\n", r"search_space\.x: type must be one of"),
        ("search_space:\n  x: []\n", r"search_space\.x\.choices"),
        ("search_space:\n  x: [a, a]\n", r"choice 'a' is listed twice"),
        ("n_trials: many\n", r"n_trials: .*integer.*got 'many'"),
        ("n_trials: 0\n", r"n_trials: .*greater than or equal to 1"),
        ("resources: {gpus: 1.5}\n", r"resources\.gpus: a fraction of a GPU must be below 1"),
        ("resources: {cpus: 0}\n", r"resources\.cpus"),
        ("colour: blue\n", r"colour: unknown key"),
        ("sampler: {name: tpe, sed: 1}\n", r"sampler\.sed: unknown key"),
        ("objective: {direction: up}\n", r"objective\.direction"),
    ],
)
def test_bad_fields_name_file_and_path(write_study, extra, pattern):
    path = write_study(BASE + extra)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(str(path) + ": ")
    assert "\n" not in msg
    assert pytest.importorskip("re").search(pattern, msg), msg


def test_yaml_refusals(write_study):
    with pytest.raises(ConfigError, match="tags that construct Python objects are refused"):
        load_config(write_study('name: !!python/object/apply:os.system ["true"]\n'))
    with pytest.raises(ConfigError, match="duplicate key 'name'"):
        load_config(write_study("name: a\nname: b\n"))
    with pytest.raises(ConfigError, match="line 2, column .*invalid YAML"):
        load_config(write_study("name: a\n  bad: [\n"))
    with pytest.raises(ConfigError, match="is empty"):
        load_config(write_study(""))
    with pytest.raises(ConfigError, match=r"\(top level\): expected a mapping"):
        load_config(write_study("- a\n- b\n"))


def test_overrides(write_study):
    cfg = load_config(write_study(BASE), {"n_trials": 3, "sampler.seed": 7, "storage": None})
    assert cfg.n_trials == 3 and cfg.sampler.seed == 7 and cfg.storage is None
