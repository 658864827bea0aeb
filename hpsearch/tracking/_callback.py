"""The study callback that feeds one tracker (design: :mod:`hpsearch.tracking._base`)."""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from hpsearch.errors import one_line
from hpsearch.storage import _optuna as ox
from hpsearch.storage._urls import mask_secrets
from hpsearch.study._callbacks import BaseCallback
from hpsearch.study._scheduling import WARM_START_ATTR
from hpsearch.tracking._base import (
    ATTR_PREFIX,
    FINAL_WAIT_S,
    RETRY_EVERY_S,
    BaseTracker,
    Job,
    StudyInfo,
    study_info,
)

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from hpsearch.config import StudyConfig
    from hpsearch.study import StudyStatus

__all__ = ["TrackingCallback"]

log = logging.getLogger("hpsearch.tracking")


class TrackingCallback(BaseCallback):
    """Logs every finished trial of the study to ``tracker``, exactly once, off the loop's thread.

    Args:
        tracker: Where trials go.
        config: The study (its objective names, artifact folder, the study file).
    """

    def __init__(self, tracker: BaseTracker, config: StudyConfig) -> None:
        self.tracker = tracker
        self.config = config
        self.info: StudyInfo | None = None
        #: Trial numbers with a reference stored, and those handed to the thread and not yet answered.
        self.logged: set[int] = set()
        self._in_flight: dict[int, FrozenTrial] = {}
        #: Trial numbers this driver logs (see :meth:`pending`); with ``_claim_all``, every finished one.
        self._wanted: set[int] = set()
        self._claim_all = False
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._answers: queue.Queue[tuple[int, str | None]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._opened = False
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._warned = False

    @property
    def _attr(self) -> str:
        return f"{ATTR_PREFIX}{self.tracker.key}:"

    # -- the loop's thread -------------------------------------------------

    def on_study_start(self, study: optuna.Study, status: StudyStatus) -> None:
        self.info = study_info(study, self.config)
        attrs = ox.study_system_attrs(study)
        self.logged = {int(k[len(self._attr) :]) for k in attrs if k.startswith(self._attr)}
        self._claim_all = True  # the catch-up: whatever earlier runs (or a down tracker) left
        self._thread = threading.Thread(target=self._work, name=f"hpsearch-{self.tracker.kind}", daemon=True)
        self._thread.start()
        self.sync(study, force=True)

    def on_trial_end(self, study: optuna.Study, number: int, status: StudyStatus) -> None:
        if number < 0:  # a whole-search import added its trials: take them all
            self._claim_all = True
        else:
            self._wanted.add(number)
        self.sync(study)

    def on_study_end(self, study: optuna.Study, status: StudyStatus) -> None:
        if self._thread is None:
            return
        self.sync(study, force=True)
        job = Job([], close=_summary(status))
        self._jobs.put(job)
        if not job.done.wait(FINAL_WAIT_S):
            log.warning(
                "%s at %s: still writing after %.0f s; what it has not written is logged on the next run",
                self.tracker.kind,
                self.tracker.where(),
                FINAL_WAIT_S,
            )
        self._jobs.put(None)
        self._record(study)
        self._thread = None

    def sync(self, study: optuna.Study, *, force: bool = False) -> None:
        """Store the references the thread answered; hand it the finished trials not yet logged."""
        self._record(study)
        if self._down_since is not None and not force and time.monotonic() < self._retry_at:
            return
        pending = self.pending(study)
        if pending or not self._opened:
            for t in pending:
                self._in_flight[t.number] = t
            self._jobs.put(Job(pending))

    def pending(self, study: optuna.Study) -> list[FrozenTrial]:
        """This driver's finished trials (warm-start history left out) neither logged nor in flight.

        This driver's: those it ended, and at the start of a run (or after an import) every
        finished trial not logged yet. Other drivers on the same study log the trials they end,
        so two drivers do not log one trial twice; what a driver left is caught up on the next run.
        """
        claim_all, self._claim_all = self._claim_all, False
        out = []
        for t in study.get_trials(deepcopy=False):
            if t.number in self.logged or t.number in self._in_flight or not t.state.is_finished():
                continue
            if (claim_all or t.number in self._wanted) and WARM_START_ATTR not in t.user_attrs:
                self._wanted.add(t.number)
                out.append(copy.deepcopy(t))
        return out

    def _record(self, study: optuna.Study) -> None:
        while True:
            try:
                number, ref = self._answers.get_nowait()
            except queue.Empty:
                return
            self._in_flight.pop(number, None)
            if ref is not None:
                ox.set_study_system_attr(study, f"{self._attr}{number}", ref)
                self.logged.add(number)

    # -- the tracker's thread ----------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._run(job)
            finally:
                job.done.set()

    def _run(self, job: Job) -> None:
        assert self.info is not None
        left = list(job.trials)
        try:
            self.tracker.probe()
            if not self._opened:
                self.tracker.open(self.info)
                self._opened = True
            while left:
                self._answers.put((left[0].number, self.tracker.log_trial(left[0], self.info)))
                left.pop(0)
            if job.close is not None:
                self.tracker.close(self.info, job.close)
            if job.trials:
                self._back()
        except Exception as e:  # noqa: BLE001 - a tracker never fails the study: retried later
            self._opened = False
            self._failed(e)
        for t in left:
            self._answers.put((t.number, None))

    def _back(self) -> None:
        if self._down_since is not None:
            log.warning("%s at %s: back; the trials it missed are logged", self.tracker.kind, self.tracker.where())
        self._down_since = None

    def _failed(self, err: BaseException) -> None:
        now = time.monotonic()
        self._retry_at = now + RETRY_EVERY_S
        if self._down_since is None:
            self._down_since = now
        if not self._warned:
            self._warned = True
            text = mask_secrets(one_line(f"{type(err).__name__}: {err}"))[:300]
            log.warning(
                "%s at %s failed (the study goes on; what it missed is logged when it is back or on the next run): %s",
                self.tracker.kind,
                self.tracker.where(),
                text,
            )


def _summary(status: StudyStatus) -> dict[str, Any]:
    """The run's end as trackers record it on the study's own run."""
    how = "interrupted" if status.interrupted else "failed" if status.out_of_failures else "finished"
    return {"best": status.best, "done": status.done, "pruned": status.pruned, "failed": status.failed, "end": how}
