"""hpsearch without Ray: the package, the `local` executor and the trainers (issue 16).

The GPU machine has no Ray (its wheel is over the carry limit), so the path we prove
there is `hpsearch run --executor local`. Here Ray is made unimportable by an import
hook installed at start-up (a ``sitecustomize`` on PYTHONPATH), as a missing install is.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, run_cli

IMAGE = """
name: cnn-without-ray
objective: {metric: accuracy, direction: maximize}
sampler: {name: random, seed: 0}
n_trials: 2
search_space:
  lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}
  rotation_range: {type: float, low: 0.0, high: 20.0}
trainer: {kind: image_classification, dataset: digits, model: cnn, width: 8, depth: 1, epochs: 2, save_model: true}
executor: local
"""


#: Ray as a missing install looks: neither ``import ray`` nor a look-up finds it.
NO_RAY = """
import sys


class _NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoRay())
"""


def _no_ray(tmp_path: Path) -> dict[str, str]:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "sitecustomize.py").write_text(NO_RAY)  # runs at start-up, before hpsearch
    return {"PYTHONPATH": str(shadow)}


def test_import_and_local_runs_without_ray(tmp_path: Path) -> None:
    env = _no_ray(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, hpsearch, hpsearch.trainers, hpsearch.executors; "
         "import hpsearch.cli; print('ray' in sys.modules)"],
        capture_output=True, text=True, env={**__import__("os").environ, **env}, cwd=tmp_path, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.strip() == "False"

    quick = tmp_path / "quickstart.yaml"
    quick.write_text((REPO / "studies" / "quickstart.yaml").read_text())
    res = run_cli("run", quick, "--executor", "local", "--n-trials", "3", "-q", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    (tmp_path / "cnn.yaml").write_text(IMAGE)
    res = run_cli("run", tmp_path / "cnn.yaml", "-q", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    with sqlite3.connect(tmp_path / "hpsearch.db") as con:
        states = dict(con.execute(
            "SELECT s.study_name, group_concat(t.state) FROM trials t JOIN studies s USING (study_id) GROUP BY 1"
        ).fetchall())
    assert states == {"quickstart": "COMPLETE,COMPLETE,COMPLETE", "cnn-without-ray": "COMPLETE,COMPLETE"}
    show = run_cli("show", tmp_path / "cnn.yaml", cwd=tmp_path, env=env)
    assert show.returncode == 0 and "cnn-without-ray" in show.stdout + show.stderr


def test_ray_executor_without_ray_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    quick = tmp_path / "quickstart.yaml"
    quick.write_text((REPO / "studies" / "quickstart.yaml").read_text())
    res = run_cli("run", quick, "-q", cwd=tmp_path, env=_no_ray(tmp_path))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: {quick}: executor: ray is not installed; pip install 'ray[default,train]', "
        "or run with --executor local"
    ]
    assert not (tmp_path / "hpsearch.db").exists()
