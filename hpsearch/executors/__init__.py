"""Executors: where trials run (and how their output is kept). ``EXECUTORS`` maps a name to its class."""

from __future__ import annotations

import importlib
from typing import Any

from hpsearch.executors._base import (
    BaseExecutor,
    EventKind,
    Failure,
    TrialEvent,
    TrialJob,
    TrialOutcome,
    attach_log,
    execute_trial,
    run_captured,
)
from hpsearch.executors._output import (
    LIVE_LOGS_DIR,
    LOG_MB_ENV,
    LOG_NAME,
    LiveFile,
    LogTail,
    TrialLog,
    live_log_path,
    log_limit,
)

__all__ = [
    "BaseExecutor",
    "EXECUTORS",
    "EventKind",
    "Failure",
    "LIVE_LOGS_DIR",
    "LOG_MB_ENV",
    "LOG_NAME",
    "LiveFile",
    "LogTail",
    "TrialEvent",
    "TrialJob",
    "TrialLog",
    "TrialOutcome",
    "attach_log",
    "execute_trial",
    "live_log_path",
    "log_limit",
    "make_executor",
    "run_captured",
]

EXECUTORS: dict[str, str] = {
    "ray": "hpsearch.executors._ray:RayExecutor",
    "local": "hpsearch.executors._local:LocalExecutor",
}


def make_executor(name: str, **kwargs: Any) -> BaseExecutor:
    module_name, _, attr = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)(**kwargs)
