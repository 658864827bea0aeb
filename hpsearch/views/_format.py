"""Formatting shared by the views (report, compare, the live note): numbers, durations, table cells.

Plain functions on plain values, no imports beyond the standard library, so
every view can use them without importing another view.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["duration", "fmt", "md_cell"]


def fmt(v: Any, digits: int = 4) -> str:
    """A value for people: ``–`` for None or NaN, floats to ``digits`` significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def duration(seconds: float | None) -> str:
    """Seconds as ``42 s``, ``3.5 min`` or ``2.1 h`` (``–`` for None)."""
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def md_cell(text: Any) -> str:
    """``text`` as one Markdown table cell: pipes escaped, newlines flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")
