"""Failure recovery: driver ids, heartbeats, orphaned and ghost trials.

Optuna's heartbeats do not work with ask/tell, so the manager owns recovery:
trials left RUNNING by a dead driver are found at start, marked FAIL
("orphaned") and their params queued to run first; trials created twice after a
lost database acknowledgement ("ghosts", see :mod:`hpsearch.storage._mirror`)
are marked FAIL while the loop runs.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any

from hpsearch.search import RETRY_ATTR
from hpsearch.storage import _optuna as ox

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DRIVER_ATTR",
    "HEARTBEAT_EVERY_S",
    "HEARTBEAT_PREFIX",
    "HEARTBEAT_STALE_S",
    "GhostWatch",
    "Heartbeat",
    "driver_alive",
    "driver_id",
    "recover_orphans",
]

DRIVER_ATTR = "hpsearch:driver"
HEARTBEAT_PREFIX = "hpsearch:heartbeat:"
#: A driver on another host whose heartbeat is older than this is presumed dead.
HEARTBEAT_STALE_S = 120.0
HEARTBEAT_EVERY_S = 30.0

#: ``requeue(study, params, number, attempt)``: queue a trial's params to run again.
Requeue = Callable[["optuna.Study", dict[str, Any], int, int], None]


def _proc_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return ""


def driver_id() -> str:
    """``host:pid:start-time`` of this process: unique even when a pid is reused."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_proc_start(pid)}"


def driver_alive(ident: str, heartbeats: dict[str, float], now: float) -> bool:
    """Whether driver ``ident`` still runs: its process on this host, its heartbeat on another."""
    host, _, rest = ident.partition(":")
    pid_s, _, start = rest.partition(":")
    if host == socket.gethostname():
        try:
            pid = int(pid_s)
        except ValueError:
            return False
        if not os.path.exists(f"/proc/{pid}") and not _pid_exists(pid):
            return False
        return not start or _proc_start(pid) in ("", start)
    beat = heartbeats.get(ident)
    return beat is not None and now - beat < HEARTBEAT_STALE_S


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_orphans(study: optuna.Study, driver: str, requeue: Requeue) -> int:
    """Mark RUNNING trials of dead drivers FAIL ("orphaned") and queue their params; returns how many."""
    from optuna.trial import TrialState

    now = time.time()
    sys_attrs = ox.study_system_attrs(study)
    beats = {k[len(HEARTBEAT_PREFIX) :]: v for k, v in sys_attrs.items() if k.startswith(HEARTBEAT_PREFIX)}
    n = 0
    queued = {t.user_attrs.get("hpsearch.retry_of") for t in study.get_trials(deepcopy=False)}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        ident = t.system_attrs.get(DRIVER_ATTR)
        if ident is None or ident == driver or driver_alive(ident, beats, now):
            continue
        # Not the trial's fault: the re-run keeps its attempt number. A trial
        # without params died in its ask, before it was sent anywhere (unless it
        # was a queued retry: its params are the fixed ones). Queued before the
        # orphan is failed, so a driver killed in between loses no re-run; the
        # next driver finds the orphan still RUNNING and its re-run queued.
        params = t.params or t.system_attrs.get("fixed_params") or {}
        if params and t.number not in queued:
            requeue(study, params, t.number, int(t.user_attrs.get("hpsearch.attempt", 1)))
        ox.set_trial_user_attr(study, t, "fail_reason", "orphaned")
        ox.set_trial_system_attr(study, t, RETRY_ATTR, True)
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        n += 1
    return n


class Heartbeat:
    """Writes this driver's heartbeat into the study every :data:`HEARTBEAT_EVERY_S` seconds."""

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self._last = 0.0

    def beat(self, study: optuna.Study) -> None:
        """Write the heartbeat if one is due (other hosts read it in :func:`driver_alive`)."""
        now = time.time()
        if now - self._last >= HEARTBEAT_EVERY_S:
            ox.set_study_system_attr(study, HEARTBEAT_PREFIX + self.driver, now)
            self._last = now


class GhostWatch:
    """FAILs this driver's RUNNING trials that no task runs.

    A trial created twice because the database's acknowledgement was lost
    (see hpsearch.storage._mirror) leaves a "ghost". Checked after a retried
    write, every HEARTBEAT_EVERY_S and before the loop ends.
    """

    def __init__(self) -> None:
        self._retries = 0
        self._at = time.monotonic()

    def fail_ghosts(self, study: optuna.Study, running: Container[int], *, force: bool = False) -> list[int]:
        """Tell each ghost FAIL ("duplicate"); returns their numbers."""
        from optuna.trial import TrialState

        retries = ox.storage_retries(study)
        if retries is None:
            return []
        now = time.monotonic()
        if not force and retries == self._retries and now - self._at < HEARTBEAT_EVERY_S:
            return []
        self._retries, self._at = retries, now
        ghosts = ox.find_ghosts(study, running)
        for t in ghosts:
            ox.set_trial_user_attr(study, t, "fail_reason", "duplicate: created twice after a lost database connection")
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        return [t.number for t in ghosts]
