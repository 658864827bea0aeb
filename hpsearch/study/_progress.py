"""Progress display: a rich live line on a terminal, silence otherwise."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["Progress", "ProgressStats"]


@dataclass
class ProgressStats:
    done: int = 0
    total: int | None = None
    running: int = 0
    pruned: int = 0
    failed: int = 0
    best: float | None = None

    def line(self) -> str:
        total = "?" if self.total is None else str(self.total)
        best = "-" if self.best is None else f"{self.best:.6g}"
        return (
            f"trials {self.done}/{total}  running {self.running}  pruned {self.pruned}  "
            f"failed {self.failed}  best {best}"
        )


class Progress:
    """Shows :class:`ProgressStats` live when ``enabled`` (default: stderr is a TTY)."""

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

    def update(self, stats: ProgressStats) -> None:
        if self._live is not None:
            from rich.text import Text

            self._live.update(Text(f"{self.title}: {stats.line()}"))

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None
