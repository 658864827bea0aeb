"""The study manager: Optuna ask/tell in the driver, trials on an executor.

The manager is the only process that writes to storage. Its loop is thin
(ask -> submit -> poll -> tell, as Optuna's ``study/_optimize.py``); each concern
lives in its own module:

* what runs next: a scheduler (:mod:`hpsearch.study._scheduling`);
* outcome -> state rules, retries, masking: :mod:`hpsearch.study._outcomes`;
* orphans, ghosts, heartbeats: :mod:`hpsearch.study._recovery`;
* opening the study: :mod:`hpsearch.study._opening`; artifacts: ``_artifacts``;
* progress, the dashboard note, trackers: callbacks (:mod:`hpsearch.study._callbacks`).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hpsearch.errors import Interrupted, StudyFailedError
from hpsearch.storage import _optuna as ox
from hpsearch.study._artifacts import ArtifactUploader
from hpsearch.study._callbacks import BaseCallback, CallbackList, ProgressCallback
from hpsearch.study._imports import import_search
from hpsearch.study._jobs import make_job, study_executor, trial_resources
from hpsearch.study._opening import open_study
from hpsearch.study._outcomes import OutcomeRecorder, RunningTrial, storage_secrets
from hpsearch.study._prepare import Prepared, prepare, resolved_config_yaml
from hpsearch.study._progress import Progress
from hpsearch.study._recovery import (
    DRIVER_ATTR,
    HEARTBEAT_EVERY_S,
    HEARTBEAT_PREFIX,
    HEARTBEAT_STALE_S,
    GhostWatch,
    Heartbeat,
    driver_id,
    recover_orphans,
)
from hpsearch.study._resume import CheckpointCleanup, start_point
from hpsearch.study._scheduling import BaseScheduler, TrialToRun, make_scheduler
from hpsearch.study._status import StatusTracker, StudyStatus

if TYPE_CHECKING:
    import optuna

    from hpsearch.config import StudyConfig
    from hpsearch.executors import BaseExecutor, TrialEvent
    from hpsearch.storage import StudyLock
    from hpsearch.views._results import StudyResult

__all__ = [
    "DRIVER_ATTR",
    "HEARTBEAT_EVERY_S",
    "HEARTBEAT_PREFIX",
    "HEARTBEAT_STALE_S",
    "Interrupted",
    "Prepared",
    "StudyManager",
    "prepare",
    "resolved_config_yaml",
]


class StudyManager:
    """Runs a study to its budget, resuming whatever the storage already holds.

    The constructor only stores its arguments; :meth:`run` checks, opens and runs the study.

    Args:
        config: The validated study.
        executor: Where trials run; default from ``config.executor``.
        more: Run this many trials beyond those finished, not up to ``n_trials``.
        progress: Show live progress (default: when stderr is a terminal).
        callbacks: Called at each step of the loop, after the built-in ones (:class:`~hpsearch.study.BaseCallback`).
        scheduler: Decides what runs next; default: the study's (see :func:`make_scheduler`).
    """

    prepared: Prepared
    study: optuna.Study

    def __init__(
        self,
        config: StudyConfig,
        *,
        executor: BaseExecutor | None = None,
        more: int | None = None,
        progress: bool | None = None,
        callbacks: Sequence[BaseCallback] = (),
        scheduler: BaseScheduler | None = None,
    ) -> None:
        self.config = config
        self.executor = executor
        self.more = more
        self.progress = progress
        self.callbacks = list(callbacks)
        self.scheduler = scheduler

    def _setup(self) -> None:
        """Check the study and build what the loop needs (nothing is written yet)."""
        self.prepared = prepare(self.config)
        self._driver = driver_id()
        #: The storage password (as written in the URL and decoded): masked in all trainer data stored.
        self._secrets = storage_secrets(self.prepared.storage_url)
        self._scheduler = self.scheduler or make_scheduler(self.prepared, more=self.more, driver=self._driver)
        self._artifacts = ArtifactUploader(self.config, self._secrets)
        self._outcomes = OutcomeRecorder(self.config, self._secrets, self._artifacts, self._scheduler.requeue)
        self._running: dict[int, RunningTrial] = {}
        self._multi = self.config.multi_objective
        self._failures = self._interrupts = 0
        self._status = StatusTracker(
            directions=[str(o.direction) for o in self.config.objectives],
            max_failures=self.config.max_failures,
            imports=self.prepared.trainer.imports_trials,
        )
        self._heartbeat = Heartbeat(self._driver)
        self._ghosts = GhostWatch()
        self._resources = trial_resources(self.config)
        self._events = CallbackList([*default_callbacks(self), *self.callbacks])

    def _open(self) -> int:
        """Open the study and recover dead drivers' trials under the study lock; returns orphans recovered."""
        from hpsearch.storage._locks import StudyLock

        self.study = study = open_study(self.prepared, self._driver)
        self._lock: StudyLock = StudyLock(self.prepared.storage_url, self.config.name, self._driver)
        with self._lock.hold():
            ox.refresh(study)
            orphans = recover_orphans(study, self._driver, self._scheduler.requeue)
        self._status.total = self._scheduler.start(study)
        self._refresh_stats(study)
        return orphans

    def run(self) -> StudyResult:
        """Run the study to its budget; returns its result.

        Raises:
            ConfigError, StorageError: The study cannot run (nothing written).
            StudyFailedError: ``max_failures`` trials failed.
            Interrupted: Ctrl-C; the next run resumes.
        """
        self._setup()
        executor = self.executor or study_executor(self.prepared)
        try:
            orphans = self._open()
            if self._scheduler.wants_more(self.study):  # nothing left to run: no Ray is started
                executor.prestart()  # a private Ray starts on a thread while the trainer prepares
            old_handler = None
            if threading.current_thread() is threading.main_thread():
                old_handler = signal.signal(signal.SIGINT, self._on_sigint)
            try:
                self._events.on_study_start(self.study, self.status())
                try:
                    self.prepared.trainer.prepare()
                    self._run_executor(executor)
                finally:
                    self._events.on_study_end(self.study, self.status())
            finally:
                self._lock.close()
                if old_handler is not None:
                    signal.signal(signal.SIGINT, old_handler)
        finally:
            executor.shutdown()
        return self._finish(orphans)

    def _run_executor(self, executor: BaseExecutor) -> None:
        """Start the executor if the study wants trials and run the loop (run() shuts it down)."""
        if not self._scheduler.wants_more(self.study):
            return
        executor.start()
        try:
            self._loop(self.study, executor)
        except KeyboardInterrupt:
            self._abandon_running(self.study, executor)
            raise Interrupted(
                f"interrupted; {len(self._running)} running trial(s) marked FAIL and queued; "
                "run the same command again to resume"
            ) from None

    def _finish(self, orphans: int) -> StudyResult:
        from hpsearch.views._results import StudyResult

        result = StudyResult(self.config.name, self.prepared.storage_url, config=self.config)
        result.__dict__["study"] = self.study  # reuse the open study: no second engine on the file
        result.orphans_recovered = orphans
        if self._interrupts:
            raise Interrupted("interrupted after the running trials stopped; run the same command again to resume")
        if self._failures >= self.config.max_failures:
            raise StudyFailedError(
                f"{self.prepared.file}: study {self.config.name!r} stopped after {self._failures} failed "
                f"trials (max_failures: {self.config.max_failures}); see `hpsearch show` for the reasons"
            )
        return result

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._interrupts += 1
        if self._interrupts >= 2:
            raise KeyboardInterrupt

    def _may_start(self, deadline: float) -> bool:
        """Whether new trials may start: no Ctrl-C, failures under budget, time left."""
        return not self._interrupts and self._failures < self.config.max_failures and time.monotonic() < deadline

    def _loop(self, study: optuna.Study, executor: BaseExecutor) -> None:
        from hpsearch.executors import EventKind

        deadline = time.monotonic() + self.config.timeout if self.config.timeout else math.inf
        while True:
            if self._interrupts and not any(r.stop_requested for r in self._running.values()):
                self._request_stop_all(executor)
            if self._may_start(deadline):
                self._fill(study, executor)
            self._fail_ghosts(study)
            if not self._running:
                if self._fail_ghosts(study, force=True):
                    continue
                break
            for event in executor.poll(timeout=0.5):
                if event.kind is EventKind.REPORT:
                    self._on_report(study, event, executor)
                    continue
                self._on_finished(study, event)
                if self._may_start(deadline):
                    # Refill the freed slot before handling the next event, so
                    # short trials do not fall into lockstep with the driver.
                    self._fill(study, executor)
            self._heartbeat.beat(study)

    def _fill(self, study: optuna.Study, executor: BaseExecutor) -> None:
        """Submit trials while the executor has free slots and the scheduler has trials."""
        while executor.free_slots(self._resources) > 0:
            # Count and ask under the study lock: with several drivers on one
            # study the total stays exact and no grid point is taken twice.
            with self._lock.hold() as stale:
                if stale:
                    ox.refresh(study)
                chosen = self._scheduler.next_trial(study)
                if chosen is None:
                    break
                self._submit(study, executor, chosen)

    def _submit(self, study: optuna.Study, executor: BaseExecutor, chosen: TrialToRun) -> None:
        resume = start_point(study, self.prepared.checkpoints, chosen)
        carried = None if resume is None else resume.step
        run = RunningTrial(chosen.trial, chosen.params, chosen.attempt, chosen.stop_at, carried, multi=self._multi)
        self._running[chosen.number] = run
        executor.submit(make_job(self.prepared, chosen, self._status.best, resume))
        self._events.on_trial_start(study, chosen.number, chosen.params, self.status())

    def _on_report(self, study: optuna.Study, event: TrialEvent, executor: BaseExecutor) -> None:
        run = self._running.get(event.number)
        if run is None:
            return
        if run.trial is None:  # a whole search reports progress only: it is never pruned
            executor.decide(event.number, event.step, False)
            return
        # After a stop request the step it finished is still real work: its value is kept.
        executor.decide(event.number, event.step, run.reported(study, event.step, event.value))
        self._events.on_report(study, event.number, event.step, event.value)

    def _request_stop_all(self, executor: BaseExecutor) -> None:
        """First Ctrl-C: ask every running trial to stop after its current step (a search stops at once)."""
        for number, run in list(self._running.items()):
            if run.trial is None:
                del self._running[number]
                executor.cancel(number)
                raise KeyboardInterrupt
            run.stop_requested = True
            executor.decide(number, math.inf, True)  # type: ignore[arg-type]

    def _on_finished(self, study: optuna.Study, event: TrialEvent) -> None:
        run = self._running.pop(event.number, None)
        if run is None:
            return
        outcome = event.outcome
        assert outcome is not None
        if run.trial is None:
            import_search(study, outcome, self.prepared, self._secrets, self._artifacts)
        elif self._outcomes.record(study, run, outcome, interrupted=self._interrupts > 0, best=self._status.best):
            self._failures += 1
        self._scheduler.on_trial_end(study, event.number)
        self._trial_ended(study, event.number)

    def _fail_ghosts(self, study: optuna.Study, *, force: bool = False) -> int:
        """FAIL this driver's ghosts (see :class:`~hpsearch.study._recovery.GhostWatch`); returns how many."""
        ghosts = self._ghosts.fail_ghosts(study, self._running, force=force)
        for number in ghosts:
            self._trial_ended(study, number)
        return len(ghosts)

    def _abandon_running(self, study: optuna.Study, executor: BaseExecutor) -> None:
        """Second Ctrl-C: record running trials as interrupted and queue them again."""
        for number in list(self._running):
            run = self._running.pop(number)
            executor.cancel(number)
            try:
                self._outcomes.fail(study, run, "interrupted", {}, retry=True)
                self._trial_ended(study, number)
            except Exception:  # noqa: BLE001 - the next run recovers them as orphans
                pass
            self._running[number] = run  # counted in the message

    def _trial_ended(self, study: optuna.Study, number: int) -> None:
        self._refresh_stats(study)
        self._events.on_trial_end(study, number, self.status())

    def _refresh_stats(self, study: optuna.Study) -> None:
        self._status.refresh(study)

    def status(self) -> StudyStatus:
        """A read-only snapshot of this run: counts, best value, and why it stops."""
        return self._status.snapshot(
            running=len(self._running), failures=self._failures, interrupted=self._interrupts > 0
        )


def default_callbacks(manager: StudyManager) -> list[BaseCallback]:
    """The progress display and the dashboard note of ``manager``'s study."""
    # Imported here: the note is a view (hpsearch.views), which imports this package.
    from hpsearch.tracking import tracking_callbacks
    from hpsearch.views._notes import StudyNote

    out: list[BaseCallback] = [ProgressCallback(Progress(manager.config.name, enabled=manager.progress))]
    out.append(StudyNote(manager))
    if manager.prepared.checkpoints is not None:
        directions: list[str] = [o.direction for o in manager.config.objectives]
        out.append(CheckpointCleanup(manager.prepared.checkpoints, directions=directions))
    return out + tracking_callbacks(manager)
