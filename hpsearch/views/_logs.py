"""A trial's captured output, read back: ``hpsearch logs STUDY --trial N [--follow]``.

A finished trial's output is its ``trial.log`` artifact (the last few MB of
its stdout and stderr, every rank's). While it runs, the driver appends the
output to a live file under the artifact folder
(:func:`~hpsearch.executors.live_log_path`) and removes it when the trial ends,
just before the trial's end is stored. :func:`follow_trial_log` tails that
file, and stops once storage says the trial has ended: everything it printed
was in the file by then. Storage is only read, through read-only connections.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from hpsearch.errors import StorageError
from hpsearch.executors import LOG_NAME, live_log_path
from hpsearch.views._results import StudyResult, load_result

if TYPE_CHECKING:
    import optuna

    from hpsearch.config import StudyConfig

__all__ = ["FOLLOW_POLL_S", "follow_trial_log", "read_trial_log"]

#: How often ``--follow`` looks for new output and for the trial's end (s).
FOLLOW_POLL_S = 0.2


def read_trial_log(study: str | Path | StudyConfig, trial: int, *, storage: str | None = None) -> bytes:
    """Trial ``trial``'s output: its stored ``trial.log``, or, while it runs, what it printed so far.

    Raises:
        StorageError: No such trial, or it has no output (yet).
    """
    result = load_result(study, storage=storage)
    t = result.trial(trial)
    stored = _stored_log(result, t)
    if stored is not None:
        return stored
    live = _read_live(_live_path(result, trial))
    if live:
        return live
    raise StorageError(_no_log(result, t))


def follow_trial_log(
    study: str | Path | StudyConfig,
    trial: int,
    write: Callable[[bytes], object],
    *,
    storage: str | None = None,
    poll_s: float = FOLLOW_POLL_S,
) -> None:
    """Pass trial ``trial``'s output to ``write`` as it comes, until the trial ends (at once if it has ended).

    A trial not started yet is waited for. If nothing came live (the trial ended
    first, or ran on a driver that keeps no live copy), its stored ``trial.log`` is
    written at the end.

    Raises:
        StorageError: No such trial.
    """
    result = load_result(study, storage=storage)
    path = _live_path(result, trial)
    tail = _Tail(path)
    try:
        while True:
            ended = not _unfinished(result, trial)  # looked at before reading: the file is complete then
            tail.read(write)
            if ended:
                break
            time.sleep(poll_s)
    finally:
        tail.close()
    if not tail.wrote:
        stored = _stored_log(result, result.trial(trial))
        if stored:
            write(stored)


class _Tail:
    """``tail -F`` of the live file: follows it across renames (rotation) and removal."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.wrote = False
        self._file: BinaryIO | None = None

    def read(self, write: Callable[[bytes], object]) -> None:
        while True:
            if self._file is None:
                self._file = _open(self.path)
                if self._file is None:
                    return
            data = self._file.read()
            if data:
                write(data)
                self.wrote = True
            if not self._replaced():
                return
            self._file.close()  # read to its end: go on with the file now at the path
            self._file = None

    def _replaced(self) -> bool:
        assert self._file is not None
        try:
            return os.stat(self.path).st_ino != os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            return False  # removed: the trial is ending; what is left was read

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _open(path: Path) -> BinaryIO | None:
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


def _live_path(result: StudyResult, trial: int) -> Path:
    assert result.config is not None  # load_result always sets it
    return live_log_path(result.config.resolved_artifacts(), result.study_name, trial)


def _read_live(path: Path) -> bytes:
    """What the live file (and its rotated part) holds now, oldest first."""
    out = b""
    for part in (path.with_name(path.name + ".1"), path):
        with contextlib.suppress(FileNotFoundError):
            out += part.read_bytes()
    return out


def _unfinished(result: StudyResult, trial: int) -> bool:
    """Whether the trial is still RUNNING or WAITING, read fresh from storage."""
    from optuna.trial import TrialState

    unfinished = result.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    if any(t.number == trial for t in unfinished):
        return True
    result.trial(trial)  # raises for a trial that does not exist
    return False


def _stored_log(result: StudyResult, t: optuna.trial.FrozenTrial) -> bytes | None:
    """The trial's stored ``trial.log``; None if it has none."""
    from optuna.artifacts import FileSystemArtifactStore

    artifact_id = (t.user_attrs.get("artifacts") or {}).get(LOG_NAME)
    if artifact_id is None:
        return None
    assert result.config is not None
    root = result.config.resolved_artifacts()
    try:
        with FileSystemArtifactStore(str(root)).open_reader(artifact_id) as f:
            return f.read()
    except FileNotFoundError:
        raise StorageError(
            f"trial {t.number}'s {LOG_NAME} (artifact {artifact_id}) is missing from {root}; "
            "point `artifacts:` in the study file at the folder that holds it"
        ) from None


def _no_log(result: StudyResult, t: optuna.trial.FrozenTrial) -> str:
    state = t.state.name
    where = f"trial {t.number} of study {result.study_name!r}"
    if state == "WAITING":
        return f"{where} has not started yet; use --follow to wait for its output"
    if state == "RUNNING":
        return f"{where} is running and has printed nothing yet; use --follow to wait for its output"
    return f"{where} ({state}) has no {LOG_NAME}: it printed nothing"
