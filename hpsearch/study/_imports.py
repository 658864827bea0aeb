"""Whole-search trainers: one job runs a search, its records become the study's trials."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from hpsearch.errors import StudyFailedError
from hpsearch.storage._urls import mask_secrets
from hpsearch.study._artifacts import ArtifactUploader
from hpsearch.study._outcomes import jsonable, masked

if TYPE_CHECKING:
    import optuna

    from hpsearch.executors import TrialOutcome
    from hpsearch.study._prepare import Prepared
    from hpsearch.trainers import TrialRecord

__all__ = ["import_search"]


def import_search(
    study: optuna.Study,
    outcome: TrialOutcome,
    prepared: Prepared,
    secrets: tuple[str, ...],
    artifacts: ArtifactUploader,
) -> None:
    """Add the search's records as trials, its other data as study attributes, its files as artifacts.

    Raises:
        StudyFailedError: The search itself failed (its reason masked). Failed fits
            inside it are data (FAIL trials with their reason), not a failure budget.
    """
    from hpsearch.trainers import RECORDS_ATTR, TrialRecord

    if outcome.failure is not None:
        raise StudyFailedError(
            f"{prepared.file}: trainer {prepared.config.trainer.kind!r} failed: "
            f"{mask_secrets(outcome.failure.reason, *secrets)}"
        )
    attrs = dict(outcome.user_attrs)
    records = [TrialRecord(**r) for r in attrs.pop(RECORDS_ATTR, [])]
    study.add_trials([_to_trial(rec, outcome.placement, secrets) for rec in records])
    for key, value in attrs.items():
        study.set_user_attr(mask_secrets(key, *secrets), masked(jsonable(value), secrets))
    if outcome.artifacts:
        artifacts.upload_study(study, outcome.artifacts)


def _to_trial(rec: TrialRecord, placement: Any, secrets: tuple[str, ...]) -> optuna.trial.FrozenTrial:
    import optuna
    from optuna.distributions import json_to_distribution
    from optuna.trial import TrialState

    state = TrialState[rec.state]
    end = dt.datetime.now()
    start = end - dt.timedelta(seconds=rec.duration_s or 0.0)
    trial = optuna.trial.create_trial(
        state=state,
        value=rec.value if state == TrialState.COMPLETE else None,
        params=rec.params,
        distributions={k: json_to_distribution(v) for k, v in rec.distributions.items()},
        user_attrs=masked({**{k: jsonable(v) for k, v in rec.user_attrs.items()}, "placement": placement}, secrets),
    )
    trial.datetime_start, trial.datetime_complete = start, end
    return trial
