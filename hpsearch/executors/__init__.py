"""Executors: where trials run. ``EXECUTORS`` maps a name to its class."""

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
    execute_trial,
)

__all__ = [
    "BaseExecutor",
    "EXECUTORS",
    "EventKind",
    "Failure",
    "TrialEvent",
    "TrialJob",
    "TrialOutcome",
    "execute_trial",
    "make_executor",
]

EXECUTORS: dict[str, str] = {
    "ray": "hpsearch.executors._ray:RayExecutor",
    "local": "hpsearch.executors._local:LocalExecutor",
}


def make_executor(name: str, **kwargs: Any) -> BaseExecutor:
    module_name, _, attr = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)(**kwargs)
