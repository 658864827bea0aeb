"""The run's counts: refreshed from the study after each trial end, handed out as snapshots."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpsearch.study._callbacks import StudyStatus
from hpsearch.study._progress import ProgressStats

if TYPE_CHECKING:
    import optuna

__all__ = ["StatusTracker"]


class StatusTracker:
    """Counts finished trials and the best value; ``total`` is set once the scheduler knows it.

    Args:
        maximize: Whether a larger objective value is better.
        max_failures: The study's failure budget.
        imports: Whether the run is a whole-search import.
    """

    def __init__(self, *, maximize: bool, max_failures: int, imports: bool) -> None:
        self.maximize = maximize
        self.max_failures = max_failures
        self.imports = imports
        self.stats = ProgressStats()

    @property
    def best(self) -> float | None:
        """The best objective value of the study's COMPLETE trials at the last refresh."""
        return self.stats.best

    def refresh(self, study: optuna.Study, *, running: int, failures: int) -> None:
        """Count the study's trials again (all drivers' trials: the storage is the truth)."""
        from optuna.trial import TrialState

        s = self.stats
        s.done = s.pruned = 0
        best = None
        sign = 1 if self.maximize else -1
        for t in study.get_trials(deepcopy=False):
            if t.state == TrialState.COMPLETE:
                s.done += 1
                if t.value is not None and (best is None or sign * t.value > sign * best):
                    best = t.value
            elif t.state == TrialState.PRUNED:
                s.done += 1
                s.pruned += 1
        s.best, s.running, s.failed = best, running, failures

    def snapshot(self, *, running: int, failures: int, interrupted: bool) -> StudyStatus:
        """A read-only :class:`StudyStatus` of now."""
        s = self.stats
        out_of_failures = failures >= self.max_failures
        finished = not running and (
            self.imports or (s.total is not None and s.done >= s.total) or out_of_failures or interrupted
        )
        return StudyStatus(
            done=s.done,
            total=s.total,
            running=running,
            pruned=s.pruned,
            failed=s.failed,
            best=s.best,
            interrupted=interrupted,
            out_of_failures=out_of_failures,
            imports=self.imports,
            finished=finished,
        )
