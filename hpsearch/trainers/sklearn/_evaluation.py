"""What the scikit-learn trainers score on: cross-validation folds or the text trainer's holdout.

``validation: cv`` (the default) scores each candidate by ``cv``-fold cross-validation
(:func:`~hpsearch.trainers.sklearn._common.make_cv`). ``validation: holdout`` scores it
once, on the validation part of the split the text trainer makes with the same
``max_examples``, ``val_fraction``, ``test_fraction`` and ``data_seed``
(:func:`hpsearch.data._text.holdout_indices`), so a TF-IDF baseline and a fine-tune are
scored on the very same examples; a test part, if any, is never used.

Either way the trainers record what they were scored on (:func:`hpsearch.data._splits.evaluation_record`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpsearch.data._splits import evaluation_record, fold_hash, ids_hash, text_ids
from hpsearch.errors import ConfigError
from hpsearch.trainers.sklearn._common import TEXT_DATASETS, SklearnSettings, load_xy, make_cv

__all__ = ["EvalData", "check_validation", "evaluation_data"]

#: Settings that only mean something for one ``validation`` mode.
_ONLY_FOR = {"cv": ("cv", "shuffle"), "holdout": ("val_fraction", "test_fraction")}


@dataclass(frozen=True)
class EvalData:
    """The examples a candidate is fitted and scored on, how to split them, and the record of it.

    ``cv`` is what scikit-learn's ``cv=`` argument takes: the (Stratified)KFold splitter, or
    a ``PredefinedSplit`` whose one fold is the holdout (train rows first, then validation).
    """

    X: Any
    y: Any
    cv: Any
    record: dict[str, Any] = field(default_factory=dict)

    def splits(self) -> list[tuple[Any, Any]]:
        """(train, validation) row positions of each fold, in fold order."""
        return list(self.cv.split(self.X, self.y))


def check_validation(s: SklearnSettings) -> None:
    """Refuse a setting of the other ``validation`` mode (it would be silently ignored)."""
    other = "holdout" if s.validation == "cv" else "cv"
    for name in _ONLY_FOR[other]:
        if name in s.model_fields_set:
            raise ConfigError(
                f"trainer.{name}: only used with validation: {other}, but validation is {s.validation!r}; "
                f"remove {name} or set validation: {other}"
            )


def _is_text(s: SklearnSettings) -> bool:
    return s.dataset in TEXT_DATASETS or s.text_column is not None


def evaluation_data(s: SklearnSettings, base_dir: Path, estimator: Any) -> EvalData:
    """The rows, the folds and the ``evaluation`` record of settings ``s``."""
    if s.validation == "holdout":
        return _holdout(s, base_dir)
    X, y = load_xy(s, base_dir)
    splitter = make_cv(s, estimator, y)
    folds = [val for _, val in splitter.split(X, y)]
    ids = text_ids(X) if _is_text(s) else list(range(len(y)))
    stratified = "stratified" in type(splitter).__name__.lower()
    record = evaluation_record(
        s.dataset,
        split=f"cv:{len(folds)}" + (" stratified" if stratified else ""),
        examples=len(y),
        val_hash=fold_hash(ids, folds),
        folds=len(folds),
        max_examples=s.max_examples,
        data_seed=s.data_seed if s.shuffle else None,
    )
    return EvalData(X, y, splitter, record)


def _holdout(s: SklearnSettings, base_dir: Path) -> EvalData:
    """The text trainer's train and validation rows (train first), as one predefined fold."""
    import numpy as np
    from sklearn.model_selection import PredefinedSplit

    from hpsearch.data._text import DataSourceError, holdout_indices

    X, y = load_xy(s.model_copy(update={"max_examples": None}), base_dir)
    try:
        train, val, _ = holdout_indices(
            list(y),
            max_examples=s.max_examples,
            val_fraction=s.val_fraction,
            test_fraction=s.test_fraction,
            seed=s.data_seed,
        )
    except DataSourceError as err:
        raise ConfigError(f"trainer.{err.field}: {err}") from None
    rows = np.asarray(train + val, dtype=int)
    test_fold = np.concatenate([np.full(len(train), -1), np.zeros(len(val), dtype=int)])
    ids = text_ids(X[val]) if _is_text(s) else val
    record = evaluation_record(
        s.dataset,
        split="holdout",
        examples=len(val),
        val_hash=ids_hash(ids),
        max_examples=s.max_examples,
        val_fraction=s.val_fraction,
        test_fraction=s.test_fraction or None,
        data_seed=s.data_seed,
    )
    return EvalData(X[rows], y[rows], PredefinedSplit(test_fold), record)
