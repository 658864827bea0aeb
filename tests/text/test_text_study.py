"""The text fine-tune as a study, through the real CLI, a real local Ray and SQLite.

Tiny randomly initialised BERT (model_config) with the real MiniLM tokenizer on
real BBC News data keeps these fast; the slow test runs the real MiniLM.
"""

from __future__ import annotations

import json
import textwrap

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import run_cli

pytestmark = pytest.mark.ray

TINY = """
name: {name}
objective: {{metric: accuracy, direction: maximize}}
sampler: {{name: random, seed: 0}}
n_trials: {n_trials}
search_space:
  lr: {{type: float, low: 1.0e-3, high: 3.0e-3, log: true}}
  l1: [0.0, 1.0e-6]
trainer:
  kind: text_classification
  model: minilm-l6
  model_config: {{num_hidden_layers: 2, hidden_size: 64, num_attention_heads: 2, intermediate_size: 128}}
  dataset: bbc_news
  max_examples: {examples}
  max_length: 48
  batch_size: 32
  epochs: {epochs}
  save_model: true
resources: {{cpus: {cpus}, workers: {workers}}}
"""


def _write(tmp_path, **kw):
    values = dict(name="tiny", n_trials=1, examples=400, epochs=2, cpus=2, workers=1)
    values.update(kw)
    path = tmp_path / f"{values['name']}.yaml"
    path.write_text(textwrap.dedent(TINY.format(**values)))
    return path


def _study(tmp_path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")


def test_text_study_stores_curve_confusion_and_exportable_model(tmp_path):
    path = _write(tmp_path, n_trials=2)
    res = run_cli("run", path, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    study = _study(tmp_path, "tiny")
    trials = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(trials) == 2
    best = study.best_trial
    assert sorted(best.intermediate_values) == [1, 2]  # reported each epoch
    attrs = best.user_attrs
    assert len(attrs["curve"]) == 2 and len(attrs["confusion_matrix"]) == 5
    for key in ("time_load", "time_tokenize", "time_train", "time_eval"):
        assert attrs["metrics"][key] >= 0
    assert "model.tar" in attrs["artifacts"] and "confusion_matrix.json" in attrs["artifacts"]
    # The second trial reused the study's tokenisation cache.
    assert all(t.user_attrs["tokenize_cache_hit"] for t in trials)
    out = tmp_path / "export"
    exp = run_cli("export", path, "--best", out, cwd=tmp_path)
    assert exp.returncode == 0, exp.stderr
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.num_labels == 5 and tok("hello world")["input_ids"]


@pytest.mark.slow  # 30-40 s: run by hand (pytest -m slow) to keep the default run under 10 minutes
def test_ddp_text_trial_two_gloo_ranks(tmp_path):
    path = _write(tmp_path, name="ddp", cpus=0.9, workers=2, examples=256, epochs=2)
    path.write_text(path.read_text().replace("save_model: true", "save_model: true\n  verify_ranks: true"))
    res = run_cli("run", path, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (trial,) = _study(tmp_path, "ddp").trials
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    ranks = trial.user_attrs["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["params"] == ranks[1]["params"] == trial.params
    assert ranks[0]["weights_checksum"] == ranks[1]["weights_checksum"]
    assert sorted(trial.intermediate_values) == [1, 2]


@pytest.mark.slow  # 30-40 s: run by hand (pytest -m slow) to keep the default run under 10 minutes
def test_pruned_ddp_text_trial_ends(tmp_path):
    path = _write(tmp_path, name="ddpprune", cpus=0.9, workers=2, examples=256, epochs=4)
    text = path.read_text().replace("n_trials: 1", "n_trials: 1\npruner: {name: threshold, options: {lower: 2.0}}")
    path.write_text(text)
    res = run_cli("run", path, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (trial,) = _study(tmp_path, "ddpprune").trials
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]


@pytest.mark.slow
def test_real_minilm_short_study(tmp_path):
    src = open(__file__.replace("tests/text/test_text_study.py", "studies/bert_cls.yaml")).read()
    path = tmp_path / "bert_cls.yaml"
    assert "n_trials: 8" in src and "max_examples: 512" in src  # what is shortened below
    path.write_text(src.replace("n_trials: 8", "n_trials: 2").replace("max_examples: 512", "max_examples: 480"))
    baseline = "bbc_tfidf_baseline.yaml"  # named by compare_with
    (tmp_path / baseline).write_text(open(__file__.replace("tests/text/test_text_study.py", f"studies/{baseline}")).read())
    res = run_cli("run", path, cwd=tmp_path, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    study = _study(tmp_path, "bert-cls")
    assert study.best_value >= 0.8
    best = run_cli("best", path, "--json", cwd=tmp_path)
    assert json.loads(best.stdout)["value"] == pytest.approx(study.best_value)
