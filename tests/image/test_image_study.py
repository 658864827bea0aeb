"""Image studies end to end: the API (local executor) learns digits; the CLI exports the model."""

from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
import torch
import yaml
from optuna.trial import TrialState
from sklearn.datasets import load_digits

import hpsearch
from hpsearch.config import load_config
from hpsearch.study import build_trainer
from hpsearch.trainers._image import ImageClassificationTrainer
from tests.conftest import REPO, run_cli

STUDY = """
name: digits-e2e
objective: {metric: accuracy, direction: maximize}
sampler: {name: grid}
n_trials: 2
search_space:
  augmentation_preset: [keras_seed, none]
trainer:
  kind: image_classification
  dataset: digits
  width: 16
  depth: 2
  test_fraction: 0.2
  epochs: 8
  rotation_range: 10          # explicit knobs override the preset
  horizontal_flip: false
resources: {cpus: 1}
executor: local
"""


def test_digits_study_learns_and_best_model_exports(tmp_path: Path) -> None:
    path = tmp_path / "digits.yaml"
    path.write_text(textwrap.dedent(STUDY))
    # A storage elsewhere (as with --storage): the artifacts go beside it, and export finds them.
    (tmp_path / "store").mkdir()
    storage = f"sqlite:///{tmp_path / 'store' / 'runs.db'}"
    result = hpsearch.run_study(str(path), storage=storage)
    assert result.counts()["COMPLETE"] == 2
    best = result.best_trial
    metrics = best.user_attrs["metrics"]
    assert metrics["test_accuracy"] >= 0.9, metrics  # measured 0.97 to 0.99
    assert sorted(best.intermediate_values) == list(range(1, 9))
    for trial in result.study.trials:
        artifacts = trial.user_attrs["artifacts"]
        assert {"augmented_samples.png", "curve.json", "confusion_matrix.json"} <= set(artifacts)
    assert "model.tar" in best.user_attrs["artifacts"]
    seed = [t for t in result.study.trials if t.params["augmentation_preset"] == "keras_seed"][0]
    assert seed.user_attrs["augmentation"]["rotation_range"] == 10.0
    assert seed.user_attrs["augmentation"]["width_shift_range"] == 0.2
    assert seed.user_attrs["augmentation"]["horizontal_flip"] is False

    # The API loads it ...
    model = result.load_best_model()
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]
    with torch.no_grad():
        accuracy = (model(x).argmax(-1).numpy() == digits.target).mean()
    assert accuracy >= 0.9
    # ... and so does `hpsearch export` (the real CLI) + load_model.
    out = tmp_path / "best"
    res = run_cli("export", path, "--best", out, "--storage", storage, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.pt"]
    again = ImageClassificationTrainer.load_model(out)
    with torch.no_grad():
        torch.testing.assert_close(again(x[:50]), model(x[:50]))
    assert (tmp_path / "store" / "hpsearch-artifacts").is_dir()
    assert optuna.load_study(study_name="digits-e2e", storage=storage).best_trial.state == TrialState.COMPLETE


def test_shipped_image_studies_validate() -> None:
    for name in ("digits_cnn.yaml", "digits_augment_grid.yaml"):
        cfg = load_config(REPO / "studies" / name)
        trainer = build_trainer(cfg)
        assert isinstance(trainer, ImageClassificationTrainer)
        trainer.validate(set(cfg.search_space))
    grid = yaml.safe_load((REPO / "studies" / "digits_augment_grid.yaml").read_text())
    assert grid["sampler"]["name"] == "grid" and grid["n_trials"] == 6
    assert grid["search_space"] == {"augmentation_preset": ["keras_seed", "none"], "seed": [0, 1, 2]}
    cnn = yaml.safe_load((REPO / "studies" / "digits_cnn.yaml").read_text())
    assert cnn["pruner"]["name"] == "hyperband" and cnn["sampler"]["name"] == "tpe"
    assert {"rotation_range", "width_shift_range", "height_shift_range", "shear_range", "zoom_range",
            "horizontal_flip", "fill_mode", "lr", "l1", "dropout"} <= set(cnn["search_space"])
