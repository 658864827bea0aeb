"""Train / validation / optional test splits of any labelled set (text examples, images)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["LabelledSet", "Splits"]


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
