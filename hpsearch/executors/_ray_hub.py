"""The report hub: how a trial on Ray talks to the driver.

Trials push intermediate values to one async actor (:class:`ReportHub`); the
driver long-polls it in the same ``ray.wait`` as the trial tasks and answers
each report with a decision that the trial waits for in ``should_prune``.
:class:`HubChannel` is the trial-side end, used by single-process trials and by
rank 0 of a data-parallel trial. Trials also ship their output here
(:class:`HubLogSink`, every rank): the driver takes it with the reports and
appends it to the trial's live log. Output does not wake the driver: it rides
with the next report or the long-poll's end (at most ``drain``'s timeout
later), and a trial's last lines are taken when it ends (:meth:`ReportHub.take_logs`).
This module imports nothing else of the executors package, so both ``_ray``
and ``_ray_train`` can import it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["HubChannel", "HubLogSink", "ReportHub"]

#: Output held per trial for the driver at most (older output is dropped first).
MAX_HELD_LOG_BYTES = 8 * 1024 * 1024


class ReportHub:
    """Async actor: trials push reports, the driver drains them and decides."""

    def __init__(self) -> None:
        self._events: list[tuple[int, int, float]] = []
        self._new = asyncio.Event()
        self._decisions: dict[int, tuple[float, bool]] = {}
        self._waiters: dict[int, asyncio.Event] = {}
        self._outcomes: dict[int, dict[int, Any]] = {}
        self._logs: dict[int, list[bytes]] = {}
        self._log_bytes: dict[int, int] = {}
        #: The last batch drained, (sequence number, reports, output), until the driver acknowledges it.
        self._sent: tuple[int, list[tuple[int, int, float]], dict[int, bytes]] = (0, [], {})

    async def report(self, number: int, step: int, value: float) -> None:
        """Queue one intermediate value for the driver."""
        self._events.append((number, step, value))
        self._new.set()

    async def drain(self, timeout: float, ack: int = 0) -> tuple[int, list[tuple[int, int, float]], dict[int, bytes]]:
        """(sequence number, all queued reports, the output held by trial); waits up to ``timeout`` s
        for the first report. ``ack``: the last sequence number the driver received; a batch it has
        not acknowledged (its call was lost on the way back) is sent again first."""
        if self._sent[0] > ack:
            return self._sent
        if not self._events:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._new.wait(), timeout)
        events, self._events = self._events, []
        self._new.clear()
        logs = {number: b"".join(chunks) for number, chunks in self._logs.items()}
        self._logs.clear()
        self._log_bytes.clear()
        self._sent = (self._sent[0] + 1, events, logs)
        return self._sent

    async def log(self, number: int, data: bytes) -> None:
        """Hold new output of trial ``number`` for the driver (at most :data:`MAX_HELD_LOG_BYTES`)."""
        chunks = self._logs.setdefault(number, [])
        chunks.append(data)
        size = self._log_bytes.get(number, 0) + len(data)
        while size > MAX_HELD_LOG_BYTES and len(chunks) > 1:
            size -= len(chunks.pop(0))
        self._log_bytes[number] = size

    async def take_logs(self, number: int) -> bytes:
        """Hand over (and forget) the output held for trial ``number``."""
        self._log_bytes.pop(number, None)
        return b"".join(self._logs.pop(number, []))

    async def decide(self, number: int, step: float, stop: bool) -> None:
        """Answer trial ``number``'s reports up to ``step``: stop it or let it go on."""
        self._decisions[number] = (step, stop)
        self._waiters.setdefault(number, asyncio.Event()).set()

    async def decision(self, number: int, step: int) -> bool:
        """Wait for the driver's answer to the report at ``step``; True means stop."""
        while True:
            got = self._decisions.get(number)
            if got is not None and (got[0] >= step or got[1]):
                return got[1]
            ev = self._waiters.setdefault(number, asyncio.Event())
            await ev.wait()
            ev.clear()

    async def put_outcome(self, number: int, rank: int, outcome: Any) -> None:
        """Keep one rank's outcome of a data-parallel trial."""
        self._outcomes.setdefault(number, {})[rank] = outcome

    async def take_outcomes(self, number: int) -> dict[int, Any]:
        """Hand over (and forget) the ranks' outcomes of trial ``number``."""
        return self._outcomes.pop(number, {})

    async def forget(self, number: int) -> None:
        """Drop the decisions (and any output held) of a finished trial."""
        self._decisions.pop(number, None)
        self._waiters.pop(number, None)
        self._logs.pop(number, None)
        self._log_bytes.pop(number, None)


class HubChannel:
    """The trial-side end of the hub (lives in the Ray worker)."""

    def __init__(self, hub: Any) -> None:
        self._hub = hub

    def report(self, trial_number: int, step: int, value: float) -> None:
        """Send one intermediate value (fire and forget)."""
        self._hub.report.remote(trial_number, step, value)

    def decision(self, trial_number: int, step: int) -> bool:
        """Block until the driver has decided on the report at ``step``."""
        import ray

        return bool(ray.get(self._hub.decision.remote(trial_number, step)))


class HubLogSink:
    """A trial's output on its way to the hub (lives in the Ray worker): a ``TrialLog`` sink."""

    def __init__(self, hub: Any, number: int) -> None:
        self._hub = hub
        self._number = number
        self._last: Any = None

    def __call__(self, data: bytes) -> None:
        """Send new output (fire and forget)."""
        self._last = self._hub.log.remote(self._number, data)

    def wait(self) -> None:
        """Return once everything sent is held by the hub (calls from one worker arrive in order)."""
        if self._last is not None:
            import ray

            ray.get(self._last)
