"""Train / validation / optional test splits of any labelled set (text examples, images),
and the record of what a trial was evaluated on.

Every trainer leaves a trial attribute :data:`EVALUATION_ATTR` made by
:func:`evaluation_record`: the dataset, how many examples were scored, the split
(``holdout``, or ``cv:5 stratified``) and ``val_hash``, a short hash of the
validation examples (holdout) or of the fold assignment (cross-validation).
Two studies with the same ``val_hash`` were scored on the same examples, so
``hpsearch compare`` can tell a fair comparison from an unfair one.

Examples are identified by content where there is content to hash (a text:
:func:`text_ids`), else by their index in the dataset after subsampling, so a
text trainer and a scikit-learn pipeline scoring the same texts get the same hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "EVALUATION_ATTR",
    "LabelledSet",
    "Splits",
    "array_ids",
    "evaluation_record",
    "fold_hash",
    "ids_hash",
    "text_ids",
]

#: The trial attribute holding :func:`evaluation_record`'s dict.
EVALUATION_ATTR = "evaluation"
#: Hex digits kept of a split's hash: enough to tell splits apart, short enough for a table.
HASH_CHARS = 12


class LabelledSet(Protocol):
    """What a split holds: a sized set that knows its class names."""

    @property
    def label_names(self) -> tuple[str, ...]: ...

    def __len__(self) -> int: ...


T = TypeVar("T", bound=LabelledSet)


@dataclass(frozen=True)
class Splits(Generic[T]):
    """Train / validation / optional test parts of one labelled set."""

    train: T
    val: T
    test: T | None = None

    @property
    def label_names(self) -> tuple[str, ...]:
        """The class names (those of the training part)."""
        return self.train.label_names

    def sizes(self) -> dict[str, int]:
        """Number of items per split (0 for a missing test split)."""
        return {
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test) if self.test is not None else 0,
        }


def text_ids(texts: Iterable[str]) -> list[str]:
    """A content id per text (its sha256, 16 hex digits): the same text has the same id in every trainer."""
    return [hashlib.sha256(text.encode("utf-8")).hexdigest()[:16] for text in texts]


def array_ids(rows: Iterable[Any]) -> list[str]:
    """A content id per array row (an image): the sha256 of its dtype, shape and bytes, 16 hex digits."""
    out = []
    for row in rows:
        digest = hashlib.sha256(f"{getattr(row, 'dtype', '')}{getattr(row, 'shape', '')}".encode())
        digest.update(row.tobytes() if hasattr(row, "tobytes") else repr(row).encode())
        out.append(digest.hexdigest()[:16])
    return out


def ids_hash(ids: Iterable[object]) -> str:
    """A short hash of a set of example ids (order does not matter)."""
    joined = "\n".join(sorted(str(i) for i in ids))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:HASH_CHARS]


def fold_hash(ids: Sequence[object], folds: Sequence[Sequence[int]]) -> str:
    """A short hash of a fold assignment: which example (``ids[i]``) is validated in which fold.

    ``folds`` lists each fold's validation positions into ``ids``, in fold order.
    """
    pairs = sorted(f"{k}\t{ids[i]}" for k, fold in enumerate(folds) for i in fold)
    return hashlib.sha256("\n".join(pairs).encode("utf-8")).hexdigest()[:HASH_CHARS]


def evaluation_record(dataset: str, *, split: str, examples: int, val_hash: str, **settings: Any) -> dict[str, Any]:
    """What a trial was evaluated on, as stored in the :data:`EVALUATION_ATTR` trial attribute.

    Args:
        dataset: The dataset setting as written (``bbc_news``, a file path).
        split: ``holdout`` or ``cv:<k>`` (``cv:<k> stratified`` for stratified folds).
        examples: How many examples were scored (the validation examples of a holdout,
            every example of a cross-validation).
        val_hash: :func:`ids_hash` of the validation ids (holdout) or :func:`fold_hash` (CV).
        settings: What selected the examples (``max_examples``, ``val_fraction``, ``data_seed``
            ...); None values are left out.
    """
    record: dict[str, Any] = {"dataset": dataset, "examples": int(examples), "split": split, "val_hash": val_hash}
    record.update({k: v for k, v in settings.items() if v is not None})
    return record
