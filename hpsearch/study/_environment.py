"""What a study ran with: hpsearch, python and package versions, and the study folder's git commit.

Stored as the study user attribute ``hpsearch.environment`` (the latest run's), and a short
history ``hpsearch.environment_history`` (each distinct environment with the number of the
first trial run under it). Both are written only when the environment changed, so a re-run
with the same code and packages writes nothing.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch._version import __version__

if TYPE_CHECKING:
    import optuna

__all__ = [
    "ENVIRONMENT_ATTR",
    "ENVIRONMENT_HISTORY_ATTR",
    "PACKAGES",
    "current_environment",
    "environment_changes",
    "environment_for_trial",
    "git_state",
    "record_environment",
]

#: Study user attribute: the environment of the latest run.
ENVIRONMENT_ATTR = "hpsearch.environment"
#: Study user attribute: ``[{"first_trial": N, "environment": {...}}, ...]``, oldest first.
ENVIRONMENT_HISTORY_ATTR = "hpsearch.environment_history"
#: Distributions whose versions are recorded (read from metadata; none is imported).
PACKAGES = ("torch", "transformers", "optuna", "ray", "scikit-learn")
#: Entries kept in the history (the first one and the latest ones).
HISTORY_MAX = 20
#: Seconds each git command may take.
GIT_TIMEOUT_S = 5.0


def _git(folder: Path, *args: str) -> str | None:
    """The output of ``git -C folder ARGS``; None without git, outside a repository, or on any error."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(folder: Path | None) -> dict[str, Any]:
    """``{"git_commit", "git_dirty"}`` of the repository holding ``folder`` (both None outside one).

    Dirty means a tracked file differs from the commit; untracked files (the study's own
    ``hpsearch.db``, outputs) do not count.
    """
    none: dict[str, Any] = {"git_commit": None, "git_dirty": None}
    if folder is None or not folder.is_dir():
        return none
    head = _git(folder, "rev-parse", "HEAD")
    if head is None or not head.strip():
        return none
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return {"git_commit": head.strip(), "git_dirty": None if status is None else bool(status.strip())}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def current_environment(folder: Path | None) -> dict[str, Any]:
    """This process's versions and ``folder``'s git state (``folder``: the study file's folder)."""
    env: dict[str, Any] = {"hpsearch": __version__, "python": platform.python_version()}
    env.update({name: _version(name) for name in PACKAGES})
    env.update(git_state(folder))
    return env


def record_environment(study: optuna.Study, folder: Path | None) -> dict[str, Any]:
    """Store the current environment on ``study`` (only what changed); returns it."""
    env = current_environment(folder)
    attrs = study.user_attrs
    if attrs.get(ENVIRONMENT_ATTR) != env:
        study.set_user_attr(ENVIRONMENT_ATTR, env)
    history = list(attrs.get(ENVIRONMENT_HISTORY_ATTR) or [])
    if not history or history[-1].get("environment") != env:
        first = len(study.get_trials(deepcopy=False))
        history.append({"first_trial": first, "environment": env})
        if len(history) > HISTORY_MAX:
            history = [history[0], *history[-(HISTORY_MAX - 1) :]]
        study.set_user_attr(ENVIRONMENT_HISTORY_ATTR, history)
    return env


def environment_for_trial(attrs: dict[str, Any], number: int) -> dict[str, Any] | None:
    """The stored environment trial ``number`` ran under (from the history; else the latest stored)."""
    under = [h for h in attrs.get(ENVIRONMENT_HISTORY_ATTR) or [] if h.get("first_trial", 0) <= number]
    if under:
        env = under[-1].get("environment")
        return env if isinstance(env, dict) else None
    env = attrs.get(ENVIRONMENT_ATTR)
    if isinstance(env, dict):
        return env
    version = attrs.get("hpsearch.version")
    return {"hpsearch": version} if version else None


def environment_changes(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"name stored -> current"`` for each version or git commit that differs (the dirty flag left out)."""
    return [
        f"{key} {stored[key]} -> {current.get(key)}"
        for key in stored
        if key != "git_dirty" and stored[key] != current.get(key)
    ]
