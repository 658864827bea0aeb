"""The default ``ray`` executor for light trials: the first seconds of trials run on the driver.

Starting a private Ray and its workers costs seconds (about 3 s for ``ray.init``
and 1 s for ``ray.shutdown`` on a 2-core machine, more with workers to warm):
most of a short study such as the quickstart. :class:`DriverFirst` runs trials
of a light trainer (``BaseTrainer.runs_on_driver``, e.g. ``sklearn_cv``) on the
driver's threads, as ``--executor local`` would, for the study's first
``ray.driver_first_s`` seconds. A study that is done by then never starts Ray.
Otherwise the private Ray starts in the background while the driver goes on
running trials, and every trial submitted once it is up runs on Ray; the trials
already on the driver finish there.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from hpsearch.errors import one_line
from hpsearch.executors._base import BaseExecutor, EventKind, TrialEvent, TrialJob
from hpsearch.executors._local import LocalExecutor
from hpsearch.executors._ray import RayExecutor
from hpsearch.trainers._base import TrialResources

__all__ = ["DriverFirst", "driver_slots"]

logger = logging.getLogger("hpsearch")

#: While Ray starts, the driver's trials are polled this often (s), to notice it is up.
_BOOT_POLL_S = 0.1


def driver_slots(resources: TrialResources, max_concurrent: int | None) -> int:
    """Trials of this size that fit on this machine's CPUs at once (at least 1), capped by ``max_concurrent``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    fits = max(1, int(cpus // max(resources.cpus, 1e-9)))
    return min(fits, max_concurrent) if max_concurrent else fits


class DriverFirst(BaseExecutor):
    """Trials on the driver's threads for the first ``first_s`` seconds, then on the private Ray ``ray``.

    Args:
        ray: The private-Ray executor (not started; its workers are not warmed).
        slots: Trials at once on the driver (see :func:`driver_slots`).
        first_s: Seconds after :meth:`start` before the private Ray starts.
    """

    def __init__(
        self, ray: RayExecutor, slots: int, first_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ray = ray
        self.first_s = first_s
        self._driver = LocalExecutor(max_concurrent=slots)
        self._clock = clock
        self._t0: float | None = None
        self._on_ray = False
        self._ray_failed = False
        self._on_driver: set[int] = set()

    def describe(self) -> str:
        return f"{self.ray.describe()}; the first {self.first_s:g} s of trials on the driver"

    @property
    def on_ray(self) -> bool:
        """Whether new trials now go to Ray."""
        return self._on_ray

    def start(self) -> None:
        self._t0 = self._clock()

    def _advance(self) -> None:
        """Start Ray once ``first_s`` has passed; switch to it once it is up."""
        if self._on_ray or self._ray_failed or self._t0 is None:
            return
        if self.ray.starting() is None:
            if self._clock() - self._t0 < self.first_s:
                return
            self.ray.prestart()  # nothing to start in the background when Ray is already up here
        if self.ray.starting() is not True:
            try:
                self.ray.start()
            except Exception as e:  # noqa: BLE001 - the driver can go on alone
                self._ray_failed = True
                logger.warning(
                    "the private Ray did not start (%s); trials go on running on the driver's threads",
                    one_line(f"{type(e).__name__}: {e}")[:300],
                )
                return
            self._on_ray = True

    def free_slots(self, resources: TrialResources) -> int:
        self._advance()
        if self._on_ray:
            return max(0, self.ray.free_slots(resources) - len(self._on_driver))
        return self._driver.free_slots(resources)

    def submit(self, job: TrialJob) -> None:
        if self._on_ray:
            self.ray.submit(job)
            return
        self._on_driver.add(job.number)
        self._driver.submit(job)

    def poll(self, timeout: float) -> list[TrialEvent]:
        self._advance()
        if not self._on_ray:
            booting = self.ray.starting() is not None and not self._ray_failed
            return self._finished(self._driver.poll(min(timeout, _BOOT_POLL_S) if booting else timeout))
        if not self._on_driver:
            return self.ray.poll(timeout)
        events = self._finished(self._driver.poll(0))
        return events + self.ray.poll(0 if events else min(timeout, _BOOT_POLL_S))

    def _finished(self, events: list[TrialEvent]) -> list[TrialEvent]:
        for ev in events:
            if ev.kind is EventKind.FINISHED:
                self._on_driver.discard(ev.number)
        return events

    def decide(self, number: int, step: int, stop: bool) -> None:
        (self._driver if number in self._on_driver else self.ray).decide(number, step, stop)

    def cancel(self, number: int) -> None:
        (self._driver if number in self._on_driver else self.ray).cancel(number)

    def shutdown(self) -> None:
        try:
            self._driver.shutdown()
        finally:
            self.ray.shutdown()
