"""Trainers: what a trial does. ``TRAINERS`` maps ``trainer.kind`` to its class."""

from __future__ import annotations

import importlib

from hpsearch.trainers._base import (
    BaseTrainer,
    RecordingChannel,
    ReportChannel,
    TrainerSettings,
    TrialContext,
    TrialPruned,
    TrialResources,
)

__all__ = [
    "BaseTrainer",
    "RecordingChannel",
    "ReportChannel",
    "TRAINERS",
    "TrainerSettings",
    "TrialContext",
    "TrialPruned",
    "TrialResources",
    "trainer_class",
]

#: kind -> "module:Class", imported only when a study uses that kind.
TRAINERS: dict[str, str] = {
    "python": "hpsearch.trainers._python:PythonTrainer",
    "sklearn_cv": "hpsearch.trainers._sklearn_cv:SklearnCVTrainer",
    "text_classification": "hpsearch.trainers._text:TextClassificationTrainer",
}


def trainer_class(kind: str) -> type[BaseTrainer]:
    """Import and return the trainer class registered for ``kind``."""
    module_name, _, attr = TRAINERS[kind].partition(":")
    return getattr(importlib.import_module(module_name), attr)
