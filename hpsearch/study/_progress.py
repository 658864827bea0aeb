"""Progress display: a rich live line on a terminal, silence otherwise."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpsearch.study._status import StudyStatus

__all__ = ["Progress"]


class Progress:
    """Shows a :class:`~hpsearch.study.StudyStatus` line live when ``enabled`` (default: stderr is a TTY)."""

    def __init__(self, title: str, *, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.title = title
        self._live: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live("", console=Console(stderr=True), refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def update(self, status: StudyStatus) -> None:
        if self._live is not None:
            from rich.text import Text

            self._live.update(Text(f"{self.title}: {status.line()}"))

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None
