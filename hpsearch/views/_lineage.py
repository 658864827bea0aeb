"""PBT lineage: each member's chain of segments, read back from the stored trials.

A PBT study (:mod:`hpsearch.study._pbt`) stores each member's segment of a
generation as one trial with the user attributes ``pbt_member``, ``pbt_generation``,
``pbt_parent`` (the trial whose checkpoint it started from) and ``start_step``.
These pure functions turn a list of such trials into :class:`PBTSegment` objects, the
chains of each member, the lineage of the best final segment and the text of
``hpsearch show --lineage``; the HTML report draws its PBT figures from the same.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from hpsearch.views._format import fmt

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = [
    "PBTSegment",
    "best_final",
    "chains",
    "lineage",
    "lineage_text",
    "log_scaled",
    "pbt_segments",
    "schedule_xy",
    "segment_curve",
]

_WIDTH = 80
_NAME_MAX = 14


@dataclass(frozen=True)
class PBTSegment:
    """One member's segment of one generation (the COMPLETE trial, else its latest try)."""

    number: int
    member: int
    generation: int
    parent: int | None  # the trial whose checkpoint it started from (None in generation 0)
    start_step: int
    end_step: int
    state: str  # COMPLETE, FAIL, RUNNING, WAITING or PRUNED
    value: float | None
    params: dict[str, Any]
    tries: int = 1  # trials stored for this (member, generation): failed ones and their re-run
    donor: int | None = None  # the member it copied (exploit), when that is another member
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # vs the segment it started from
    steps: dict[int, float] = field(default_factory=dict)  # its own reports: start_step < step <= end_step


def _is_segment(t: FrozenTrial) -> bool:
    return "pbt_member" in t.user_attrs and "pbt_generation" in t.user_attrs


def _chosen(trials: Sequence[FrozenTrial]) -> tuple[dict[tuple[int, int], FrozenTrial], dict[tuple[int, int], int]]:
    """Per (member, generation): the COMPLETE trial, else the latest one; and how many trials it has."""
    chosen: dict[tuple[int, int], FrozenTrial] = {}
    tries: dict[tuple[int, int], int] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if not _is_segment(t):
            continue
        key = (int(t.user_attrs["pbt_member"]), int(t.user_attrs["pbt_generation"]))
        tries[key] = tries.get(key, 0) + 1
        current = chosen.get(key)
        if current is None or current.state.name != "COMPLETE":
            chosen[key] = t
    return chosen, tries


def _interval(trials: Sequence[FrozenTrial]) -> int:
    """Steps per generation: the smallest gap between two segments' start steps (1 when unknown)."""
    starts = sorted({int(t.user_attrs.get("start_step") or 0) for t in trials})
    gaps = [b - a for a, b in itertools.pairwise(starts) if b > a]
    if gaps:
        return min(gaps)
    ends = [max(t.intermediate_values) for t in trials if t.intermediate_values]
    return max(1, max(ends, default=1) - (starts[0] if starts else 0))


def _segment(t: FrozenTrial, tries: int, interval: int, members: dict[int, int]) -> PBTSegment:
    start = int(t.user_attrs.get("start_step") or 0)
    own = {int(k): float(v) for k, v in t.intermediate_values.items() if int(k) > start}
    parent = t.user_attrs.get("pbt_parent")
    member = int(t.user_attrs["pbt_member"])
    donor = members.get(int(parent)) if parent is not None else None
    return PBTSegment(
        number=t.number,
        member=member,
        generation=int(t.user_attrs["pbt_generation"]),
        parent=None if parent is None else int(parent),
        start_step=start,
        end_step=max(own) if own else start + interval,
        state=t.state.name,
        value=t.value if t.state.name == "COMPLETE" else None,
        params=dict(t.params),
        tries=tries,
        donor=donor if donor is not None and donor != member else None,
        steps=own,
    )


def pbt_segments(trials: Sequence[FrozenTrial]) -> list[PBTSegment]:
    """The PBT segments among ``trials``, ordered by member then generation ([] for a non-PBT study)."""
    chosen, tries = _chosen(trials)
    members = {t.number: int(t.user_attrs["pbt_member"]) for t in trials if _is_segment(t)}
    interval = _interval(list(chosen.values()))
    out = [_segment(chosen[key], tries[key], interval, members) for key in sorted(chosen)]
    by_number = {seg.number: seg for seg in out}
    for i, seg in enumerate(out):
        before = by_number.get(seg.parent) if seg.parent is not None else None
        if before is not None:
            changed = {k: (before.params.get(k), v) for k, v in seg.params.items() if before.params.get(k) != v}
            out[i] = replace(seg, changes=changed)
    return out


def chains(segments: Sequence[PBTSegment]) -> dict[int, list[PBTSegment]]:
    """member -> its segments, by generation."""
    out: dict[int, list[PBTSegment]] = {}
    for seg in sorted(segments, key=lambda s: (s.member, s.generation)):
        out.setdefault(seg.member, []).append(seg)
    return out


def best_final(segments: Sequence[PBTSegment], *, maximize: bool) -> PBTSegment | None:
    """The best COMPLETE segment of the last generation that has one (None when none is complete)."""
    done = [s for s in segments if s.value is not None]
    if not done:
        return None
    last = max(s.generation for s in done)
    final = [s for s in done if s.generation == last]
    sign = 1.0 if maximize else -1.0
    return max(final, key=lambda s: (sign * (s.value or 0.0), -s.number))


def lineage(segments: Sequence[PBTSegment], number: int) -> list[PBTSegment]:
    """The chain of segments from generation 0 to segment ``number``, through ``pbt_parent``."""
    by_number = {s.number: s for s in segments}
    chain: list[PBTSegment] = []
    seen: set[int] = set()
    current = by_number.get(number)
    while current is not None and current.number not in seen:
        chain.append(current)
        seen.add(current.number)
        current = by_number.get(current.parent) if current.parent is not None else None
    return chain[::-1]


def log_scaled(trials: Sequence[FrozenTrial]) -> set[str]:
    """The params whose distribution is log-scaled (drawn on a log axis)."""
    return {name for t in trials for name, dist in t.distributions.items() if getattr(dist, "log", False)}


def schedule_xy(chain: Sequence[PBTSegment], name: str) -> tuple[list[int], list[Any]]:
    """One member's value of param ``name`` over steps: flat over each segment, a jump between them."""
    xs: list[int] = []
    ys: list[Any] = []
    for seg in chain:
        if name in seg.params:
            xs += [seg.start_step, seg.end_step]
            ys += [seg.params[name], seg.params[name]]
    return xs, ys


def segment_curve(seg: PBTSegment, before: PBTSegment | None) -> tuple[list[int], list[float]]:
    """The objective over the segment's steps, starting where ``before`` (its parent) ended."""
    points = sorted(seg.steps.items())
    if not points and seg.value is not None:
        points = [(seg.end_step, seg.value)]
    if before is not None and before.value is not None:
        points.insert(0, (before.end_step, before.value))
    return [p[0] for p in points], [p[1] for p in points]


# -- text ----------------------------------------------------------------------


def _name(name: str) -> str:
    return name if len(name) <= _NAME_MAX else name[: _NAME_MAX - 2] + ".."


def _value(v: Any, digits: int = 3) -> str:
    text = f"{v:.{digits}g}" if isinstance(v, float) else str(v)
    return text if len(text) <= 12 else text[:10] + ".."


def _change(name: str, old: Any, new: Any) -> str:
    """``lr 0.0123->0.0148``, with as many digits as it takes to tell the two apart (up to 6)."""
    digits = 3
    while (
        digits < 6 and isinstance(old, float) and isinstance(new, float) and _value(old, digits) == _value(new, digits)
    ):
        digits += 1
    return f"{_name(name)} {_value(old, digits)}->{_value(new, digits)}"


def _copied(seg: PBTSegment) -> str:
    return f"copied m{seg.donor} #{seg.parent}" if seg.donor is not None else ""


def _pack(items: list[str], width: int) -> list[str]:
    """``items`` joined by ``, `` into lines of at most ``width`` characters, never splitting an item."""
    lines: list[str] = []
    for i, item in enumerate(items):
        text = item + ("," if i < len(items) - 1 else "")
        if lines and len(lines[-1]) + 1 + len(text) <= width:
            lines[-1] += " " + text
        else:
            lines.append(text)
    return lines or [""]


def _row(seg: PBTSegment, number_width: int, copied_width: int) -> str:
    value = fmt(seg.value) if seg.value is not None else seg.state.lower()
    if seg.generation == 0:
        items = [f"{_name(k)} {_value(v)}" for k, v in seg.params.items()]
    else:
        items = [_change(k, old, new) for k, (old, new) in seg.changes.items()]
    if seg.tries > 1:
        items.append(f"({seg.tries} tries)")
    head = f"  g{seg.generation:<3}{'#' + str(seg.number):<{number_width}} {value:>9}  "
    if copied_width:
        head += f"{_copied(seg):<{copied_width}}  "
    width = _WIDTH - len(head)
    beside, below = _pack(items, width), _pack(items, _WIDTH - 6)
    if max((len(i) + 1 for i in items), default=0) > width or len(below) + 1 < len(beside):
        return "\n".join([head.rstrip()] + ["      " + line for line in below])  # too narrow beside the columns
    return "\n".join([(head + beside[0]).rstrip()] + [" " * len(head) + line for line in beside[1:]])


def _best_lines(segments: Sequence[PBTSegment], *, maximize: bool) -> list[str]:
    best = best_final(segments, maximize=maximize)
    if best is None:
        return ["best final segment: none complete yet"]
    chain = lineage(segments, best.number)
    passed: list[int] = []
    for s in chain:
        if not passed or passed[-1] != s.member:
            passed.append(s.member)
    path = " <- ".join(f"#{s.number} m{s.member}" for s in reversed(chain))
    members = " -> ".join(f"m{m}" for m in passed)
    head = f"best final segment: #{best.number}, member {best.member}, generation {best.generation}, {fmt(best.value)}"
    return [
        head,
        *textwrap.wrap(path, _WIDTH, initial_indent="  lineage: ", subsequent_indent="    "),
        *textwrap.wrap(members, _WIDTH, initial_indent="  members, first to last: ", subsequent_indent="    "),
    ]


def lineage_text(trials: Sequence[FrozenTrial], *, maximize: bool, metric: str = "value") -> str:
    """``hpsearch show --lineage``: one block per member, then the best final segment's lineage.

    Each row is one generation: ``g1  #7  3.476  copied m1 #1  lr 0.00342->0.0121``, i.e.
    its trial number, value, the member it copied (exploit) and the params that changed
    from the segment whose checkpoint it started from (generation 0: the params it started with).
    Empty for a study without PBT segments.
    """
    segments = pbt_segments(trials)
    if not segments:
        return ""
    members = chains(segments)
    generations = 1 + max(s.generation for s in segments)
    direction = "maximize" if maximize else "minimize"
    number_width = 2 + len(str(max(s.number for s in segments)))
    copied_width = max(len(_copied(s)) for s in segments)
    lines = [
        f"PBT lineage: {len(members)} members, {generations} generations ({direction} {metric})",
        "gN generation, #N trial, mN member; copied: the member and trial it exploited;",
        "old->new: a param explore changed from the segment it started from",
    ]
    for member, chain in members.items():
        lines.append(f"member {member}")
        lines += [_row(seg, number_width, copied_width) for seg in chain]
    lines += _best_lines(segments, maximize=maximize)
    return "\n".join(lines)
