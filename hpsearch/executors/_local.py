"""Run trials in this process, on threads: for debugging and notebooks.

Each trial's prints are routed to its own ``trial.log`` by thread (see
:func:`~hpsearch.executors._output.thread_output`) and, when its job names a
``log_path``, appended there as they come, for ``hpsearch logs --follow``.
"""

from __future__ import annotations

import queue
import threading

from hpsearch.executors._base import BaseExecutor, EventKind, TrialEvent, TrialJob, TrialOutcome, run_captured
from hpsearch.executors._output import LiveFile, thread_output
from hpsearch.trainers._base import TrialResources

__all__ = ["LocalExecutor"]


class _ThreadChannel:
    def __init__(self, events: queue.Queue[TrialEvent]) -> None:
        self._events = events
        self._cond = threading.Condition()
        self._decisions: dict[int, tuple[float, bool]] = {}

    def report(self, trial_number: int, step: int, value: float) -> None:
        self._events.put(TrialEvent(EventKind.REPORT, trial_number, step=step, value=value))

    def decision(self, trial_number: int, step: int) -> bool:
        with self._cond:
            while True:
                got = self._decisions.get(trial_number)
                if got is not None and (got[0] >= step or got[1]):
                    return got[1]
                self._cond.wait()

    def decide(self, number: int, step: float, stop: bool) -> None:
        with self._cond:
            self._decisions[number] = (step, stop)
            self._cond.notify_all()


def run_on_thread(job: TrialJob, channel: _ThreadChannel) -> TrialOutcome:
    """Run ``job`` on this thread, its output kept (and live in ``job.log_path`` while it runs)."""
    live = LiveFile(job.log_path, job.log_max_bytes) if job.log_path and job.log_max_bytes > 0 else None
    try:
        return run_captured(job, channel, thread_output, sink=live.append if live else None)
    finally:
        if live is not None:
            live.close()  # before FINISHED is sent: the manager tells the trial after that


class LocalExecutor(BaseExecutor):
    """Trials run on threads of this process, ``max_concurrent`` at a time (default 1)."""

    def __init__(self, max_concurrent: int | None = None) -> None:
        self.max_concurrent = max_concurrent or 1
        self._events: queue.Queue[TrialEvent] = queue.Queue()
        self._channel = _ThreadChannel(self._events)
        self._running: dict[int, threading.Thread] = {}

    def start(self) -> None:
        pass

    def free_slots(self, resources: TrialResources) -> int:
        # A slot frees when poll() hands out its trial's FINISHED event, which the thread
        # sends as it ends (a cancelled one too): the manager sees a trial's outcome
        # (e.g. its failure budget used up) before it fills the slot again.
        return self.max_concurrent - len(self._running)

    def submit(self, job: TrialJob) -> None:
        def target() -> None:
            outcome = run_on_thread(job, self._channel)
            self._events.put(TrialEvent(EventKind.FINISHED, job.number, outcome=outcome))

        t = threading.Thread(target=target, name=f"trial-{job.number}", daemon=True)
        self._running[job.number] = t
        t.start()

    def poll(self, timeout: float) -> list[TrialEvent]:
        out: list[TrialEvent] = []
        try:
            out.append(self._events.get(timeout=timeout))
            while True:
                out.append(self._events.get_nowait())
        except queue.Empty:
            pass
        for ev in out:
            if ev.kind is EventKind.FINISHED:
                self._running.pop(ev.number, None)
        return out

    def decide(self, number: int, step: int, stop: bool) -> None:
        self._channel.decide(number, step, stop)

    def cancel(self, number: int) -> None:
        # Threads cannot be killed: ask the trial to stop at its next report. Its
        # thread keeps its slot until it ends and poll() reports it (see free_slots).
        self._channel.decide(number, float("inf"), True)

    def shutdown(self) -> None:
        # Threads are daemons: one still running when the driver exits dies with it.
        for number in list(self._running):
            self.cancel(number)
