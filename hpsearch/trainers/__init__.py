"""Trainers: what a trial does. ``TRAINERS`` maps ``trainer.kind`` to its class."""

from __future__ import annotations

import importlib

from hpsearch.trainers._base import (
    RECORDS_ATTR,
    BaseTrainer,
    NonFiniteLoss,
    RecordingChannel,
    ReportChannel,
    TrainerSettings,
    TrialContext,
    TrialPruned,
    TrialRecord,
    TrialResources,
)

__all__ = [
    "RECORDS_ATTR",
    "BaseTrainer",
    "NonFiniteLoss",
    "RecordingChannel",
    "ReportChannel",
    "TRAINERS",
    "TrainerSettings",
    "TrialContext",
    "TrialPruned",
    "TrialRecord",
    "TrialResources",
    "trainer_class",
]

#: kind -> "module:Class", imported only when a study uses that kind.
TRAINERS: dict[str, str] = {
    "python": "hpsearch.trainers._python:PythonTrainer",
    "sklearn_cv": "hpsearch.trainers.sklearn._cv:SklearnCVTrainer",
    "sklearn_search": "hpsearch.trainers.sklearn._search:SklearnSearchTrainer",
    "text_classification": "hpsearch.trainers._text:TextClassificationTrainer",
    "image_classification": "hpsearch.trainers._image:ImageClassificationTrainer",
}


def trainer_class(kind: str) -> type[BaseTrainer]:
    """Import and return the trainer class registered for ``kind``."""
    module_name, _, attr = TRAINERS[kind].partition(":")
    return getattr(importlib.import_module(module_name), attr)
