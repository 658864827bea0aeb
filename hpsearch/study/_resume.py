"""Resume mid-trial: a re-run continues from its predecessor's last checkpoint; old checkpoints go.

Optuna cannot revive a finished trial, so the re-run of a stopped trial (Ctrl-C,
a killed driver's orphan, a dead worker's retry, a lost node) is a new trial. When
its predecessor (or the trial that one resumed from, and so on) left a checkpoint,
the new trial:

* gets the checkpoint in its job (the trainer loads it through ``ctx.load_checkpoint``),
* records ``resumed_from = {"trial": N, "step": S}``,
* carries the predecessor's intermediate values up to step S, so pruners and plots
  see the whole curve; its own duration (``compute_s``) counts only its own work.

Disk use stays bounded: when a trial ends, the checkpoints of every finished trial
are deleted except the best one's and those a queued re-run still needs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from hpsearch.search import RETRY_ATTR
from hpsearch.study._callbacks import BaseCallback
from hpsearch.study._objectives import pareto_front

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from hpsearch.checkpoints import CheckpointRef, CheckpointStore
    from hpsearch.study._scheduling import TrialToRun
    from hpsearch.study._status import StudyStatus

__all__ = ["RESUMED_ATTR", "CheckpointCleanup", "resume_point", "start_point"]

log = logging.getLogger("hpsearch.checkpoints")

#: User attribute of a trial that continued another's checkpoint: ``{"trial": N, "step": S}``.
RESUMED_ATTR = "resumed_from"


def _predecessor(trials: list[FrozenTrial], trial: FrozenTrial) -> int | None:
    """The stopped trial that ``trial`` re-runs: a queued retry's source, or a grid point's last retried run."""
    source = trial.user_attrs.get("hpsearch.retry_of")
    if source is not None:
        return int(source)
    gid = trial.system_attrs.get("grid_id")
    if gid is None:
        return None
    earlier = [
        t.number
        for t in trials
        if t.number < trial.number and t.system_attrs.get("grid_id") == gid and t.system_attrs.get(RETRY_ATTR)
    ]
    return earlier[-1] if earlier else None


def resume_point(study: optuna.Study, store: CheckpointStore, trial: optuna.trial.Trial) -> CheckpointRef | None:
    """The checkpoint ``trial`` continues from, walking back through earlier re-runs; None: start fresh.

    When there is one, its intermediate values up to its step are reported into ``trial``
    and ``resumed_from`` is set.
    """
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    if trial.number not in by_number:  # not read back yet (e.g. a ghost's twin): nothing to resume
        return None
    source = _predecessor(trials, by_number[trial.number])
    seen: set[int] = set()
    while source is not None and source not in seen and source in by_number:
        seen.add(source)
        try:
            ref = store.latest(source)
        except Exception as e:  # noqa: BLE001 - an unreachable store means a fresh start
            log.warning("checkpoints of trial %d cannot be listed (%s); the re-run starts fresh", source, e)
            return None
        if ref is not None:
            _carry_over(trial, by_number[source], ref, store)
            return ref
        earlier = by_number[source].user_attrs.get(RESUMED_ATTR)
        source = int(earlier["trial"]) if isinstance(earlier, dict) else _predecessor(trials, by_number[source])
    return None


def start_point(study: optuna.Study, store: CheckpointStore | None, chosen: TrialToRun) -> CheckpointRef | None:
    """The checkpoint the chosen trial starts from: a re-run's (see :func:`resume_point`), else its parent's."""
    if store is None or chosen.trial is None:
        return None
    ref = resume_point(study, store, chosen.trial)
    if ref is not None or chosen.parent is None:
        return ref
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    if chosen.parent not in by_number:
        return None
    try:
        ref = store.latest(chosen.parent)
    except Exception as e:  # noqa: BLE001 - an unreachable store means a fresh start
        log.warning(
            "checkpoints of trial %d cannot be listed (%s); trial %d starts fresh", chosen.parent, e, chosen.number
        )
        return None
    if ref is not None:
        _carry_over(chosen.trial, by_number[chosen.parent], ref, store)
    return ref


def _carry_over(trial: optuna.trial.Trial, source: FrozenTrial, ref: CheckpointRef, store: CheckpointStore) -> None:
    """Report into ``trial`` the curve up to ``ref``'s step: what was stored, and what the checkpoint saw."""
    values = {s: v for s, v in source.intermediate_values.items() if s <= ref.step}
    try:
        values.update({int(s): float(v) for s, v in store.meta(ref).get("reports", {}).items()})
    except Exception as e:  # noqa: BLE001 - the stored values alone still make a curve
        log.warning("the reports saved with trial %d's checkpoint cannot be read: %s", ref.trial, e)
    for s, value in sorted(values.items()):
        if s <= ref.step:
            trial.report(value, s)
    trial.set_user_attr(RESUMED_ATTR, {"trial": ref.trial, "step": ref.step})


class CheckpointCleanup(BaseCallback):
    """After each trial end: delete the checkpoints no one needs (finished, not the best, no re-run pending)."""

    def __init__(self, store: CheckpointStore, *, directions: list[str]) -> None:
        self.store = store
        self.directions = directions

    def on_trial_end(self, study: optuna.Study, number: int, status: StudyStatus) -> None:
        try:
            stored = self.store.trials()
        except Exception as e:  # noqa: BLE001 - cleanup never fails the study
            log.warning("checkpoint cleanup skipped: %s", e)
            return
        if not stored:
            return
        trials = study.get_trials(deepcopy=False)
        for n in sorted(set(stored) - self._needed(trials)):
            try:
                self.store.delete_trial(n)
            except Exception as e:  # noqa: BLE001
                log.warning("could not delete the checkpoints of trial %d: %s", n, e)

    def _needed(self, trials: list[FrozenTrial]) -> set[int]:
        """Trials whose checkpoints stay: unfinished, the best, or awaiting a re-run."""
        from optuna.trial import TrialState

        needed: set[int] = set()
        superseded: set[int] = set()  # predecessors of a re-run that has ended for good
        for t in trials:
            pending = t.state == TrialState.FAIL and t.system_attrs.get(RETRY_ATTR)
            if t.state in (TrialState.RUNNING, TrialState.WAITING) or pending:
                needed.add(t.number)
            elif t.state.is_finished():
                superseded |= _chain(trials, t.number) - {t.number}
        return (needed - superseded) | self._best(trials) | _pbt_parents(trials)

    def _best(self, trials: list[FrozenTrial]) -> set[int]:
        """The best feasible trial (several objectives: the Pareto front)."""
        front = pareto_front(trials, self.directions)
        if len(self.directions) > 1 or not front:
            return {t.number for t in front}
        pick = max if self.directions[0] == "maximize" else min
        return {pick(front, key=lambda t: float(t.value)).number}  # type: ignore[arg-type]


def _chain(trials: list[FrozenTrial], start: int) -> set[int]:
    """``start`` and every trial it (transitively) resumed from or re-ran."""
    by_number = {t.number: t for t in trials}
    out: set[int] = set()
    current: Any = start
    while current is not None and current not in out and current in by_number:
        out.add(current)
        t = by_number[current]
        earlier = t.user_attrs.get(RESUMED_ATTR)
        current = int(earlier["trial"]) if isinstance(earlier, dict) else _predecessor(trials, t)
    return out


def _pbt_parents(trials: list[FrozenTrial]) -> set[int]:
    """PBT segments of the two newest generations with a COMPLETE one: the next segments start from them.

    (Generations are synchronous: while generation g runs, every segment that has not
    started yet copies a checkpoint of generation g - 1.)
    """
    from optuna.trial import TrialState

    done = [
        (int(t.user_attrs.get("pbt_generation", 0)), t.number)
        for t in trials
        if "pbt_member" in t.user_attrs and t.state == TrialState.COMPLETE
    ]
    newest = max((g for g, _ in done), default=0)
    return {number for g, number in done if g >= newest - 1}
