"""Callbacks: side concerns hung off the study loop (progress, the dashboard note, trackers).

In the style of Optuna's trial callbacks and Syne Tune's ``TunerCallback``: a
:class:`BaseCallback` with no-op hooks, each called from the loop's thread with
the study and a read-only :class:`StudyStatus` snapshot. A callback that
raises is logged once (per callback and error type) and never fails the study.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from hpsearch.errors import one_line
from hpsearch.storage._urls import mask_secrets
from hpsearch.study._progress import Progress
from hpsearch.study._status import StudyStatus

if TYPE_CHECKING:
    import optuna

__all__ = ["BaseCallback", "CallbackList", "ProgressCallback", "StudyStatus"]

log = logging.getLogger("hpsearch.callbacks")


class BaseCallback:
    """Hooks the study loop calls; every one is a no-op unless overridden.

    Hooks run in the loop's thread, between storage writes: keep them quick, or
    hand slow work to a thread (as the dashboard note does with baselines).
    """

    def on_study_start(self, study: optuna.Study, status: StudyStatus) -> None:
        """The study is open and recovered; no trial of this run started yet."""

    def on_trial_start(self, study: optuna.Study, number: int, params: dict[str, Any], status: StudyStatus) -> None:
        """Trial ``number`` was handed to the executor (-1: a whole-search import)."""

    def on_report(self, study: optuna.Study, number: int, step: int, value: float) -> None:
        """Trial ``number`` reported ``value`` at ``step`` (already stored)."""

    def on_trial_end(self, study: optuna.Study, number: int, status: StudyStatus) -> None:
        """Trial ``number`` was told its final state (also: ghosts and imports)."""

    def on_study_end(self, study: optuna.Study, status: StudyStatus) -> None:
        """The loop ended (finished, stopped, interrupted or failed)."""


class CallbackList(BaseCallback):
    """Calls each callback in order; one that raises is logged once and skipped."""

    def __init__(self, callbacks: Iterable[BaseCallback]) -> None:
        self.callbacks = list(callbacks)
        self._warned: set[tuple[int, str]] = set()

    def _each(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            try:
                getattr(cb, hook)(*args)
            except Exception as e:  # noqa: BLE001 - a callback must never fail a study
                key = (id(cb), type(e).__name__)
                if key not in self._warned:
                    self._warned.add(key)
                    text = mask_secrets(one_line(f"{type(e).__name__}: {e}"))[:300]
                    log.warning("callback %s.%s failed (the study goes on): %s", type(cb).__name__, hook, text)

    def on_study_start(self, study: optuna.Study, status: StudyStatus) -> None:
        self._each("on_study_start", study, status)

    def on_trial_start(self, study: optuna.Study, number: int, params: dict[str, Any], status: StudyStatus) -> None:
        self._each("on_trial_start", study, number, params, status)

    def on_report(self, study: optuna.Study, number: int, step: int, value: float) -> None:
        self._each("on_report", study, number, step, value)

    def on_trial_end(self, study: optuna.Study, number: int, status: StudyStatus) -> None:
        self._each("on_trial_end", study, number, status)

    def on_study_end(self, study: optuna.Study, status: StudyStatus) -> None:
        self._each("on_study_end", study, status)


class ProgressCallback(BaseCallback):
    """The live progress line (:class:`~hpsearch.study.Progress`) as a callback."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def on_study_start(self, study: optuna.Study, status: StudyStatus) -> None:
        self.progress.__enter__()
        self.progress.update(status)

    def on_trial_start(self, study: optuna.Study, number: int, params: dict[str, Any], status: StudyStatus) -> None:
        self.progress.update(status)

    def on_trial_end(self, study: optuna.Study, number: int, status: StudyStatus) -> None:
        self.progress.update(status)

    def on_study_end(self, study: optuna.Study, status: StudyStatus) -> None:
        self.progress.update(status)
        self.progress.__exit__(None, None, None)
