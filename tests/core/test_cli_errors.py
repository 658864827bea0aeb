"""Bad input through the real CLI: exit 2, one line naming file and field, nothing written."""

from __future__ import annotations

import hashlib

import pytest

from tests.conftest import OBJECTIVES, quadratic_study, run_cli

GOOD = quadratic_study(n_trials=3)

CASES = {
    "malformed_yaml": (GOOD + "search_space: [\n", "invalid YAML"),
    "unknown_key": (GOOD + "samplr: {name: tpe}\n", "samplr: unknown key"),
    "wrong_type": (GOOD.replace("n_trials: 3", "n_trials: three"), "n_trials:"),
    "low_gt_high": (GOOD.replace("low: -10, high: 10", "low: 10, high: -10"), "search_space.x: low (10.0) must be <= high"),
    "log_low_zero": (GOOD.replace("low: -10, high: 10", "low: 0, high: 10, log: true"), "search_space.x: low must be > 0 when log: true"),
    "unknown_sampler": (GOOD + "sampler: {name: bayesian}\n", "sampler.name: unknown sampler 'bayesian'"),
    "unknown_pruner": (GOOD + "pruner: {name: early}\n", "pruner.name: unknown pruner 'early'"),
    "bad_sampler_option": (GOOD + "sampler: {name: tpe, options: {n_startup: 3}}\n", "sampler.options.n_startup"),
    "bad_pruner_option": (GOOD + "pruner: {name: median, options: {warmup: 3}}\n", "pruner.options.warmup"),
    "missing_function": (GOOD.replace("obj.py:quadratic", "obj.py:nope"), "trainer.function: 'obj.py' has no function 'nope'"),
    "missing_file": (GOOD.replace("obj.py:quadratic", "missing.py:f"), "trainer.function: file"),
    "missing_module": (GOOD.replace("obj.py:quadratic", "no_such_module_xyz:f"), "trainer.function: cannot import module"),
    "unknown_trainer": (GOOD.replace("kind: python", "kind: keras"), "trainer.kind: unknown trainer 'keras'"),
    "trainer_setting": (GOOD.replace('function: "obj.py:quadratic"', 'function: "obj.py:quadratic", epochs: 3'), "trainer.epochs: unknown key"),
    "python_tag": ("name: !!python/object/apply:os.system ['touch pwned']\n" + GOOD.split("\n", 2)[2], "refused"),
    "unreachable_postgres": (GOOD + "storage: postgresql+psycopg://u:sekret@127.0.0.1:9/db\n", "storage: cannot connect"),
    "sqlite_missing_dir": (GOOD + "storage: sqlite:////nonexistent/dir/x.db\n", "storage: folder /nonexistent/dir does not exist"),
    "unreachable_ray": (GOOD.replace("executor: local", "executor: ray") + "ray: {address: '127.0.0.1:9'}\n", "ray.address: cannot reach Ray at 127.0.0.1:9"),
    "bad_scheme": (GOOD + "storage: redis://localhost\n", "storage: unsupported storage URL"),
    "grid_float_no_step": (GOOD + "sampler: {name: grid}\n", "search_space.x: a grid needs explicit values"),
    "unknown_estimator": (GOOD.replace('{kind: python, function: "obj.py:quadratic"}', "{kind: sklearn_cv, estimator: sklearn.tree.NoSuchTree}"), "trainer.estimator: cannot import"),
    "estimator_param": (GOOD.replace('{kind: python, function: "obj.py:quadratic"}', "{kind: sklearn_cv, estimator: sklearn.tree.DecisionTreeClassifier}"), "search_space.x: DecisionTreeClassifier has no parameter 'x'"),
}


def _db_state(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if "hpsearch" in p.name or p.suffix == ".db")


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exit_2_one_line_nothing_written(case, write_study, tmp_path):
    text, expected = CASES[case]
    path = write_study(text, **{"obj.py": OBJECTIVES})
    res = run_cli("run", path, cwd=tmp_path, timeout=120)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: {path}: "), lines[0]
    assert expected in lines[0], lines[0]
    assert "Traceback" not in res.stderr + res.stdout
    assert "sekret" not in res.stderr + res.stdout
    assert _db_state(tmp_path) == []
    assert not (tmp_path / "pwned").exists()


def test_existing_storage_is_untouched_by_bad_input(write_study, tmp_path):
    path = write_study(GOOD, **{"obj.py": OBJECTIVES})
    ok = run_cli("run", path, cwd=tmp_path, timeout=120)
    assert ok.returncode == 0, ok.stderr
    db = tmp_path / "hpsearch.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    mtime = db.stat().st_mtime_ns
    bad = write_study(GOOD.replace("n_trials: 3", "n_trials: 5") + "pruner: {name: early}\n", name="bad.yaml")
    res = run_cli("run", bad, cwd=tmp_path, timeout=120)
    assert res.returncode == 2
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert db.stat().st_mtime_ns == mtime


def test_directory_and_missing_file(tmp_path):
    res = run_cli("run", tmp_path, cwd=tmp_path)
    assert res.returncode == 2 and "is a directory" in res.stderr
    res = run_cli("run", tmp_path / "nope.yaml", cwd=tmp_path)
    assert res.returncode == 2 and "no such file" in res.stderr
    assert "Traceback" not in res.stderr


def test_show_without_database(write_study, tmp_path):
    path = write_study(GOOD, **{"obj.py": OBJECTIVES})
    res = run_cli("show", path, cwd=tmp_path)
    assert res.returncode == 2 and "no database at" in res.stderr
    assert not (tmp_path / "hpsearch.db").exists()


def test_conflicting_flags(write_study, tmp_path):
    path = write_study(GOOD, **{"obj.py": OBJECTIVES})
    res = run_cli("run", path, "--n-trials", "3", "--more", "2", cwd=tmp_path)
    assert res.returncode == 2 and "--more" in res.stderr


def test_version_flag_and_command_print_the_package_version():
    from hpsearch._version import __version__

    for args in (["--version"], ["version"]):
        res = run_cli(*args)
        assert res.returncode == 0 and res.stdout.strip() == __version__, (args, res.stdout, res.stderr)
