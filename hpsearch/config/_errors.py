"""A pydantic ValidationError -> one line naming the file and the field.

Optuna-free and YAML-free, so the study manager can format errors of settings
it validates itself (trainer settings) the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from hpsearch.errors import one_line

__all__ = ["format_validation"]


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("float", "int", "categorical", "one", "several", "function-after[_check()]"):
            continue  # discriminator tags and validator names are noise to users
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


_SCALAR_MEMBERS = ("bool", "int", "float", "str", "none")


def _drop_member(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``choices[0].bool`` -> ``choices[0]``: pydantic names the union member it tried."""
    if len(loc) >= 2 and loc[-1] in _SCALAR_MEMBERS and isinstance(loc[-2], int):
        return loc[:-1]
    return loc


def format_validation(err: ValidationError, file: str) -> str:
    """The first problem of ``err`` as one line ``<file>: <field.path>: <message>``, counting the others."""
    errors = err.errors()
    e = errors[0]
    raw = tuple(e["loc"])
    loc = _loc(_drop_member(raw))
    msg = e["msg"].removeprefix("Value error, ")
    kind = e["type"]
    got = e.get("input")
    if _drop_member(raw) != raw:
        msg = f"expected a number, string, true/false or null, got {type(got).__name__} {repr(got)[:80]}"
    elif kind == "extra_forbidden":
        msg = "unknown key; remove it or check its spelling against the README"
    elif kind == "missing":
        msg = "required but missing; add it"
    elif kind == "union_tag_invalid":
        msg = f"type must be one of float, int, categorical; got {got.get('type') if isinstance(got, dict) else got!r}"
    elif kind == "union_tag_not_found":
        msg = "needs `type: float|int` with low/high, or `choices: [...]`"
    elif kind == "model_type" or kind == "dict_type":
        msg = f"expected a mapping, got {type(got).__name__} {got!r}"
    elif got is not None and not isinstance(got, (dict, list)) and "got" not in msg:
        msg = f"{msg}; got {got!r}"
    more = len({_drop_member(tuple(x["loc"])) for x in errors}) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return one_line(f"{file}: {loc}: {msg}{tail}")
