"""Image classification trials: a small CNN (or any torch module) with Keras-style augmentation.

``validate`` (driver) checks the model spec, the data and the searched names;
``run`` (worker, from :class:`~hpsearch.trainers.torch.TorchClassifierTrainer`)
loads and splits the images (:meth:`ImageClassificationTrainer.start_run`),
builds the model and trains it with the shared torch loop, augmenting each
training batch on the training device (:mod:`hpsearch.data._augment`) through
the loop's ``train_transform`` hook, so validation and test batches are never
augmented.

The saved model (``model/`` artifact, uploaded for the best trial) is
``config.json`` (architecture, normalisation, class names) plus
``model.pt`` (a ``state_dict``); :meth:`ImageClassificationTrainer.load_model`
rebuilds it. The model takes images ``(N, C, H, W)`` scaled to [0, 1]
(digits: value / 16) and normalises them itself.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import ConfigDict, Field

from hpsearch.data._augment import (
    AUGMENTATION_KNOBS,
    AUGMENTATION_PRESETS,
    Augmentation,
    AugmentationPreset,
)
from hpsearch.errors import ConfigError
from hpsearch.trainers._base import TrainerSettings, TrialContext
from hpsearch.trainers.torch import ClassifierRun, TorchClassifierTrainer, TorchTrainingSettings

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hpsearch.data._images import ImageSet, ImageSplits

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "ImageClassificationSettings",
    "ImageClassificationTrainer",
    "build_cnn",
]

#: Files of a saved model folder.
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"
#: Augmented sample grid left in the artifact folder.
SAMPLES_FILE = "augmented_samples.png"


class ImageClassificationSettings(TrainerSettings, TorchTrainingSettings, Augmentation):
    """``trainer:`` keys of ``kind: image_classification``.

    ``model`` is ``cnn`` (the built-in CNN, sized by ``width`` / ``depth``) or
    an import path ``package.module:Class`` / ``file.py:Class`` (relative to
    the study file); that class is called with those of ``num_classes``,
    ``in_channels``, ``image_size`` and ``dropout`` it accepts, plus
    ``model_kwargs``, and must map ``(N, C, H, W)`` to logits.

    ``augmentation_preset`` sets every augmentation knob (``none`` or
    ``keras_seed``: the seed article's ImageDataGenerator); knobs also given
    in ``trainer:`` or sampled by ``search_space`` override the preset.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = "cnn"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    width: int = Field(16, ge=1, le=1024, description="Channels of the first CNN block.")
    depth: int = Field(2, ge=1, le=8, description="Convolution blocks of the CNN.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout before the classifier.")
    dataset: str = "digits"
    image_size: tuple[int, int] | None = Field(
        None, description="[height, width] to resize to; None: keep (all images must match)."
    )
    channels: Literal[1, 3] | None = Field(None, description="None: 1 if all images are grey, else 3.")
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.0, ge=0, lt=1)
    max_examples: int | None = Field(None, ge=2)
    data_seed: int = 0
    augmentation_preset: AugmentationPreset | None = None
    sample_grid: int = Field(16, ge=0, le=256, description="Images in augmented_samples.png; 0: none.")
    save_model: bool = True
    # Image-sized defaults for the shared tunables.
    lr: float = Field(3e-3, gt=0, description="Peak learning rate.")
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(10, ge=1)
    lr_schedule: Literal["linear", "cosine", "constant"] = "cosine"

    def augmentation(self) -> Augmentation:
        """The augmentation knobs of these settings."""
        return Augmentation.model_validate({k: getattr(self, k) for k in AUGMENTATION_KNOBS})


#: Image-specific names a ``search_space`` may tune (besides TORCH_TUNABLES).
_IMAGE_TUNABLES = AUGMENTATION_KNOBS | {"width", "depth", "dropout", "augmentation_preset"}


# ---------------------------------------------------------------- models


def build_cnn(
    *,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    width: int = 16,
    depth: int = 2,
    dropout: float = 0.0,
) -> nn.Module:
    """``depth`` blocks of conv3x3-BN-ReLU (channels ``width · 2^i``, capped at 8×),
    max-pooled while the map is at least 4 pixels, then a 2×2 average pool,
    dropout and a linear classifier."""
    from torch import nn

    layers: list[nn.Module] = []
    channels, (h, w) = in_channels, image_size
    for i in range(depth):
        out = width * 2 ** min(i, 3)
        layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        if min(h, w) >= 4:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        channels = out
    pooled = (min(2, h), min(2, w))
    layers += [
        nn.AdaptiveAvgPool2d(pooled),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(channels * pooled[0] * pooled[1], num_classes),
    ]
    return nn.Sequential(*layers)


_CLASSES: dict[str, type] = {}


def _classifier_class() -> type:
    """``ImageClassifier``, defined on first use so that importing this module stays torch-free.

    It is published as ``hpsearch.trainers._image.ImageClassifier`` (module
    ``__getattr__``), so a model pickles and unpickles like any torch module.
    """
    if "ImageClassifier" not in _CLASSES:
        import torch
        from torch import nn

        class ImageClassifier(nn.Module):
            """``body((x - mean) / std)``; mean and std are buffers, saved in the state dict."""

            def __init__(self, body: nn.Module, mean: list[float], std: list[float]) -> None:
                super().__init__()
                self.body = body
                self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
                self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
                self.label_names: list[str] = []

            def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
                mean, std = cast(torch.Tensor, self.mean), cast(torch.Tensor, self.std)
                return self.body((pixel_values - mean) / std)

        ImageClassifier.__module__ = __name__
        ImageClassifier.__qualname__ = "ImageClassifier"
        _CLASSES["ImageClassifier"] = ImageClassifier
    return _CLASSES["ImageClassifier"]


def __getattr__(name: str) -> Any:
    if name == "ImageClassifier":
        return _classifier_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _user_model_class(spec: str, base_dir: Path) -> Any:
    from hpsearch.trainers._python import load_function

    return load_function(spec, base_dir, field="trainer.model")


def build_model(config: dict[str, Any], *, base_dir: Path) -> nn.Module:
    """The classifier described by a saved/derived ``config`` (see :data:`CONFIG_FILE`)."""
    shape = config["input_shape"]
    in_channels, image_size = int(shape[0]), (int(shape[1]), int(shape[2]))
    num_classes = len(config["label_names"])
    if config["model"] == "cnn":
        body = build_cnn(
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
            width=config["width"],
            depth=config["depth"],
            dropout=config["dropout"],
        )
    else:
        cls = _user_model_class(config["model"], base_dir)
        offered = {
            "num_classes": num_classes,
            "in_channels": in_channels,
            "image_size": image_size,
            "dropout": config["dropout"],
        }
        try:
            accepted: Mapping[str, inspect.Parameter] = inspect.signature(cls).parameters
        except (TypeError, ValueError):
            accepted = {}
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
        kwargs = {k: v for k, v in offered.items() if takes_all or k in accepted}
        body = cls(**kwargs, **config.get("model_kwargs", {}))
    model = _classifier_class()(body, config["mean"], config["std"])
    model.label_names = list(config["label_names"])
    return model


def _image_forward(model: nn.Module, batch: Any) -> torch.Tensor:
    return model(batch["pixel_values"])


class _ImageDataset:
    """Map-style dataset over an :class:`ImageSet` yielding ``(image tensor, label)``."""

    def __init__(self, data: ImageSet) -> None:
        import torch

        self.images = torch.from_numpy(data.images)
        self.labels = torch.from_numpy(data.labels)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


def _collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    import torch

    return {
        "pixel_values": torch.stack([x for x, _ in items]),
        "labels": torch.stack([y for _, y in items]),
    }


def save_sample_grid(originals: torch.Tensor, augmented: torch.Tensor, path: Path, *, per_row: int = 8) -> None:
    """PNG of rows of originals, each followed by a row of their augmented versions, upscaled."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    n, c, h, w = originals.shape
    scale = max(1, 64 // max(h, w))
    pad = 2
    rows = []
    for start in range(0, n, per_row):
        for part in (originals, augmented):
            chunk = part[start : start + per_row].float().clamp(0, 1)
            chunk = F.interpolate(chunk, scale_factor=scale, mode="nearest")
            chunk = F.pad(chunk, (pad, pad, pad, pad), value=1.0)
            if chunk.shape[0] < per_row:
                filler = torch.ones(per_row - chunk.shape[0], *chunk.shape[1:])
                chunk = torch.cat([chunk, filler])
            rows.append(torch.cat(list(chunk), dim=-1))
    grid = torch.cat(rows, dim=-2)  # (C, H', W')
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array[..., 0], mode="L") if c == 1 else Image.fromarray(array, mode="RGB")
    image.save(path)


class ImageClassificationTrainer(TorchClassifierTrainer[ImageClassificationSettings]):
    """Image classification with a small CNN or a user module, plus batched augmentation."""

    kind = "image_classification"
    Settings = ImageClassificationSettings
    task_tunables = _IMAGE_TUNABLES

    settings: ImageClassificationSettings

    def warm(self) -> None:
        """Import torch, the shared loop and the augmentation ops."""
        import hpsearch.data._augment  # noqa: F401

        super().warm()

    def merged_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The settings with a trial's ``params`` applied (preset first, explicit knobs win)."""
        explicit = self.settings.model_dump(exclude_unset=True)
        chosen = {**explicit, **params}
        preset = chosen.get("augmentation_preset")
        base = AUGMENTATION_PRESETS[AugmentationPreset(preset)] if preset is not None else {}
        return {**self.settings.model_dump(), **base, **chosen}

    def _load(self, s: ImageClassificationSettings) -> ImageSplits:
        from hpsearch.data._images import ImageDataError, split_images

        try:
            data = _cached_dataset(s.dataset, self.study_dir, s.image_size, s.channels)
            return split_images(
                data,
                val_fraction=s.val_fraction,
                test_fraction=s.test_fraction,
                seed=s.data_seed,
                max_examples=s.max_examples,
            )
        except ImageDataError as err:
            raise ConfigError(f"trainer.{err.field}: {err}") from err

    def saved_config(self, s: ImageClassificationSettings, splits: ImageSplits) -> dict[str, Any]:
        """The JSON config a saved model is rebuilt from."""
        images = splits.train.images
        axes = (0, 2, 3)
        mean = images.mean(axis=axes).tolist()
        std = [max(float(v), 1e-6) for v in images.std(axis=axes)]
        model = s.model
        if model != "cnn" and model.rpartition(":")[0].endswith(".py"):
            target, _, attr = model.rpartition(":")
            path = Path(target)
            model = f"{path if path.is_absolute() else (self.study_dir / path).resolve()}:{attr}"
        return {
            "format": "hpsearch.image_classification/1",
            "model": model,
            "model_kwargs": dict(s.model_kwargs),
            "width": s.width,
            "depth": s.depth,
            "dropout": s.dropout,
            "input_shape": list(splits.train.shape),
            "label_names": list(splits.label_names),
            "mean": mean,
            "std": std,
            "input_range": [0.0, 1.0],
        }

    # ------------------------------------------------------------ BaseTrainer

    def validate(self, param_names: set[str]) -> None:
        """Check searched names, the model spec (built once on the real shapes) and the data.

        Raises:
            ConfigError: naming ``trainer.<field>`` or ``search_space.<name>``.
        """
        super().validate(param_names)
        self.require_objective(self.objective, error=ConfigError, field="objective.metric")
        s = self.hyperparameters({})
        splits = self._load(s)
        if s.model != "cnn":
            try:
                build_model(self.saved_config(s, splits), base_dir=self.study_dir)
            except ConfigError:
                raise
            except Exception as err:  # noqa: BLE001 - the user's class failed to build
                raise ConfigError(f"trainer.model: building {s.model!r} raised {type(err).__name__}: {err}") from None

    @staticmethod
    def load_model(path: str | Path) -> nn.Module:
        """A saved trial model in eval mode; ``model.label_names`` holds the class names.

        Input: float images ``(N, C, H, W)`` in [0, 1]; output: logits.
        """
        import torch

        folder = Path(path)
        config = json.loads((folder / CONFIG_FILE).read_text())
        model = build_model(config, base_dir=folder)
        state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model.eval()

    # ------------------------------------------------------------ TorchClassifierTrainer

    def start_run(self, s: ImageClassificationSettings, ctx: TrialContext, rank: int) -> ClassifierRun:
        """Load and split the images, build the model and this rank's batch augmenter.

        Keeps data sizes, labels and the augmentation as trial attributes (the
        parameter count is the shared ``params`` metric).
        """
        from hpsearch.data._augment import BatchAugmenter

        splits = self._load(s)
        config = self.saved_config(s, splits)
        model = build_model(config, base_dir=self.study_dir)
        augmentation = s.augmentation()
        # Each rank draws its own augmentations; the same seed repeats them.
        augmenter = BatchAugmenter(augmentation, num_classes=len(splits.label_names), seed=s.seed * 1009 + rank)
        ctx.set_user_attr("data_sizes", splits.sizes())
        ctx.set_user_attr("label_names", list(splits.label_names))
        ctx.set_user_attr("augmentation", augmentation.model_dump(mode="json"))
        _record_evaluation(ctx, s, splits)
        return ClassifierRun(
            model=model,
            train=_ImageDataset(splits.train),
            val=_ImageDataset(splits.val),
            test=_ImageDataset(splits.test) if splits.test is not None else None,
            label_names=splits.label_names,
            train_collate=_collate,
            eval_collate=_collate,
            forward=_image_forward,
            train_transform=augmenter if augmenter.active else None,
            test_batch_size=max(s.batch_size, 256),
            state={"config": config, "augmentation": augmentation, "train": splits.train},
        )

    def save_outputs(self, job: ClassifierRun, s: ImageClassificationSettings, ctx: TrialContext) -> None:
        """``augmented_samples.png`` (``sample_grid``) and ``model/`` (``save_model``)."""
        out = ctx.artifact_dir
        if s.sample_grid:
            try:
                self._save_samples(job.state["augmentation"], job.state["train"], s, out / SAMPLES_FILE)
            except ImportError:  # the PNG is a nicety: say why it is missing
                ctx.set_user_attr("augmented_samples", "not saved: Pillow is missing (pip install -e '.[image]')")
        if s.save_model:
            import torch

            folder = out / "model"
            folder.mkdir(exist_ok=True)
            (folder / CONFIG_FILE).write_text(json.dumps(job.state["config"], indent=1))
            state = {k: v.detach().cpu() for k, v in job.model.state_dict().items()}
            torch.save(state, folder / WEIGHTS_FILE)

    @staticmethod
    def _save_samples(augmentation: Augmentation, train: ImageSet, s: ImageClassificationSettings, path: Path) -> None:
        """The first ``sample_grid`` training images, and the same images augmented."""
        import torch

        from hpsearch.data._augment import BatchAugmenter

        n = min(s.sample_grid, len(train))
        originals = torch.from_numpy(train.images[:n])
        augmenter = BatchAugmenter(augmentation, num_classes=int(train.labels.max()) + 1, seed=s.seed)
        batch = augmenter({"pixel_values": originals, "labels": torch.from_numpy(train.labels[:n])})
        save_sample_grid(originals, batch["pixel_values"], path)


_DATA: dict[tuple[str, str, Any, Any], ImageSet] = {}


def _cached_dataset(dataset: str, base_dir: Path, image_size: tuple[int, int] | None, channels: int | None) -> ImageSet:
    """Loaded images, kept per process (a worker running several trials reads them once)."""
    from hpsearch.data._images import load_image_dataset

    key = (dataset, str(base_dir), image_size, channels)
    if key not in _DATA:
        _DATA[key] = load_image_dataset(dataset, base_dir=base_dir, image_size=image_size, channels=channels)
    return _DATA[key]


def _record_evaluation(ctx: TrialContext, s: ImageClassificationSettings, splits: Any) -> None:
    """The ``evaluation`` trial attribute: which validation images scored the trial (see ``hpsearch compare``)."""
    from hpsearch.data._splits import EVALUATION_ATTR, array_ids, evaluation_record, ids_hash

    record = evaluation_record(
        s.dataset,
        split="holdout",
        examples=len(splits.val),
        val_hash=ids_hash(array_ids(splits.val.images)),
        max_examples=s.max_examples,
        val_fraction=s.val_fraction,
        test_fraction=s.test_fraction or None,
        data_seed=s.data_seed,
    )
    ctx.set_user_attr(EVALUATION_ATTR, record)
