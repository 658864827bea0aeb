"""Where trials run: the executor interface, and the code that runs one trial.

An executor accepts :class:`TrialJob` objects, runs each trainer somewhere
(in-process, on Ray), streams :class:`TrialEvent` objects back to the manager
and delivers its prune/stop decisions to the running trials. Executors never
touch storage: the manager is the only writer.
"""

from __future__ import annotations

import abc
import enum
import math
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpsearch.executors._output import LOG_NAME, LogTail, TrialLog, log_limit, render
from hpsearch.trainers._base import BaseTrainer, ReportChannel, TrialContext, TrialPruned, TrialResources

__all__ = [
    "BaseExecutor",
    "EventKind",
    "Failure",
    "TrialEvent",
    "TrialJob",
    "TrialOutcome",
    "attach_log",
    "execute_trial",
    "run_captured",
]

#: Lines of traceback kept with a failed trial.
TRACEBACK_LINES = 12
#: Files a trainer leaves under this folder of its artifact dir are the trial's saved model.
MODEL_DIR = "model"


class EventKind(enum.Enum):
    REPORT = "report"
    FINISHED = "finished"


@dataclass
class TrialJob:
    number: int
    params: dict[str, Any]
    trainer: BaseTrainer
    resources: TrialResources
    study_name: str
    objective: str
    work_dir: str | None = None
    #: The study's best value when the job was sent and whether larger is better: a saved
    #: model (files under ``model/``) that cannot beat it is dropped in the worker, not
    #: shipped to the driver, since only the best trial's model is kept.
    best_value: float | None = None
    maximize: bool = True
    #: The study's checkpoint store (a ``CheckpointStore``; None: no checkpoints) and the
    #: checkpoint (a ``CheckpointRef``) this trial continues from (None: a fresh start).
    checkpoints: Any = None
    resume: Any = None
    #: Load ``resume`` even if it was written with other params (a PBT segment's parent).
    resume_any_params: bool = False
    #: Where the driver appends the trial's output while it runs, for ``hpsearch logs --follow``
    #: (:func:`~hpsearch.executors.live_log_path`; None: no live copy). A path on the driver's machine.
    log_path: str | None = None
    #: Bytes of the trial's output kept in its ``trial.log`` (the last part); 0: not captured.
    #: Read from ``HPSEARCH_TRIAL_LOG_MB`` where the job is made (the driver).
    log_max_bytes: int = field(default_factory=log_limit)


@dataclass
class Failure:
    """Why a trial failed. ``retriable`` failures (worker died) may be re-run."""

    reason: str
    type: str = ""
    message: str = ""
    traceback: str = ""
    retriable: bool = False


@dataclass
class TrialOutcome:
    metrics: dict[str, float] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)
    placement: dict[str, Any] = field(default_factory=dict)
    pruned: bool = False
    failure: Failure | None = None
    #: What one rank of a data-parallel trial printed, until the ranks' logs are merged into ``trial.log``.
    log: LogTail | None = None


@dataclass
class TrialEvent:
    kind: EventKind
    number: int
    step: int = 0
    value: float = math.nan
    outcome: TrialOutcome | None = None


class BaseExecutor(abc.ABC):
    """Runs trials somewhere and streams their events back.

    Thread safety: all methods are called from the manager's thread only.
    """

    def prestart(self) -> None:
        """Begin slow start-up work in the background (optional); :meth:`start` finishes it.

        Called before the driver opens its storage, so the two overlap. Whoever calls
        it calls :meth:`shutdown` too, even if :meth:`start` is never reached.
        """
        return None

    @abc.abstractmethod
    def start(self) -> None:
        """Acquire what trials need (start or join a cluster)."""

    @abc.abstractmethod
    def free_slots(self, resources: TrialResources) -> int:
        """How many more trials of this size could start right now."""

    @abc.abstractmethod
    def submit(self, job: TrialJob) -> None:
        """Start a trial; its events arrive through :meth:`poll`."""

    @abc.abstractmethod
    def poll(self, timeout: float) -> list[TrialEvent]:
        """Events since the last call, waiting up to ``timeout`` s for the first."""

    @abc.abstractmethod
    def decide(self, number: int, step: int, stop: bool) -> None:
        """Answer a trial's report at ``step``: ``stop`` means prune (or stop) now."""

    @abc.abstractmethod
    def cancel(self, number: int) -> None:
        """Stop a trial at once (its FINISHED event may never come)."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Release what :meth:`start` acquired."""

    def describe(self) -> str:
        return type(self).__name__

    def __enter__(self) -> BaseExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _device(resources: TrialResources) -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if resources.gpus > 0 and visible not in (None, ""):
        return f"cuda:{visible}"
    return "cpu"


def classify_exception(exc: BaseException) -> Failure:
    """A Failure with a reason users can act on."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    tail = "\n".join(tb.rstrip().splitlines()[-TRACEBACK_LINES:])
    name = type(exc).__name__
    message = str(exc)
    text = f"{name}: {message}"
    if name == "OutOfMemoryError" or isinstance(exc, MemoryError) or "out of memory" in message.lower():
        reason = (
            f"out of memory ({text[:200]}); hint: use a smaller batch_size or max_length, "
            "or give each trial a larger GPU fraction (resources.gpus)"
        )
    elif getattr(exc, "hpsearch_reason", None):
        reason = str(exc.hpsearch_reason)  # type: ignore[attr-defined]
    else:
        reason = text[:500]
    return Failure(reason=reason, type=name, message=message[:2000], traceback=tail)


def collect_artifacts(root: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def _context(job: TrialJob, channel: ReportChannel) -> TrialContext:
    return TrialContext(
        trial_number=job.number,
        params=job.params,
        resources=job.resources,
        channel=channel,
        study_name=job.study_name,
        objective=job.objective,
        work_dir=Path(job.work_dir) if job.work_dir else None,
        cache_dir=job.checkpoints.cache_dir if job.checkpoints is not None else None,
        checkpoints=_trial_checkpoints(job),
    )


def _trial_checkpoints(job: TrialJob) -> Any:
    """The job's :class:`~hpsearch.checkpoints.TrialCheckpoints` (None without a store)."""
    if job.checkpoints is None:
        return None
    from hpsearch.checkpoints import TrialCheckpoints

    return TrialCheckpoints(
        job.checkpoints, job.number, dict(job.params), job.resume, same_params=not job.resume_any_params
    )


def execute_trial(job: TrialJob, channel: ReportChannel) -> TrialOutcome:
    """Run one trial where we are; never raises (failures become data)."""
    started = time.time()
    ctx = _context(job, channel)
    outcome = TrialOutcome()
    outcome.placement = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": _device(job.resources),
    }
    try:
        result = job.trainer.run(dict(job.params), ctx)
        if isinstance(result, dict):
            outcome.metrics = {str(k): _number(v) for k, v in result.items()}
        else:
            outcome.metrics = {job.objective: _number(result)}
    except TrialPruned:
        outcome.pruned = True
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reaches the whole process group, workers too:
        # the manager records the trial as interrupted and re-runs it.
        outcome.failure = Failure(reason="interrupted", type="KeyboardInterrupt", retriable=True)
    except Exception as exc:  # noqa: BLE001 - a failing trainer is data, not a crash
        outcome.failure = classify_exception(exc)
    outcome.user_attrs = dict(ctx.user_attrs)
    if ctx.has_artifacts:
        if not _may_be_best(job, outcome):
            shutil.rmtree(ctx.artifact_dir / MODEL_DIR, ignore_errors=True)
        outcome.artifacts = collect_artifacts(ctx.artifact_dir)
        shutil.rmtree(ctx.artifact_dir, ignore_errors=True)
    outcome.placement["run_s"] = round(time.time() - started, 4)
    return outcome


def _may_be_best(job: TrialJob, outcome: TrialOutcome) -> bool:
    """Whether this outcome's saved model could be kept (it beats ``job.best_value``)."""
    value = outcome.metrics.get(job.objective)
    if outcome.failure is not None or outcome.pruned or value is None or value != value:
        return False
    if job.best_value is None:
        return True
    return value > job.best_value if job.maximize else value < job.best_value


def _number(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise TypeError(f"metric value {v!r} is not a number") from None


Capture = Callable[[TrialLog], AbstractContextManager[None]]


def run_captured(
    job: TrialJob,
    channel: ReportChannel,
    capture: Capture,
    *,
    prefix: bytes = b"",
    sink: Callable[[bytes], Any] | None = None,
    ship_every: float = 0.0,
    keep_tail: bool = False,
) -> TrialOutcome:
    """:func:`execute_trial` with the trial's output (caught by ``capture``) kept as its ``trial.log`` artifact.

    A failed trial's log ends with its traceback. ``sink`` gets new lines while it runs
    (see :class:`~hpsearch.executors.TrialLog`); ``keep_tail`` also leaves what was kept in
    ``outcome.log``, for the ranks of a data-parallel trial to merge.
    """
    if job.log_max_bytes <= 0:
        return execute_trial(job, channel)
    log = TrialLog(job.log_max_bytes, prefix=prefix, sink=sink, ship_every=ship_every)
    with capture(log):
        outcome = execute_trial(job, channel)
    if outcome.failure is not None:
        f = outcome.failure
        text = f"[hpsearch] trial failed: {f.reason}\n" + (f"{f.traceback}\n" if f.traceback else "")
        log.write(text.encode(errors="replace"))
    tail = log.close()
    attach_log(outcome, [tail], job.log_max_bytes)
    if keep_tail:
        outcome.log = tail
    return outcome


def attach_log(outcome: TrialOutcome, tails: list[LogTail], max_bytes: int) -> None:
    """Put the merged ``tails`` into ``outcome.artifacts`` as ``trial.log`` (nothing when they are empty)."""
    data = render(tails, max_bytes)
    if data:
        outcome.artifacts[LOG_NAME] = data
    else:
        outcome.artifacts.pop(LOG_NAME, None)
