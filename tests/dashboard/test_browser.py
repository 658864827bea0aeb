"""`hpsearch dashboard` in a real Chromium, on a storage holding a fine-tune and a GridSearchCV baseline."""

from __future__ import annotations

import shutil
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.dashboard.helpers import ARTIFACTS, browser, dashboard  # noqa: F401 - browser is a fixture

pytestmark = pytest.mark.browser

# The fine-tune of tests/text/test_text_study.py, shrunk: a tiny BERT, 1 trial, in-process.
FINE_TUNE = """
name: tiny-finetune
description: tiny BERT on BBC News against the GridSearchCV baseline
objective: {metric: accuracy, direction: maximize}
sampler: {name: random, seed: 0}
n_trials: 1
compare_with: [baseline.yaml]
search_space:
  lr: {type: float, low: 1.0e-3, high: 3.0e-3, log: true}
trainer:
  kind: text_classification
  model: minilm-l6
  model_config: {num_hidden_layers: 2, hidden_size: 64, num_attention_heads: 2, intermediate_size: 128}
  dataset: bbc_news
  max_examples: 200
  max_length: 32
  batch_size: 32
  epochs: 1
  save_model: true
executor: local
resources: {cpus: 2}
"""


def _text(driver, url: str, *expected: str, timeout: float = 45) -> str:
    """Load ``url`` and wait until the page's text holds every ``expected`` string."""
    driver.get(url)
    deadline = time.monotonic() + timeout
    while True:
        text = driver.find_element("tag name", "body").text
        if all(e in text for e in expected) or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("dash")
    baseline = (REPO / "studies" / "digits_tree_gridsearchcv.yaml").read_text()
    (tmp / "baseline.yaml").write_text(baseline.replace("resources:", "executor: local\nresources:", 1))
    (tmp / "finetune.yaml").write_text(textwrap.dedent(FINE_TUNE))
    for name in ("baseline.yaml", "finetune.yaml"):
        res = run_cli("run", name, "-q", cwd=tmp, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
    return tmp


def test_dashboard_shows_studies_trial_count_note_and_artifacts(store: Path, browser) -> None:  # noqa: F811
    with dashboard("finetune.yaml", cwd=store) as dash:
        base_id = dash.study_id("digits-tree-gridsearchcv")
        ft_id = dash.study_id("tiny-finetune")
        detail = dash.get_json(f"/api/studies/{ft_id}")
        assert detail["trials"][0]["artifacts"], "the artifact store is not served"  # type: ignore[index]
        assert any(g["id"] == "hpsearch-best-over-time" for g in detail["plotly_graph_objects"])  # type: ignore[index]

        home = _text(browser, dash.url + "/dashboard", "tiny-finetune", "digits-tree-gridsearchcv")
        assert "tiny-finetune" in home and "digits-tree-gridsearchcv" in home, home[:1000]

        trials = _text(browser, f"{dash.url}/dashboard/studies/{base_id}/trials", "9 Trials")
        assert "9 Trials" in trials, trials[:1000]
        trials = _text(browser, f"{dash.url}/dashboard/studies/{ft_id}/trials", "1 Trials", "model.tar")
        assert "1 Trials" in trials, trials[:1000]
        assert "confusion_matrix.json" in trials and "model.tar" in trials, "trial artifacts not shown"

        note = _text(browser, f"{dash.url}/dashboard/studies/{ft_id}/note", "Compared with baselines")
        for expected in ("tiny-finetune: finished", "Compared with baselines", "digits-tree-gridsearchcv",
                         "grid_search_cv", "Study config", "text_classification"):
            assert expected in note, f"{expected!r} not in the rendered note: {note[:1500]}"
        # Markdown rendered, not shown raw.
        assert "### Compared" not in note and "|---|" not in note

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard-note.png"
        browser.set_window_size(1400, 1100)
        browser.save_screenshot(str(shot))
        _text(browser, dash.url + "/dashboard", "tiny-finetune")
        browser.save_screenshot(str(ARTIFACTS / "dashboard-studies.png"))
        print(f"screenshots: {shot} and {ARTIFACTS / 'dashboard-studies.png'}")
        assert shot.stat().st_size > 10_000
        assert dash.proc.poll() is None
    shutil.copy(dash.log, ARTIFACTS / "dashboard.log")
