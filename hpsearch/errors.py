"""Exceptions raised by hpsearch.

Every error a user can fix by changing their input derives from :class:`HpsearchError`.
The CLI turns these into one line on stderr and exit code 2 (``StudyFailedError``: 1).
"""

from __future__ import annotations

__all__ = [
    "HpsearchError",
    "ConfigError",
    "StorageError",
    "TrainerError",
    "StudyFailedError",
    "Interrupted",
]


class HpsearchError(Exception):
    """Base class: a problem the user can fix; ``str(err)`` is one line."""

    exit_code = 2


class ConfigError(HpsearchError, ValueError):
    """The study file (or an override) is invalid.

    The message names the file and the field path, says what was expected,
    what was received and how to fix it.
    """


class StorageError(HpsearchError):
    """The storage URL cannot be used (unreachable, unsupported, no study there)."""


class TrainerError(HpsearchError):
    """The trainer cannot run with these settings (missing function, model or data)."""


class StudyFailedError(HpsearchError):
    """The study stopped because its failure budget (``max_failures``) was used up."""

    exit_code = 1


class Interrupted(HpsearchError):
    """The run was stopped with Ctrl-C; the next run resumes it."""

    exit_code = 130


def one_line(text: str) -> str:
    """Collapse whitespace so a message fits on one line."""
    return " ".join(str(text).split())
