"""``hpsearch show``: the trial table, readable at 80 columns.

By default the table holds the trial number, state, value (with several objectives: one
column per objective, and ``front`` marking the Pareto front with ``*``), ``feasible``
(``no`` for a trial that breaks a constraint), every param, the duration,
the host and the failure reason, minus the columns that are empty or the same in every
row (``--all`` keeps them; ``--columns`` picks them). Numbers are shown with about 4
significant digits (``1.515e-04``, ``0.8617``, ``12.5``); long param names are cut
(``clf__C`` becomes ``C`` when that is unique, else the middle of the name goes). The
machine formats (``csv``, ``json``, ``markdown``) keep full names and stored values.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from hpsearch.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SHOW_FORMATS", "number_cell", "show_cell", "show_columns", "short_names", "show_records"]

SHOW_FORMATS = ("table", "csv", "json", "markdown")
#: Columns always kept (never dropped as constant): they identify a row.
_KEEP = ("number", "value", "pareto")
#: Longest header shown as it is.
_MAX_NAME = 10
#: Shorter headers for the fixed columns.
_HEADERS = {"duration_s": "time_s", "fail_reason": "reason", "pareto": "front"}
#: How the flag columns read in the table: the Pareto front starred, infeasible trials "no".
_FLAGS = {"pareto": {True: "*", False: ""}, "feasible": {True: "", False: "no"}}


def _base(frame: pd.DataFrame) -> list[str]:
    params = [c for c in frame.columns if c.startswith("params_")]
    values = [c for c in frame.columns if c.startswith("values_")]
    order = ["number", "state", "value", *values, "pareto", "feasible", *params, "duration_s", "host", "fail_reason"]
    return [c for c in order if c in frame]


def _empty(v: Any) -> bool:
    return v is None or v == "" or (isinstance(v, float) and math.isnan(v))


def show_columns(frame: pd.DataFrame, *, all_columns: bool = False, columns: list[str] | None = None) -> list[str]:
    """The frame's columns ``show`` prints (see the module docstring).

    Raises:
        ConfigError: ``columns`` names a column the table does not have.
    """
    base = _base(frame)
    if columns:
        known = {c.removeprefix("params_").removeprefix("values_"): c for c in base} | {c: c for c in base}
        unknown = [c for c in columns if c not in known]
        if unknown:
            shown = ", ".join(c.removeprefix("params_") for c in base)
            raise ConfigError(f"--columns: no column {unknown[0]!r}; choose from {shown}")
        return [known[c] for c in columns]
    if all_columns:
        return base
    out = []
    for c in base:
        values = [None if _empty(v) else v for v in frame[c].tolist()]
        if c in _KEEP or (any(v is not None for v in values) and len({repr(v) for v in values}) > 1):
            out.append(c)
    return out


def short_names(columns: list[str]) -> list[str]:
    """Headers for ``columns``: params without ``params_``, long ones cut so the table stays narrow,
    each header distinct (a cut that two names share keeps more of their heads)."""
    names = [_HEADERS.get(c, c.removeprefix("params_").removeprefix("values_")) for c in columns]
    out = [_cut(name, names, (_MAX_NAME - 1) // 2) for name in names]
    for head in range((_MAX_NAME - 1) // 2 + 1, _MAX_NAME - 1):
        clashes = {n for n in out if out.count(n) > 1}
        if not clashes:
            break
        out = [_cut(name, names, head) if cut in clashes else cut for name, cut in zip(names, out, strict=True)]
    return out


def _cut(name: str, names: list[str], head: int) -> str:
    """``name`` within :data:`_MAX_NAME` characters: as it is, its last part (``clf__C`` -> ``C``)
    when no other name ends so, else its first ``head`` and last characters around ``…``."""
    if len(name) <= _MAX_NAME:
        return name
    tail = name.rsplit("__", 1)[-1].rsplit(".", 1)[-1]
    if tail != name and len(tail) <= _MAX_NAME and sum(n.endswith(tail) for n in names) == 1:
        return tail
    return f"{name[:head]}…{name[-(_MAX_NAME - 1 - head) :]}"


def number_cell(v: Any) -> str:
    """A cell for people: blank for nothing, floats with about 4 significant digits."""
    if _empty(v):
        return ""
    if isinstance(v, bool) or not isinstance(v, float):
        return str(v)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.3e}"
    return f"{v:.4g}"


def show_cell(column: str, v: Any) -> str:
    """A table cell: the flag columns as :data:`_FLAGS` reads them, else :func:`number_cell`."""
    flags = _FLAGS.get(column)
    if flags is not None and isinstance(v, bool):
        return flags[v]
    return number_cell(v)


def show_records(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    """The rows as records with full column names and stored values (for csv, json, markdown)."""
    records = frame[columns].astype(object).where(frame[columns].notna(), None).to_dict(orient="records")
    return [{c.removeprefix("params_").removeprefix("values_"): r[c] for c in columns} for r in records]
