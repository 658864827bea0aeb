"""Outcome -> state rules, in the spirit of Optuna's ``study/_tell.py``.

A finished trial becomes COMPLETE, PRUNED or FAIL here; a FAIL may queue a
retry. Everything a trainer hands back is stored with the storage password
masked (its text, and the keys too).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpsearch.errors import one_line
from hpsearch.search import RETRY_ATTR
from hpsearch.storage import _optuna as ox
from hpsearch.storage._urls import mask_secrets, url_password
from hpsearch.study._artifacts import ArtifactUploader
from hpsearch.study._objectives import Objectives, dominates, pareto_front

if TYPE_CHECKING:
    import optuna

    from hpsearch.config import StudyConfig
    from hpsearch.executors import TrialOutcome
    from hpsearch.study._recovery import Requeue

__all__ = ["OutcomeRecorder", "RunningTrial", "jsonable", "masked", "storage_secrets"]


@dataclass
class RunningTrial:
    """A trial this driver has handed to the executor (``trial`` None: a whole-search import)."""

    trial: optuna.trial.Trial | None
    params: dict[str, Any]
    attempt: int
    #: Stop once this step is reported, and record the trial COMPLETE with its value (a PBT segment).
    stop_at: int | None = None
    #: The step up to which the predecessor's curve was carried over (a resumed trial).
    carried: int | None = None
    stop_requested: bool = False
    #: The last step the trial reported, and its value.
    last_step: int | None = None
    last_value: float | None = None
    #: A multi-objective study: the first objective's curve is stored, never pruned on
    #: (Optuna's ``Trial.report`` and pruners take one objective).
    multi: bool = False

    def reported(self, study: optuna.Study, step: int, value: float) -> bool:
        """Store a report; whether the trial should stop now: a stop was requested, its
        segment is done, or the pruner says so."""
        if self.multi or (self.carried is not None and step <= self.carried):
            # carried over, reported again: a fresh start; or the first of several objectives
            ox.overwrite_intermediate_value(study, self.live, step, value)
        else:
            self.live.report(value, step)
        self.last_step, self.last_value = step, value
        return self.stop_requested or self.segment_done() or (not self.multi and self.live.should_prune())

    def segment_done(self) -> bool:
        """Whether the trial reached its ``stop_at`` step (so a stop is the end of its segment)."""
        return self.stop_at is not None and self.last_step is not None and self.last_step >= self.stop_at

    @property
    def live(self) -> optuna.trial.Trial:
        """The live Optuna trial (an import has none: it is recorded by ``import_search``)."""
        if self.trial is None:
            raise RuntimeError("a whole-search import has no trial of its own")
        return self.trial


class OutcomeRecorder:
    """Tells each finished trial's state, with its attributes, in one transaction.

    Args:
        config: The study (objective, retries, the non-finite loss rule).
        secrets: Strings masked in everything stored.
        artifacts: Where a trial's files go.
        requeue: Queues a failed trial's params to run again.
    """

    def __init__(
        self, config: StudyConfig, secrets: tuple[str, ...], artifacts: ArtifactUploader, requeue: Requeue
    ) -> None:
        self.config = config
        self.secrets = secrets
        self.artifacts = artifacts
        self.requeue = requeue
        self.objectives = Objectives.of(config)

    def record(
        self, study: optuna.Study, run: RunningTrial, outcome: TrialOutcome, *, interrupted: bool, best: float | None
    ) -> bool:
        """Tell ``run``'s final state from ``outcome``; returns whether it counts against ``max_failures``."""
        attrs: dict[str, Any] = {"placement": outcome.placement, **outcome.user_attrs}
        if run.carried is not None and "checkpoint_error" in attrs:
            attrs["resumed_from"] = None  # the checkpoint did not load: the trial started fresh
        finished_first = outcome.failure is None and (not outcome.pruned or run.segment_done())
        if outcome.artifacts and (outcome.failure is not None or (outcome.pruned and not run.segment_done())):
            # A failed or pruned trial keeps its files too (its trial.log above all); never a model.
            attrs["artifacts"] = self.artifacts.upload_trial(run.live, outcome.artifacts, None, None)
        if run.stop_requested and interrupted and not finished_first:
            self.fail(study, run, "interrupted", attrs, retry=True)
            return False
        # (A trial that finished its work before the stop arrived keeps its result.)
        if outcome.failure is not None:
            f = outcome.failure
            # A trainer's error may quote a URL with a password: write_attrs masks it.
            attrs.update({"fail_type": f.type, "fail_message": f.message, "traceback": f.traceback})
            if not (f.type == "NonFiniteLoss" and self.config.on_nonfinite_loss == "prune"):
                retry = f.retriable and run.attempt <= self.config.max_retries
                self.fail(study, run, f.reason, attrs, retry=retry)
                return True
            attrs["fail_reason"] = f.reason  # kept as the reason it was pruned
        if outcome.pruned and outcome.failure is None and run.segment_done():
            # Stopped by its scheduler at the end of its segment: its value is the step's.
            outcome.metrics = {**outcome.metrics, self.config.first_objective.metric: float(run.last_value)}  # type: ignore[arg-type]
        elif outcome.pruned or outcome.failure is not None:
            self._tell_pruned(study, run, attrs)
            return False
        return self._tell_complete(study, run, outcome, attrs, best)

    def _tell_pruned(self, study: optuna.Study, run: RunningTrial, attrs: dict[str, Any]) -> None:
        from optuna.trial import TrialState

        with ox.batch(study):  # attributes and state in one transaction
            self.write_attrs(run.live, attrs)
            study.tell(run.live, state=TrialState.PRUNED)

    def _tell_complete(
        self, study: optuna.Study, run: RunningTrial, outcome: TrialOutcome, attrs: dict[str, Any], best: float | None
    ) -> bool:
        reason = self.objectives.missing(outcome.metrics)
        if reason is not None:
            attrs["metrics"] = {k: v for k, v in outcome.metrics.items() if math.isfinite(v)}
            self.fail(study, run, reason, attrs, retry=False)
            return True
        attrs["metrics"] = outcome.metrics
        values = self.objectives.values(outcome.metrics)
        violations = self.objectives.violations(outcome.metrics)
        # A model is kept for a new best (single objective) or a trial no earlier one dominates.
        keep = values[0] if not any(v > 0 for v in violations.values()) and self._may_keep(study, values) else None
        # Artifact references, attributes, constraints and state in one transaction; the files
        # are written first, so a reference never points at a missing file.
        with ox.batch(study):
            if outcome.artifacts:
                attrs["artifacts"] = self.artifacts.upload_trial(
                    run.live, outcome.artifacts, keep, best if not self.objectives.multi else None
                )
            self.write_attrs(run.live, attrs)
            for metric, violation in violations.items():
                run.live.set_constraint(metric, violation)
            study.tell(run.live, values if self.objectives.multi else values[0])
        return False

    def _may_keep(self, study: optuna.Study, values: list[float]) -> bool:
        """Single objective: always (the uploader compares with the best); several: no feasible trial dominates it."""
        if not self.objectives.multi:
            return True
        front = pareto_front(study.get_trials(deepcopy=False), self.objectives.directions)
        return not any(dominates(t.values, values, self.objectives.directions) for t in front)

    def fail(self, study: optuna.Study, run: RunningTrial, reason: str, attrs: dict[str, Any], *, retry: bool) -> None:
        """Tell ``run`` FAIL with ``reason``; with ``retry``, queue its params to run again."""
        from optuna.trial import TrialState

        attrs["fail_reason"] = reason
        if retry:
            # Queued before the FAIL: a driver killed in between leaves the trial RUNNING
            # with its re-run queued, which recovery sees and does not queue twice.
            interrupted = reason == "interrupted"
            self.requeue(study, run.params, run.live.number, run.attempt + (0 if interrupted else 1))
        with ox.batch(study):  # attributes and state in one transaction
            self.write_attrs(run.live, attrs)
            if retry:
                ox.set_trial_system_attr(study, run.live, RETRY_ATTR, True)
            study.tell(run.live, state=TrialState.FAIL)

    def write_attrs(self, trial: optuna.trial.Trial, attrs: dict[str, Any]) -> None:
        """Store ``attrs`` (trainer data among them) with the storage password masked, keys too."""
        for key, value in attrs.items():
            trial.set_user_attr(mask_secrets(key, *self.secrets), masked(jsonable(value), self.secrets))


def storage_secrets(url: str) -> tuple[str, ...]:
    """The password of storage ``url``, as written (percent-encoded) and decoded.

    ``user:password@`` and ``?password=`` both count. Passwords under 4 characters are
    left out, as ``mask_secrets`` does for ``PGPASSWORD``: masking them would garble plain text.
    """
    from urllib.parse import parse_qs, unquote, urlsplit

    found = [url_password(url)]
    with contextlib.suppress(ValueError):
        found += parse_qs(urlsplit(url).query).get("password", [])
    return tuple(dict.fromkeys(s for p in found if p for s in (p, unquote(p)) if len(s) >= 4))


def masked(value: Any, secrets: tuple[str, ...]) -> Any:
    """JSON-like ``value`` with every URL password and each of ``secrets`` masked in its strings and keys."""
    if isinstance(value, str):
        return mask_secrets(value, *secrets)
    if isinstance(value, dict):
        return {mask_secrets(k, *secrets) if isinstance(k, str) else k: masked(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [masked(v, secrets) for v in value]
    return value


def jsonable(value: Any) -> Any:
    """``value`` if JSON can store it, else its one-line ``repr`` (at most 1000 characters)."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return one_line(repr(value))[:1000]
