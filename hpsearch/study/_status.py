"""The run's counts: refreshed from the study after each trial end, handed out as snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpsearch.study._objectives import feasible, pareto_front
from hpsearch.study._scheduling import WARM_START_ATTR

if TYPE_CHECKING:
    import optuna

__all__ = ["StatusTracker", "StudyStatus"]


@dataclass(frozen=True)
class StudyStatus:
    """Where this run of the study stands (a snapshot: later changes do not show in it).

    ``failed`` counts the failures held against ``max_failures`` in this run;
    ``finished`` is true once nothing runs and the run wants nothing more.
    """

    done: int = 0
    total: int | None = None
    running: int = 0
    pruned: int = 0
    failed: int = 0
    best: float | None = None
    #: Several objectives: the size of the Pareto front (``best`` is then None).
    front: int | None = None
    interrupted: bool = False
    out_of_failures: bool = False
    imports: bool = False
    finished: bool = False

    def line(self) -> str:
        """The counts as the progress display shows them."""
        total = "?" if self.total is None else str(self.total)
        best = "-" if self.best is None else f"{self.best:.6g}"
        tail = f"front {self.front}" if self.front is not None else f"best {best}"
        return f"trials {self.done}/{total}  running {self.running}  pruned {self.pruned}  failed {self.failed}  {tail}"


class StatusTracker:
    """Counts finished trials and the best value; ``total`` is set once the scheduler knows it.

    Args:
        directions: Each objective's direction; with several, the Pareto front's size is kept, not a best value.
        max_failures: The study's failure budget.
        imports: Whether the run is a whole-search import.
    """

    def __init__(self, *, directions: list[str], max_failures: int, imports: bool) -> None:
        self.directions = directions
        self.maximize = directions[0] == "maximize"
        self.max_failures = max_failures
        self.imports = imports
        #: The trials the run aims at (None: not known, e.g. an import); set by the manager.
        self.total: int | None = None
        #: Finished (COMPLETE or PRUNED) and pruned trials, and the best COMPLETE value, at the last refresh.
        self.done = self.pruned = 0
        self.best: float | None = None
        self.front: int | None = None

    def refresh(self, study: optuna.Study) -> None:
        """Count the study's trials again (all drivers' trials: the storage is the truth).

        Warm-start history (trials copied from an earlier study) is left out: the counts
        and the best value are this study's own. An infeasible trial is never the best.
        """
        from optuna.trial import TrialState

        done = pruned = 0
        best = None
        sign = 1 if self.maximize else -1
        own = [t for t in study.get_trials(deepcopy=False) if WARM_START_ATTR not in t.user_attrs]
        for t in own:
            if t.state == TrialState.COMPLETE:
                done += 1
                if len(self.directions) > 1 or t.value is None or not feasible(t):
                    continue
                if best is None or sign * t.value > sign * best:
                    best = t.value
            elif t.state == TrialState.PRUNED:
                done += 1
                pruned += 1
        self.done, self.pruned, self.best = done, pruned, best
        if len(self.directions) > 1:
            self.front = len(pareto_front(own, self.directions))

    def snapshot(self, *, running: int, failures: int, interrupted: bool) -> StudyStatus:
        """A read-only :class:`StudyStatus` of now."""
        out_of_failures = failures >= self.max_failures
        finished = not running and (
            self.imports or (self.total is not None and self.done >= self.total) or out_of_failures or interrupted
        )
        return StudyStatus(
            done=self.done,
            total=self.total,
            running=running,
            pruned=self.pruned,
            failed=failures,
            best=self.best,
            front=self.front,
            interrupted=interrupted,
            out_of_failures=out_of_failures,
            imports=self.imports,
            finished=finished,
        )
