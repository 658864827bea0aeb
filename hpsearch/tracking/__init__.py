"""Experiment trackers (MLflow, TensorBoard) as callbacks of the study manager."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpsearch.study import BaseCallback
    from hpsearch.study._manager import StudyManager

__all__ = ["tracking_callbacks"]


def tracking_callbacks(manager: StudyManager) -> list[BaseCallback]:
    """The trackers named in the study's ``tracking:`` block, as callbacks."""
    return []
