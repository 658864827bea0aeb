"""The study manager: Optuna ask/tell in the driver, trials on an executor.

:class:`StudyManager` runs the loop; a :class:`BaseScheduler` decides what runs
next; :class:`BaseCallback` hooks (progress, the dashboard note, trackers) see
each step.
"""

from __future__ import annotations

from hpsearch.errors import Interrupted
from hpsearch.study._callbacks import BaseCallback, CallbackList, ProgressCallback
from hpsearch.study._manager import StudyManager
from hpsearch.study._prepare import Prepared, build_trainer, prepare, resolved_config_yaml
from hpsearch.study._progress import Progress
from hpsearch.study._scheduling import (
    BaseScheduler,
    ImportScheduler,
    SamplerScheduler,
    TrialToRun,
    make_scheduler,
)
from hpsearch.study._status import StudyStatus

__all__ = [
    "BaseCallback",
    "BaseScheduler",
    "CallbackList",
    "ImportScheduler",
    "Interrupted",
    "Prepared",
    "Progress",
    "ProgressCallback",
    "SamplerScheduler",
    "StudyManager",
    "StudyStatus",
    "TrialToRun",
    "build_trainer",
    "make_scheduler",
    "prepare",
    "resolved_config_yaml",
]
