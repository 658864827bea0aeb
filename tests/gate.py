"""A barrier the test controls: a trainer whose trials cannot finish until the test says so.

Tests that must observe a study *while* it runs (poll a dashboard, restart a database)
used to start a study and hope it was still running; on a loaded machine it could be
over first. With :data:`GATED`, every trial writes ``arrived-<number>`` in the gate
folder and then blocks until it takes a ticket (``ticket-*``, renamed to
``claimed-<number>``: a rename is atomic, so each ticket lets exactly one trial
through). The test hands out tickets with :meth:`Gate.release` and waits for
trials to arrive or pass with :meth:`Gate.wait`: order, not timing.

Use: ``write_study(..., **{"gate.py": GATED})``, trainer ``"gate.py:gated"``, and run
the study with ``env=gate.env`` (the folder travels in ``HPS_GATE``).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpsearch.trainers.sklearn._cv import SklearnCVTrainer

GATED = '''
import os, time
from pathlib import Path


def gated(params, ctx):
    gate = Path(os.environ["HPS_GATE"])
    number = ctx.trial_number
    (gate / f"arrived-{number}").write_text("1")
    while True:
        for ticket in sorted(gate.glob("ticket-*")):
            try:
                ticket.rename(gate / f"claimed-{number}")
            except FileNotFoundError:  # another trial took this ticket first
                continue
            return (params["x"] - 1) ** 2
        time.sleep(0.02)
'''

#: A safety net, not a threshold: how long :meth:`Gate.wait` waits before failing the test.
PATIENCE_S = 300.0


class Gate:
    """The test's side of :data:`GATED`: hand out tickets, see which trials arrived or passed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._serial = itertools.count()

    @property
    def env(self) -> dict[str, str]:
        return {"HPS_GATE": str(self.folder)}

    def release(self, n: int = 1) -> None:
        """Let ``n`` more trials finish (now or whenever they arrive)."""
        for _ in range(n):
            (self.folder / f"ticket-{next(self._serial):06d}").write_text("")

    def _numbers(self, prefix: str) -> set[int]:
        return {int(p.name.split("-", 1)[1]) for p in self.folder.glob(f"{prefix}-*")}

    def arrived(self) -> set[int]:
        """Trials that reached the gate (running, or done)."""
        return self._numbers("arrived")

    def claimed(self) -> set[int]:
        """Trials that took a ticket: their trainer has returned (or is returning)."""
        return self._numbers("claimed")

    def waiting(self) -> set[int]:
        """Trials blocked at the gate right now."""
        return self.arrived() - self.claimed()

    def wait(self, what: str, ready: Callable[[], bool], proc: subprocess.Popen[str] | None = None) -> None:
        """:func:`wait_until` ``ready()``."""
        wait_until(what, ready, proc)


def wait_until(what: str, ready: Callable[[], bool], proc: subprocess.Popen[str] | None = None) -> None:
    """Return once ``ready()``; fail if ``proc`` exits first (or after PATIENCE_S, as a safety net)."""
    deadline = time.monotonic() + PATIENCE_S
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the study exited (rc {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {PATIENCE_S:.0f} s")
        time.sleep(0.02)



class GatedSklearnCV(SklearnCVTrainer):
    """A real sklearn_cv trainer whose trials wait for ``release-<number>`` in ``gate_dir``.

    Here, in an importable module rather than a test file, so that a Ray worker can unpickle it.
    """

    gate_dir = ""

    def run(self, params: dict[str, Any], ctx: Any) -> Any:
        gate = Path(self.gate_dir)
        (gate / f"arrived-{ctx.trial_number}").write_text(str(os.getpid()))
        while not (gate / f"release-{ctx.trial_number}").exists():
            time.sleep(0.02)
        return super().run(params, ctx)


def finish_trials(executor: Any, numbers: set[int], done: dict[int, Any] | None = None) -> dict[int, Any]:
    """Poll ``executor`` (never pruning) until trials ``numbers`` have finished; their outcomes by number.

    ``done`` holds outcomes already collected. Fails after 120 s, as a safety net.
    """
    done = {} if done is None else done
    deadline = time.monotonic() + 120
    while set(done) != numbers and time.monotonic() < deadline:
        for e in executor.poll(timeout=0.5):
            if e.kind.value == "finished":
                done[e.number] = e.outcome
            else:
                executor.decide(e.number, e.step, False)
    assert set(done) == numbers, "trials did not finish"
    return done
