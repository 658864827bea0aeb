"""Cost metrics of the torch trainers and the text trainer's ``num_layers`` (issue 14).

Real torch on the CPU, the real MiniLM tokenizer and config (and its weights where the
cut must keep them), real BBC News and digits data, a real study on SQLite.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

import hpsearch
from hpsearch.checkpoints import CheckpointRef, CheckpointStore, TrialCheckpoints
from hpsearch.config import load_config
from hpsearch.errors import ConfigError, TrainerError
from hpsearch.trainers import RecordingChannel, TrialContext, TrialResources
from hpsearch.trainers._image import ImageClassificationSettings, ImageClassificationTrainer
from hpsearch.trainers._text import TextClassificationSettings, TextClassificationTrainer
from hpsearch.trainers.torch import COST_METRICS, count_params
from tests.conftest import run_cli
from tests.text.test_text_resume import assert_same_weights

#: A tiny randomly initialised BERT of 3 layers (the tokenizer is MiniLM's).
TINY3 = {"num_hidden_layers": 3, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
COSTS = ("params", "latency_ms", "train_compute_s", "peak_memory_mb")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _text(tmp_path: Path, **overrides: Any) -> TextClassificationTrainer:
    settings = {
        "model": "minilm-l6",
        "model_config": TINY3,
        "dataset": "bbc_news",
        "max_examples": 150,
        "max_length": 32,
        "epochs": 1,
        "lr": 3e-3,
        "batch_size": 32,
        "save_model": False,
        **overrides,
    }
    return TextClassificationTrainer(TextClassificationSettings.model_validate(settings), study_dir=tmp_path)


def _ctx(
    tmp_path: Path,
    objective: str = "accuracy",
    params: dict[str, Any] | None = None,
    number: int = 0,
    checkpoints: TrialCheckpoints | None = None,
) -> TrialContext:
    return TrialContext(
        trial_number=number,
        params=params or {},
        resources=TrialResources(cpus=1),
        channel=RecordingChannel(),
        objective=objective,
        work_dir=tmp_path / "work",
        checkpoints=checkpoints,
    )


def _reports(ctx: TrialContext) -> list[tuple[int, float]]:
    return list(ctx._channel.reports)  # type: ignore[attr-defined]


def _encoder_layers(model: Any) -> int:
    return len(model.base_model.encoder.layer)


# ---------------------------------------------------------------- the metrics


def test_text_trial_returns_cost_metrics_and_fewer_layers_mean_fewer_params(tmp_path: Path) -> None:
    trainer = _text(tmp_path, save_model=True)
    full_ctx, cut_ctx = _ctx(tmp_path), _ctx(tmp_path, params={"num_layers": 1})
    full = trainer.run({}, full_ctx)
    cut = trainer.run({"num_layers": 1}, cut_ctx)

    for metrics in (full, cut):
        assert set(COSTS) <= set(metrics)
        assert all(math.isfinite(metrics[k]) for k in COSTS), metrics
        assert metrics["latency_ms"] > 0 and metrics["peak_memory_mb"] > 0
        # One CPU worker: the compute seconds are the training seconds.
        assert metrics["train_compute_s"] == metrics["time_train"]
    # params is the trained model's count, every parameter: read back from the saved model.
    model, _ = TextClassificationTrainer.load_model(cut_ctx.artifact_dir / "model")
    assert _encoder_layers(model) == 1 and model.config.num_hidden_layers == 1
    assert cut["params"] == sum(p.numel() for p in model.parameters()) == count_params(model)
    full_model, _ = TextClassificationTrainer.load_model(full_ctx.artifact_dir / "model")
    assert _encoder_layers(full_model) == 3 and full["params"] == count_params(full_model)
    assert cut["params"] < full["params"]
    # How latency and memory were measured travels with the trial.
    attrs = cut_ctx.user_attrs
    assert attrs["latency_batch_size"] == 32 and attrs["latency_device"] == "cpu"
    assert attrs["latency_examples"] == 30  # the whole validation split (20% of 150), one batch of 30
    assert attrs["peak_memory_source"] == "process peak RSS (getrusage ru_maxrss)"


def test_a_cost_objective_is_measured_once_and_never_reported_per_epoch(tmp_path: Path) -> None:
    trainer = _text(tmp_path, epochs=2, latency_batch_size=8)
    assert COST_METRICS.keys() <= trainer.metrics()
    ctx = _ctx(tmp_path, objective="latency_ms")
    metrics = trainer.run({}, ctx)
    assert _reports(ctx) == []  # a pruner has nothing to compare: latency is not known per epoch
    assert len(ctx.user_attrs["curve"]) == 2  # the validation metrics are still evaluated each epoch
    assert metrics["latency_ms"] > 0 and ctx.user_attrs["latency_batch_size"] == 8
    assert ctx.user_attrs["latency_examples"] == 30  # 8 + 8 + 8 + 6: all of them, under the 8-batch bound
    with pytest.raises(TrainerError, match=r"'latency' is not a text_classification metric; use one of .*latency_ms"):
        trainer.run({}, _ctx(tmp_path, objective="latency"))


def test_image_trial_returns_the_shared_cost_metrics(tmp_path: Path) -> None:
    settings = {"width": 4, "max_examples": 200, "epochs": 1, "sample_grid": 0}
    trainer = ImageClassificationTrainer(
        ImageClassificationSettings.model_validate(settings), study_dir=tmp_path, objective="params"
    )
    trainer.validate(set())
    ctx = _ctx(tmp_path, objective="params")
    metrics = trainer.run({}, ctx)
    model = ImageClassificationTrainer.load_model(ctx.artifact_dir / "model")
    assert metrics["params"] == count_params(model) > 0
    assert "n_parameters" not in metrics  # the shared `params` replaces it
    assert metrics["latency_ms"] > 0 and metrics["train_compute_s"] == metrics["time_train"]
    assert _reports(ctx) == [] and ctx.user_attrs["latency_examples"] == 40


# ---------------------------------------------------------------- num_layers on MiniLM


def test_num_layers_keeps_the_first_pretrained_minilm_layers(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    trainer = _text(tmp_path, model_config=None, max_examples=40, max_length=16, num_layers=2)
    trainer.validate(set())
    ctx = _ctx(tmp_path)
    job = trainer.start_run(trainer.hyperparameters({}), ctx, 0)
    assert _encoder_layers(job.model) == 2 and job.model.config.num_hidden_layers == 2
    full = AutoModelForSequenceClassification.from_pretrained(trainer.model_path(), num_labels=5)
    assert _encoder_layers(full) == 6
    kept = job.model.state_dict()
    for name, value in full.state_dict().items():
        if name.startswith("bert.encoder.layer.") and int(name.split(".")[3]) >= 2:
            assert name not in kept
        elif not name.startswith("classifier."):  # the head is new by design
            assert torch.equal(kept[name], value), name


def test_num_layers_beyond_the_model_is_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _text(tmp_path, model_config=None, num_layers=7).validate(set())
    assert str(err.value) == "trainer.num_layers: 7 is more than the model's 6 encoder layers; use 1 to 6"
    # A searched value is checked against the same count: in the driver from the search space...
    study = tmp_path / "space.yaml"
    study.write_text(_study("space", "num_layers: {type: int, low: 1, high: 8}", model_config=""))
    cfg = load_config(study)
    trainer = _text(tmp_path, model_config=None)
    trainer.validate(set(cfg.search_space))
    with pytest.raises(ConfigError, match=r"^search_space\.num_layers: 8 is more than the model's 6 encoder"):
        trainer.validate_space(cfg.search_space)
    trainer.validate_space({"num_layers": {"choices": [2, 4, 6]}})  # within the model: fine
    # ... and in the trial, for a value that got there anyway.
    with pytest.raises(ConfigError, match=r"^search_space\.num_layers: 4 is more than the model's 3 encoder"):
        _text(tmp_path).run({"num_layers": 4}, _ctx(tmp_path, params={"num_layers": 4}))


def test_cli_refuses_num_layers_beyond_minilm_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(_study("cut", "lr: [1.0e-3, 3.0e-3]", model_config="", num_layers=9))
    res = run_cli("run", path, cwd=tmp_path, timeout=180)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "trainer.num_layers: 9 is more than the model's 6 encoder layers; use 1 to 6" in lines[0]


def test_resume_of_a_cut_model_is_bitwise(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "ckpt"), "s", keep=10)
    params = {"num_layers": 2}

    def trial(number: int, resume: CheckpointRef | None) -> tuple[dict[str, float], TrialContext]:
        checkpoints = TrialCheckpoints(store, number, params, resume)
        ctx = _ctx(tmp_path, params=params, number=number, checkpoints=checkpoints)
        return _text(tmp_path, epochs=2, hidden_dropout=0.1, aug_mask_prob=0.1).run(params, ctx), ctx

    want, full = trial(0, None)
    got, resumed = trial(1, CheckpointRef(0, 1))
    assert "checkpoint_error" not in resumed.user_attrs
    assert resumed.user_attrs["restored_checkpoint"]["step"] == 1
    assert _reports(resumed) == _reports(full)[1:]
    for key in ("accuracy", "val_loss", "params"):
        assert got[key] == want[key], key

    def weights(trial: int) -> dict[str, torch.Tensor]:
        folder = Path(store.step_dir(CheckpointRef(trial, 2)))
        return torch.load(folder / "model.pt", map_location="cpu", weights_only=True)

    assert not any(k.startswith("bert.encoder.layer.2.") for k in weights(1))
    assert_same_weights(weights(1), weights(0))


# ---------------------------------------------------------------- a real study


def _study(name: str, space: str, *, model_config: str = str(TINY3), **trainer: Any) -> str:
    lines = [f"  {k}: {v}" for k, v in trainer.items()]
    if model_config:
        lines.append(f"  model_config: {model_config}")
    return (
        textwrap.dedent(f"""\
        name: {name}
        objective: {{metric: latency_ms, direction: minimize}}
        sampler: {{name: grid}}
        n_trials: 2
        executor: local
        search_space:
          {space}
        trainer:
          kind: text_classification
          model: minilm-l6
          dataset: bbc_news
          max_examples: 120
          max_length: 32
          epochs: 1
          save_model: false
        """)
        + "\n".join(lines)
        + "\n"
    )


def test_latency_objective_minimised_in_a_real_study(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(_study("latency", "num_layers: [1, 3]"))
    hpsearch.run_study(str(path))
    study = optuna.load_study(study_name="latency", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.params["num_layers"] for t in trials) == [1, 3]
    for t in trials:
        metrics = t.user_attrs["metrics"]
        assert t.value == metrics["latency_ms"] > 0
        assert t.intermediate_values == {}  # nothing reported per epoch for a cost objective
        assert set(COSTS) <= set(metrics) and t.user_attrs["latency_batch_size"] == 32
    by_layers = {t.params["num_layers"]: t.user_attrs["metrics"]["params"] for t in trials}
    assert by_layers[1] < by_layers[3]
