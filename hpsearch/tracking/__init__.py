"""Experiment trackers (MLflow, TensorBoard) as callbacks of the study manager.

The study file's ``tracking:`` block names them; :func:`tracking_callbacks`
turns it into one :class:`TrackingCallback` per tracker. The manager stays the
only writer of the study's storage, trial workers never talk to a tracker, and
a tracker that cannot be reached never fails the study (see ``_base``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpsearch.tracking._base import ATTR_PREFIX, UID_ATTR, BaseTracker, StudyInfo, final_metrics
from hpsearch.tracking._callback import TrackingCallback

if TYPE_CHECKING:
    from hpsearch.config import StudyConfig
    from hpsearch.study import BaseCallback
    from hpsearch.study._manager import StudyManager

__all__ = [
    "ATTR_PREFIX",
    "UID_ATTR",
    "BaseTracker",
    "StudyInfo",
    "TrackingCallback",
    "final_metrics",
    "make_trackers",
    "tracking_callbacks",
]


def make_trackers(config: StudyConfig) -> list[BaseTracker]:
    """The trackers the study's ``tracking:`` block names (ConfigError: a tracker's package is missing)."""
    from hpsearch.tracking._mlflow import MlflowTracker
    from hpsearch.tracking._tensorboard import TensorBoardTracker

    out: list[BaseTracker] = []
    if config.tracking.mlflow is not None:
        out.append(MlflowTracker(config.tracking.mlflow, config))
    if config.tracking.tensorboard is not None:
        out.append(TensorBoardTracker(config.tracking.tensorboard, config))
    return out


def tracking_callbacks(manager: StudyManager) -> list[BaseCallback]:
    """The trackers named in the study's ``tracking:`` block, as callbacks."""
    return [TrackingCallback(t, manager.config) for t in make_trackers(manager.config)]
