"""ImageClassificationTrainer on real digits and on a real PNG folder, with tiny CNNs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from hpsearch.errors import ConfigError
from hpsearch.trainers import (
    RecordingChannel,
    TrialContext,
    TrialPruned,
    TrialResources,
    trainer_class,
)
from hpsearch.trainers import _image
from hpsearch.trainers._image import ImageClassificationSettings, ImageClassificationTrainer
from hpsearch.trainers.torch import LATENCY_WARMUP, TORCH_TUNABLES, TorchTrainingSettings


def _trainer(tmp_path: Path, objective: str = "accuracy", **settings: Any) -> ImageClassificationTrainer:
    return ImageClassificationTrainer(
        ImageClassificationSettings.model_validate({"epochs": 2, "save_model": False, **settings}),
        study_dir=tmp_path,
        objective=objective,
    )


def _ctx(tmp_path: Path, objective: str = "accuracy", **channel: Any) -> TrialContext:
    return TrialContext(
        trial_number=0,
        params={},
        resources=TrialResources(cpus=1),
        channel=RecordingChannel(**channel),
        objective=objective,
        work_dir=tmp_path / "work",
    )


def test_registry_tunables_and_presets() -> None:
    cls = trainer_class("image_classification")
    assert cls is ImageClassificationTrainer and cls.supports_workers
    # The shared torch tunables come from _torch, plus every Keras knob.
    assert TORCH_TUNABLES <= cls.tunable
    assert issubclass(ImageClassificationSettings, TorchTrainingSettings)
    assert {"rotation_range", "fill_mode", "cval", "augment_prob", "mixup_alpha", "dropout"} <= cls.tunable
    assert "dataset" not in cls.tunable
    trainer = ImageClassificationTrainer(
        ImageClassificationSettings(zoom_range=0.05), study_dir=Path("."), objective="accuracy"
    )
    s = trainer.hyperparameters({"augmentation_preset": "keras_seed", "rotation_range": 5.0})
    # The preset fills the knobs; knobs set in trainer: or sampled win.
    assert (s.rotation_range, s.width_shift_range, s.zoom_range, s.horizontal_flip) == (5.0, 0.2, 0.05, True)
    none = trainer.hyperparameters({"augmentation_preset": "none"})
    assert (none.rotation_range, none.horizontal_flip, none.zoom_range) == (0.0, False, 0.05)
    with pytest.raises(ConfigError, match=r"search_space\.rotation_range"):
        trainer.hyperparameters({"rotation_range": -1.0})


def test_validation_and_test_batches_are_never_augmented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bool, torch.Tensor]] = []
    real_forward = _image._image_forward

    def spy(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        seen.append((model.training, batch["pixel_values"].detach().clone()))
        return real_forward(model, batch)

    monkeypatch.setattr(_image, "_image_forward", spy)
    trainer = _trainer(
        tmp_path, augmentation_preset="keras_seed", rotation_range=45.0, augment_prob=1.0,
        test_fraction=0.2, max_examples=600, save_model=True,
    )
    ctx = _ctx(tmp_path)
    trainer.run({}, ctx)
    splits = trainer._load(trainer.hyperparameters({}))
    originals = {
        name: {tuple(img.ravel().tolist()) for img in part.images}
        for name, part in (("train", splits.train), ("eval", splits.val), ("test", splits.test))
    }
    train = [x for training, x in seen if training]
    evals = [x for training, x in seen if not training]
    assert train and evals
    eval_rows = [tuple(img.ravel().tolist()) for x in evals for img in x]
    # 2 validation passes (one per epoch), one test pass and the latency pass (its untimed
    # warm-up batches of 32, then the timed ones), all original images.
    latency = LATENCY_WARMUP * 32 + ctx.user_attrs["latency_examples"]
    assert len(splits.val) >= LATENCY_WARMUP * 32 and ctx.user_attrs["latency_batch_size"] == 32
    assert len(eval_rows) == 2 * len(splits.val) + len(splits.test) + latency
    assert set(eval_rows) <= originals["eval"] | originals["test"]
    train_rows = [tuple(img.ravel().tolist()) for x in train for img in x]
    assert len(train_rows) == 2 * len(splits.train)
    augmented = sum(row not in originals["train"] for row in train_rows)
    assert augmented > 0.95 * len(train_rows)
    assert ctx.user_attrs["augmentation"]["rotation_range"] == 45.0
    # The sample grid: 16 originals and their augmented versions, upscaled 8x with padding.
    grid = Image.open(ctx.artifact_dir / "augmented_samples.png")
    assert grid.mode == "L" and grid.size == (8 * (64 + 4), 4 * (64 + 4))


def test_loss_objective_is_returned_under_its_own_name(tmp_path: Path) -> None:
    """objective.metric "loss" (the validation loss): the manager looks the metric up by that name."""
    trainer = _trainer(tmp_path, objective="loss", epochs=1, max_examples=300, sample_grid=0)
    ctx = _ctx(tmp_path, objective="loss")
    metrics = trainer.run({}, ctx)
    assert metrics["loss"] == metrics["val_loss"] > 0
    assert ctx._channel.reports[-1][1] == pytest.approx(metrics["loss"])  # type: ignore[attr-defined]
    assert {"time_train", "time_to_first_step", "epochs_run", "steps"} <= set(metrics)
    assert (ctx.artifact_dir / "curve.json").exists() and ctx.user_attrs["confusion_matrix"]


def test_pruned_image_trial_stops(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, epochs=4, max_examples=300)
    ctx = _ctx(tmp_path, prune=lambda step, value: step >= 1)
    with pytest.raises(TrialPruned):
        trainer.run({"optimizer": "sgd", "lr": 0.05}, ctx)
    assert [step for step, _ in ctx._channel.reports] == [1]  # type: ignore[attr-defined]


USER_MODEL = '''
import torch
from torch import nn

class TinyMLP(nn.Module):
    def __init__(self, num_classes, in_channels, image_size, hidden=32):
        super().__init__()
        h, w = image_size
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)
'''


def _png_folder(root: Path, *, sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    """Digits 0, 1 and 7 as 16x16 RGB PNGs (and a few JPEGs), one folder per class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = root / "images"
    for label, name in ((0, "zero"), (1, "one"), (7, "seven")):
        (folder / name).mkdir(parents=True)
        for i, img in enumerate(digits.images[digits.target == label][:40]):
            pixels = (img / 16 * 255).astype(np.uint8)
            size = (sizes or {}).get(name, (16, 16))
            image = Image.fromarray(pixels, mode="L").resize(size).convert("RGB")
            suffix = ".jpg" if i % 10 == 0 else ".png"
            image.save(folder / name / f"{i}{suffix}")
    (folder / "zero" / "notes.txt").write_text("not an image")
    return folder


def test_png_folder_with_user_model_trains_saves_and_reloads(tmp_path: Path) -> None:
    _png_folder(tmp_path)
    (tmp_path / "my_model.py").write_text(USER_MODEL)
    trainer = _trainer(
        tmp_path, dataset="images", model="my_model.py:TinyMLP", model_kwargs={"hidden": 16},
        epochs=6, lr=1e-2, save_model=True, rotation_range=10.0, fill_mode="reflect",
        mixup_alpha=0.2, cutout_size=0.2,
    )
    trainer.validate({"lr", "zoom_range"})
    ctx = _ctx(tmp_path)
    metrics = trainer.run({"zoom_range": 0.1}, ctx)
    assert metrics["accuracy"] >= 0.8, metrics
    assert ctx.user_attrs["data_sizes"] == {"train": 96, "val": 24, "test": 0}
    assert ctx.user_attrs["label_names"] == ["one", "seven", "zero"]
    model_dir = ctx.artifact_dir / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["input_shape"] == [3, 16, 16] and config["model"].endswith("my_model.py:TinyMLP")
    grid = Image.open(ctx.artifact_dir / "augmented_samples.png")
    assert grid.mode == "RGB"
    # A user who loads the exported folder gets the same predictions.
    model = ImageClassificationTrainer.load_model(model_dir)
    assert not model.training and model.label_names == ["one", "seven", "zero"]
    splits = trainer._load(trainer.hyperparameters({}))
    x = torch.from_numpy(splits.val.images)
    preds = model(x).argmax(-1).numpy()
    assert (preds == splits.val.labels).mean() == pytest.approx(metrics["accuracy"])


def test_bad_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"search_space\.max_length: trainer 'image_classification'"):
        _trainer(tmp_path).validate({"max_length"})
    with pytest.raises(ConfigError, match=r"trainer\.dataset: 'nope' is neither"):
        _trainer(tmp_path, dataset="nope").validate(set())
    with pytest.raises(ConfigError, match=r"trainer\.model: file .*missing\.py does not exist"):
        _trainer(tmp_path, model="missing.py:Net").validate(set())
    with pytest.raises(ConfigError, match=r"objective\.metric"):
        _trainer(tmp_path, objective="r2").validate(set())
    _png_folder(tmp_path, sizes={"one": (12, 12)})
    with pytest.raises(ConfigError, match=r"trainer\.image_size: images in .* have different sizes"):
        _trainer(tmp_path, dataset="images").validate(set())
    # With image_size they are resized and load.
    _trainer(tmp_path, dataset="images", image_size=(10, 10)).validate(set())
