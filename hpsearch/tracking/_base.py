"""Trackers as study callbacks: a catch-up pass in the loop, the tracker's writes on a thread.

The manager stays the only writer to the study's storage; trial workers never
see a tracker. A :class:`TrackingCallback` wraps one :class:`BaseTracker`:

* At the start of a run (the catch-up) and after a whole-search import, the
  loop thread takes every finished trial of the study not yet logged by this
  tracker (a set in memory, seeded from the study's system attributes); after
  each trial end, that trial and whatever is still pending. It hands copies to
  the tracker's own thread, so a slow or unreachable tracker never holds up the
  loop, and a trial end costs a scan of the trials already in memory, no read
  from the tracker. With several drivers on one study each logs the trials it
  ends; a trial another driver left unlogged is caught up on the next run.
* The thread logs each trial and answers with a reference (an MLflow run id, a
  TensorBoard folder); the loop thread stores it as the study system attribute
  ``hpsearch:<tracker key>:<trial number>``. (Not a trial system attribute:
  Optuna refuses writes to a finished trial.) A re-run never logs a trial twice:
  a trial with a reference is skipped, and a tracker finds what a killed run
  wrote but did not record (an MLflow run tagged with the trial's number).
* A tracker that fails (unreachable, refused) is reported once; what it missed
  stays pending and is tried again at the next trial end (at most every
  :data:`RETRY_EVERY_S`) and at the end of the run, and otherwise on the next run.
"""

from __future__ import annotations

import abc
import math
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.storage import _optuna as ox

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from hpsearch.config import StudyConfig

__all__ = [
    "ATTR_PREFIX",
    "FINAL_WAIT_S",
    "RETRY_EVERY_S",
    "UID_ATTR",
    "BaseTracker",
    "Job",
    "StudyInfo",
    "final_metrics",
    "study_info",
]

#: A tracker that failed is tried again at a trial end at most this often (and always at the run's end).
RETRY_EVERY_S = 10.0
#: The end of a run waits at most this long for the tracker to write what is pending.
FINAL_WAIT_S = 120.0
#: Study system attribute: a random id for the study, so a study recreated under the same name is new to trackers.
UID_ATTR = "hpsearch:tracking_uid"
#: Study system attributes ``hpsearch:<tracker key>:<trial number>`` hold each logged trial's reference.
ATTR_PREFIX = "hpsearch:"


@dataclass(frozen=True)
class StudyInfo:
    """What a tracker needs to know of the study (built in the loop thread)."""

    name: str
    uid: str
    #: The names of ``trial.values``, in order (the objectives' metrics).
    objective_names: tuple[str, ...]
    artifact_root: Path
    config_yaml: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Job:
    """Trials for the tracker's thread to log; with ``close``, the run's end after them."""

    trials: list[FrozenTrial]
    close: dict[str, Any] | None = None  # the run's summary: the tracker closes the study
    done: threading.Event = field(default_factory=threading.Event)


class BaseTracker(abc.ABC):
    """Where trials are logged. Its methods run on the tracker's thread only, one at a time.

    Any exception means the tracker is unreachable or refused the write: what it
    did not confirm is tried again later, so :meth:`log_trial` must be safe to
    call again for a trial it half wrote.
    """

    #: For messages: ``mlflow``, ``tensorboard``.
    kind = "tracker"

    @property
    @abc.abstractmethod
    def key(self) -> str:
        """Names this tracker's references in the study's system attributes (kind and destination)."""

    @abc.abstractmethod
    def where(self) -> str:
        """The destination, for messages (secrets masked)."""

    def probe(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Raise quickly when the tracker cannot be reached (default: nothing to check)."""

    @abc.abstractmethod
    def open(self, info: StudyInfo) -> None:
        """Connect and find or create the study's place (called again after a failure)."""

    @abc.abstractmethod
    def log_trial(self, trial: FrozenTrial, info: StudyInfo) -> str:
        """Log one finished trial; returns the reference recorded for it."""

    def close(self, info: StudyInfo, summary: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """The run ended: record ``summary`` (best value, counts, how it ended)."""


def final_metrics(trial: FrozenTrial, info: StudyInfo) -> dict[str, float]:
    """The trial's final numbers: its stored ``metrics`` and its objective values, by name."""
    out: dict[str, float] = {}
    stored = trial.user_attrs.get("metrics")
    if isinstance(stored, dict):
        for k, v in stored.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[str(k)] = float(v)
    values = trial.values or []
    names = list(info.objective_names)
    if len(names) != len(values):
        names = [f"objective_{i}" for i in range(len(values))] if len(values) > 1 else names[:1] or ["value"]
    for name, value in zip(names, values, strict=False):
        out[name] = float(value)
    return {k: v for k, v in out.items() if not math.isnan(v)}


def study_info(study: optuna.Study, config: StudyConfig) -> StudyInfo:
    """The study as trackers see it; gives the study its tracking id on first use (loop thread)."""
    from hpsearch.study import resolved_config_yaml

    uid = ox.study_system_attrs(study).get(UID_ATTR)
    if not isinstance(uid, str):
        uid = uuid.uuid4().hex
        ox.set_study_system_attr(study, UID_ATTR, uid)
    names = tuple(study.metric_names or ()) or tuple(o.metric for o in config.objectives)
    tags = {"objective": ",".join(names), "direction": ",".join(d.name.lower() for d in study.directions)}
    return StudyInfo(study.study_name, uid, names, config.resolved_artifacts(), resolved_config_yaml(config), tags)
