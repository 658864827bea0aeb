"""The live study note (written by the manager) and `hpsearch report` (one self-contained HTML file)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import optuna
import optuna_dashboard
import pytest

import hpsearch
from hpsearch.config import load_config
from hpsearch.errors import ConfigError
from hpsearch.views import FIGURES
from tests.conftest import REPO, run_cli

TPE = """
name: digits-tpe
objective: {metric: accuracy, direction: maximize}
sampler: {name: tpe, seed: 0}
pruner: {name: median, options: {n_startup_trials: 2}}
n_trials: 6
compare_with: [baseline.yaml]
search_space:
  max_depth: {type: int, low: 2, high: 12}
  min_samples_split: {type: int, low: 2, high: 12}
  criterion: [gini, entropy]
trainer: {kind: sklearn_cv, estimator: sklearn.tree.DecisionTreeClassifier, dataset: digits, cv: 3}
executor: local
"""


@pytest.fixture
def studies(tmp_path: Path) -> tuple[Path, Path]:
    baseline = (REPO / "studies" / "digits_tree_gridsearchcv.yaml").read_text()
    base = tmp_path / "baseline.yaml"
    base.write_text(baseline.replace("resources:", "executor: local\nresources:", 1))
    tpe = tmp_path / "tpe.yaml"
    tpe.write_text(TPE)
    return base, tpe


def _study(tmp_path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")


def test_compare_with_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(TPE.replace("[baseline.yaml]", "[baseline.yaml, nope.yaml]"))
    (tmp_path / "baseline.yaml").write_text("name: b\ntrainer: {kind: python}\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: compare_with\[1\]: no study file 'nope.yaml'"):
        load_config(path)
    res = run_cli("run", path, cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "compare_with[1]" in res.stderr


def test_manager_writes_note_and_figure_with_baseline(studies, tmp_path: Path) -> None:
    base, tpe = studies
    # The baseline is not run yet: the note says so instead of failing.
    hpsearch.run_study(str(tpe), n_trials=2)
    note = optuna_dashboard.get_note(_study(tmp_path, "digits-tpe"))
    assert "not run yet: hpsearch run baseline.yaml" in note

    hpsearch.run_study(str(base))
    hpsearch.run_study(str(tpe))
    study = _study(tmp_path, "digits-tpe")
    note = optuna_dashboard.get_note(study)
    assert note.startswith("## digits-tpe: finished")
    assert "**6 / 6** trials finished" in note
    assert "| digits-tree-gridsearchcv | grid_search_cv | 0.8503 |" in note
    assert "```yaml\nname: digits-tpe" in note and "compare_with:\n- baseline.yaml" in note
    attrs = study._storage.get_study_system_attrs(study._study_id)
    plot = "".join(v for k, v in sorted(attrs.items()) if k.startswith("dashboard:plot_data:hpsearch-best-over-time:"))
    assert '"Best accuracy over time"' in plot and '"dash":"dash"' in plot  # the baseline line
    assert len([k for k in attrs if k.startswith("dashboard:plot_data:")]) < 10  # replaced, not piled up
    base_note = optuna_dashboard.get_note(_study(tmp_path, "digits-tree-gridsearchcv"))
    assert base_note.startswith("## digits-tree-gridsearchcv: finished") and "**9** trials finished" in base_note


def test_note_failure_never_fails_the_study(studies, tmp_path: Path, monkeypatch, caplog) -> None:
    _, tpe = studies
    (tmp_path / "baseline.yaml").unlink()
    tpe.write_text(TPE.replace("compare_with: [baseline.yaml]\n", ""))

    def broken(*args, **kwargs):
        raise RuntimeError("note storage exploded")

    monkeypatch.setattr(optuna_dashboard, "save_note", broken)
    with caplog.at_level(logging.WARNING, logger="hpsearch.notes"):
        result = hpsearch.run_study(str(tpe), n_trials=3)
    assert result.counts() == {"COMPLETE": 3}
    warnings = [r.getMessage() for r in caplog.records if r.name == "hpsearch.notes"]
    assert len(warnings) == 1 and "note storage exploded" in warnings[0]


def test_report_holds_every_figure_and_is_self_contained(studies, tmp_path: Path) -> None:
    base, tpe = studies
    for path in (base, tpe):
        assert run_cli("run", path, "-q", cwd=tmp_path).returncode == 0
    out = tmp_path / "out" / "report.html"
    res = run_cli("report", tpe, base, "-o", out, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out)
    page = out.read_text()
    # plotly.js embedded exactly once, nothing fetched from the network.
    assert len(re.findall(r"\* plotly\.js v\d", page)) == 1
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    for name in ("digits-tpe", "digits-tree-gridsearchcv"):
        section = page.split(f'data-study="{name}"', 1)[1].split('<section class="study"', 1)[0]
        for kind, title, _ in FIGURES:
            assert f'data-figure="{kind}"' in section and title in section, (name, kind)
        # a real plotly figure, not a placeholder (the baseline has no intermediate values)
        drawn = [k for k, _, _ in FIGURES if 'id="fig-' in section.split(f'data-figure="{k}"', 1)[1].split("</section>", 1)[0]]
        expected = {k for k, _, _ in FIGURES} - ({"intermediate-values"} if name != "digits-tpe" else set())
        assert set(drawn) == expected, (name, drawn)
    assert 'data-figure="compare-table"' in page and 'data-figure="cross-study"' in page
    assert page.count("Plotly.newPlot") == 8  # 4 + 3 per-study figures + the cross-study one
    table = page.split('data-figure="compare-table"', 1)[1].split("</table>", 1)[0]
    assert "digits-tpe" in table and "digits-tree-gridsearchcv" in table and "grid_search_cv" in table


def test_report_default_output_and_errors(studies, tmp_path: Path) -> None:
    _, tpe = studies
    missing = run_cli("report", tpe, cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and len(missing.stderr.splitlines()) == 1
    assert run_cli("run", tpe, "-q", "--n-trials", "2", cwd=tmp_path).returncode == 0
    res = run_cli("report", tpe, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "dashboards" / "digits-tpe.html").is_file()


def _hung_database(tmp_path: Path) -> tuple[int, dict[str, float], list, object]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a hung database)."""
    import socket
    import threading
    import time

    from tests.services import free_port

    port = free_port()
    server = socket.create_server(("127.0.0.1", port))
    events: dict[str, float] = {}
    held: list[socket.socket] = []

    def hang() -> None:
        while True:
            try:
                con, _ = server.accept()
            except OSError:
                return
            held.append(con)
            events.setdefault("accepted", time.time())

    threading.Thread(target=hang, daemon=True).start()
    (tmp_path / "baseline.yaml").write_text(
        f"name: far-away\nstorage: postgresql+psycopg://nobody@127.0.0.1:{port}/db\n"
        "objective: {direction: minimize}\nsampler: {name: random, seed: 0}\nn_trials: 1\n"
        "search_space: {x: {type: float, low: -1, high: 1}}\ntrainer: {kind: python, function: 'quad.py:f'}\n"
    )
    (tmp_path / "quad.py").write_text("def f(params):\n    return params['x'] ** 2\n")
    study = tmp_path / "s.yaml"
    study.write_text(
        "name: near\nobjective: {direction: minimize}\nsampler: {name: random, seed: 0}\nn_trials: 5\n"
        "compare_with: [baseline.yaml]\nsearch_space: {x: {type: float, low: -1, high: 1}}\n"
        "trainer: {kind: python, function: 'quad.py:f'}\nexecutor: local\n"
    )
    return port, events, held, server


def test_baselines_are_read_off_the_loop(tmp_path: Path) -> None:
    """Reading a baseline on a hung database returns at once; the read goes on in its own thread."""
    from types import SimpleNamespace

    from hpsearch.views._notes import StudyNote

    _, events, held, server = _hung_database(tmp_path)
    cfg = load_config(tmp_path / "s.yaml")
    manager = SimpleNamespace(config=cfg, prepared=SimpleNamespace(storage_url=cfg.resolved_storage()))
    note = StudyNote(manager)  # type: ignore[arg-type]
    try:
        rows = note.baselines()
        # Still hanging (the server never answers): the caller was not made to wait for it.
        assert note._reader is not None and note._reader.is_alive()
        assert rows == [{"study": "baseline", "error": "not read yet (its storage is slow or unreachable)"}]
        assert note.baselines() == rows  # a second call neither waits nor starts a second read
    finally:
        for con in held:
            con.close()
        server.close()
    note._reader.join(60)
    assert not note._reader.is_alive() and "accepted" in events
    assert note.baselines()[0]["study"] == "far-away" and "error" in note.baselines()[0]


def test_a_study_with_a_hung_baseline_database_finishes(tmp_path: Path) -> None:
    _, events, held, server = _hung_database(tmp_path)
    try:
        res = run_cli("run", tmp_path / "s.yaml", "-q", cwd=tmp_path, timeout=240)
    finally:
        for con in held:
            con.close()
        server.close()
    assert res.returncode == 0, res.stderr[-2000:]
    assert "accepted" in events, "the note never tried to read the baseline"
    study = _study(tmp_path, "near")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 5
    note = optuna_dashboard.get_note(study)
    assert note.startswith("## near: finished"), note[:200]
    assert "not read yet" in note or "far-away" in note  # the baseline's row says what happened
