"""The study manager: Optuna ask/tell in the driver, trials on an executor."""

from __future__ import annotations

from hpsearch.study._manager import (
    StudyManager,
    Interrupted,
    Prepared,
    prepare,
    resolved_config_yaml,
)
from hpsearch.study._progress import (
    Progress,
    ProgressStats,
)

__all__ = [
    "Interrupted",
    "Prepared",
    "Progress",
    "ProgressStats",
    "StudyManager",
    "prepare",
    "resolved_config_yaml",
]
