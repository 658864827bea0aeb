"""One table across studies: best value, CV spread, trial counts, compute, time to best.

Studies of every kind (TPE on ``sklearn_cv``, an imported GridSearchCV from
``sklearn_search``, a fine-tune) are read the same way, straight from Optuna's
tables with SQLAlchemy Core: a handful of set-based queries per storage, no
``FrozenTrial`` per trial, so a 10,000-trial study compares in well under a
second. Nothing is written: the storage is opened without creating tables.

Columns of :func:`compare`:

=================  ==============================================================
study              study name
trainer            ``trainer.kind`` the study was run with (empty if not hpsearch)
method             sampler name, or the scikit-learn strategy of ``sklearn_search``
metric, direction  the objective
best_value         best COMPLETE value
best_std           its CV spread (``std_test_<metric>`` or ``metrics.<metric>_std``)
best_params        the best trial's params (dict)
best_trial         its number
complete, pruned,
failed, running    trial counts by state (``running`` includes WAITING)
compute_s          sum of finished trials' durations (a trial's wall time; an
                   imported row: its fits' and scorings' seconds)
gpu_s              compute_s × GPUs per trial × workers, when the study used GPUs
time_to_best_s     compute_s of the trials up to and including the best, in trial order
trials_to_best     number of finished trials up to and including the best
compute_to_beat_s  per ``compare_with`` baseline (study name -> seconds): compute_s
                   (gpu_s where GPUs were used) of the trials up to and including
                   the first COMPLETE one strictly better than the baseline's best
                   value; None when never beaten or the baseline has no best
                   value yet (not run); ``{}`` for a study without baselines
                   (or given by name); with ``storage`` the baselines are read there
storage            storage URL, password masked
=================  ==============================================================

:func:`render` writes ``csv`` and ``json`` with every column (dicts as JSON).
``table`` and ``markdown`` leave ``best_params`` out (and ``table`` also
``storage``); ``params=True`` adds a second table, one row per study and param.
``table`` uses short headers, cuts study names to 24 characters and, when the
columns do not fit the terminal width (``$COLUMNS``, 80 when unknown), wraps
into blocks separated by a blank line, each starting with the ``study`` column.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from hpsearch.errors import ConfigError, StorageError, one_line
from hpsearch.storage import check_storage, mask_url, readonly_engine
from hpsearch.study._scheduling import WARM_START_ATTR
from hpsearch.views._format import duration
from hpsearch.views._format import fmt as fmt_num

if TYPE_CHECKING:
    import pandas as pd

    from hpsearch.config import StudyConfig

__all__ = ["compare", "compare_rows", "COLUMNS", "FORMATS", "render"]

COLUMNS = [
    "study",
    "trainer",
    "method",
    "metric",
    "direction",
    "best_value",
    "best_std",
    "best_params",
    "best_trial",
    "complete",
    "pruned",
    "failed",
    "running",
    "compute_s",
    "gpu_s",
    "time_to_best_s",
    "trials_to_best",
    "compute_to_beat_s",
    "storage",
]
FORMATS = ("table", "csv", "json", "markdown")
_FINISHED = ("COMPLETE", "PRUNED", "FAIL")
#: The study attribute holding the resolved study YAML (written by the study manager).
CONFIG_ATTR = "hpsearch.config"
_STUDY_KEYS = ("hpsearch.trainer", "hpsearch.objective", CONFIG_ATTR, "sklearn.strategy")
#: A trial row: (trial_id, number, state, datetime_start, datetime_complete).
_Trial = tuple[int, int, str, Any, Any]


#: The columns of Optuna's tables that compare reads: key -> (table, ((column, type), ...)).
_SCHEMA: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "studies": ("studies", (("study_id", "Integer"), ("study_name", "String"))),
    "directions": ("study_directions", (("study_id", "Integer"), ("objective", "Integer"), ("direction", "String"))),
    "study_attrs": ("study_user_attributes", (("study_id", "Integer"), ("key", "String"), ("value_json", "Text"))),
    "trials": (
        "trials",
        (
            ("trial_id", "Integer"),
            ("number", "Integer"),
            ("study_id", "Integer"),
            ("state", "String"),
            ("datetime_start", "DateTime"),
            ("datetime_complete", "DateTime"),
        ),
    ),
    "values": (
        "trial_values",
        (("trial_id", "Integer"), ("objective", "Integer"), ("value", "Float"), ("value_type", "String")),
    ),
    "params": (
        "trial_params",
        (("trial_id", "Integer"), ("param_name", "String"), ("param_value", "Float"), ("distribution_json", "Text")),
    ),
    "trial_attrs": ("trial_user_attributes", (("trial_id", "Integer"), ("key", "String"), ("value_json", "Text"))),
}


def _tables() -> dict[str, Any]:
    """SQLAlchemy ``table()`` objects for :data:`_SCHEMA` (lightweight: no metadata, no reflection)."""
    import sqlalchemy
    from sqlalchemy import column, table

    return {
        key: table(name, *(column(col, getattr(sqlalchemy, kind)) for col, kind in cols))
        for key, (name, cols) in _SCHEMA.items()
    }


def _loads(text: str | None) -> Any:
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return None


def _config_facts(config_yaml: str | None) -> tuple[str | None, float, int]:
    """(sampler name, GPUs per worker, workers) from the resolved study YAML."""
    if not config_yaml:
        return None, 0.0, 1
    import yaml

    try:
        data = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError:
        return None, 0.0, 1
    res = data.get("resources") or {}
    return (data.get("sampler") or {}).get("name"), float(res.get("gpus") or 0), int(res.get("workers") or 1)


def _external(param_value: float, distribution_json: str) -> Any:
    """Optuna's stored float -> the param value (decoded here: importing optuna costs 0.5 s)."""
    dist = json.loads(distribution_json)
    name = dist.get("name", "")
    if name == "CategoricalDistribution":
        return dist["attributes"]["choices"][int(param_value)]
    if name.startswith("Int"):
        return int(param_value)
    if name in ("FloatDistribution", "UniformDistribution", "LogUniformDistribution", "DiscreteUniformDistribution"):
        return float(param_value)
    from optuna.distributions import json_to_distribution

    return json_to_distribution(distribution_json).to_external_repr(param_value)


def _is_better(a: float, b: float | None, maximize: bool) -> bool:
    return b is None or (a > b if maximize else a < b)


def _read_storage(url: str, names: list[str] | None) -> list[dict[str, Any]]:
    """Rows for ``names`` (None: every study) in one storage, in the order asked."""
    t = _tables()
    engine = readonly_engine(url)
    try:
        with engine.connect() as con:
            order, ids = _study_ids(con, t, url, names)
            if not ids:
                return []
            directions, attrs = _study_facts(con, t, ids)
            trials, values = _trial_rows(con, t, ids)
            rows = [
                _summarise(order[i], directions.get(sid, []), attrs.get(sid, {}), trials[sid], values, url)
                for i, sid in enumerate(ids)
            ]
            params, extra = _best_details(con, t, rows)
    finally:
        engine.dispose()
    for row in rows:
        _fill_best(row, params, extra)
    return rows


def _study_ids(con: Any, t: dict[str, Any], url: str, names: list[str] | None) -> tuple[list[str], list[int]]:
    """(study names, their ids) in the order asked, or every study by id; a missing name raises."""
    import sqlalchemy
    from sqlalchemy import select

    try:
        q = select(t["studies"].c.study_id, t["studies"].c.study_name)
        if names is not None:
            q = q.where(t["studies"].c.study_name.in_(names))
        studies = {name: sid for sid, name in con.execute(q)}
    except sqlalchemy.exc.OperationalError as e:
        raise StorageError(f"storage {mask_url(url)}: not an Optuna storage ({one_line(str(e.orig))[:120]})") from None
    for name in names or []:
        if name not in studies:
            raise StorageError(f"no study named {name!r} in {mask_url(url)}; run it first")
    order = names if names is not None else sorted(studies, key=lambda n: studies[n])
    return order, [studies[n] for n in order]


def _study_facts(con: Any, t: dict[str, Any], ids: list[int]) -> tuple[dict[int, list[str]], dict[int, dict[str, Any]]]:
    """Per study id: its directions (in objective order) and the user attributes compare reads."""
    from sqlalchemy import and_, select

    d = t["directions"]
    directions: dict[int, list[str]] = {}
    for sid, _obj, direction in con.execute(
        select(d.c.study_id, d.c.objective, d.c.direction).where(d.c.study_id.in_(ids)).order_by(d.c.objective)
    ):
        directions.setdefault(sid, []).append(str(direction).lower())
    sa = t["study_attrs"]
    attrs: dict[int, dict[str, Any]] = {}
    for sid, key, value in con.execute(
        select(sa.c.study_id, sa.c.key, sa.c.value_json).where(and_(sa.c.study_id.in_(ids), sa.c.key.in_(_STUDY_KEYS)))
    ):
        attrs.setdefault(sid, {})[key] = _loads(value)
    return directions, attrs


def _trial_rows(
    con: Any, t: dict[str, Any], ids: list[int]
) -> tuple[dict[int, list[_Trial]], dict[int, tuple[float, str]]]:
    """Per study id its trials; and the first objective's value of every COMPLETE trial, by trial id."""
    import sqlalchemy
    from sqlalchemy import and_, select

    tr, ua = t["trials"], t["trial_attrs"]
    copied = {  # warm-start history copied from another study: not this study's trials
        tid
        for (tid,) in con.execute(
            select(ua.c.trial_id)
            .select_from(ua.join(tr, tr.c.trial_id == ua.c.trial_id))
            .where(and_(tr.c.study_id.in_(ids), ua.c.key == WARM_START_ATTR))
        )
    }
    trials: dict[int, list[_Trial]] = {sid: [] for sid in ids}
    for tid, number, sid, state, start, end in con.execute(
        select(
            tr.c.trial_id, tr.c.number, tr.c.study_id, tr.c.state, tr.c.datetime_start, tr.c.datetime_complete
        ).where(tr.c.study_id.in_(ids))
    ):
        if tid not in copied:
            trials[sid].append((tid, number, str(state), start, end))
    v = t["values"]
    complete = sqlalchemy.cast(tr.c.state, sqlalchemy.String) == "COMPLETE"
    values: dict[int, tuple[float, str]] = {}
    for tid, value, vtype in con.execute(
        select(v.c.trial_id, v.c.value, v.c.value_type)
        .select_from(v.join(tr, tr.c.trial_id == v.c.trial_id))
        .where(and_(tr.c.study_id.in_(ids), complete, v.c.objective == 0))
    ):
        values[tid] = (value, str(vtype))
    return trials, values


def _best_details(
    con: Any, t: dict[str, Any], rows: list[dict[str, Any]]
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """The best trials' params, and their user attributes that may hold the CV spread, by trial id."""
    from sqlalchemy import and_, select

    best_ids = [r["_best_tid"] for r in rows if r["_best_tid"] is not None]
    params: dict[int, dict[str, Any]] = {}
    extra: dict[int, dict[str, Any]] = {}
    if not best_ids:
        return params, extra
    p = t["params"]
    for tid, name, value, dist in con.execute(
        select(p.c.trial_id, p.c.param_name, p.c.param_value, p.c.distribution_json).where(p.c.trial_id.in_(best_ids))
    ):
        params.setdefault(tid, {})[name] = _external(value, dist)
    ta = t["trial_attrs"]
    keys = {"metrics"} | {f"std_test_{r['metric']}" for r in rows if r["metric"]}
    for tid, key, value in con.execute(
        select(ta.c.trial_id, ta.c.key, ta.c.value_json).where(
            and_(ta.c.trial_id.in_(best_ids), ta.c.key.in_(sorted(keys)))
        )
    ):
        extra.setdefault(tid, {})[key] = _loads(value)
    return params, extra


def _fill_best(row: dict[str, Any], params: dict[int, dict[str, Any]], extra: dict[int, dict[str, Any]]) -> None:
    """Set ``best_params`` and ``best_std`` of a row from its best trial, dropping ``_best_tid``."""
    tid = row.pop("_best_tid")
    if tid is None:
        return
    row["best_params"] = params.get(tid, {})
    found = extra.get(tid, {})
    std = found.get(f"std_test_{row['metric']}")
    if std is None:
        std = (found.get("metrics") or {}).get(f"{row['metric']}_std")
    row["best_std"] = float(std) if isinstance(std, (int, float)) else None


def _scan(
    trials: list[_Trial], values: dict[int, tuple[float, str]], directions: list[str]
) -> tuple[dict[str, int], list[tuple[int, float]], list[tuple[int, float]], tuple[float, int, int] | None]:
    """(counts by state, incl. ``running``; (number, seconds) of finished trials; (number, value) of COMPLETE
    ones; best (value, number, trial id))."""
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "running": 0}
    maximize = bool(directions) and directions[0] == "maximize"
    best: tuple[float, int, int] | None = None
    durations: list[tuple[int, float]] = []
    completes: list[tuple[int, float]] = []
    for tid, number, state, start, end in trials:
        if state in _FINISHED:
            counts[state] += 1
            secs = (end - start).total_seconds() if start is not None and end is not None else 0.0
            durations.append((number, max(0.0, secs)))
        else:
            counts["running"] += 1  # RUNNING and WAITING
        if state == "COMPLETE" and tid in values and len(directions) == 1:
            value, vtype = values[tid]
            if vtype != "FINITE":
                value = math.inf if vtype == "INF_POS" else -math.inf
            if value is None:
                continue
            completes.append((number, value))
            if _is_better(value, best[0] if best else None, maximize):
                best = (value, number, tid)
    return counts, durations, completes, best


def _summarise(
    name: str,
    directions: list[str],
    attrs: dict[str, Any],
    trials: list[_Trial],
    values: dict[int, tuple[float, str]],
    url: str,
) -> dict[str, Any]:
    """One compare row (``best_params``, ``best_std``, ``compute_to_beat_s`` filled later), plus private keys."""
    sampler, gpus, workers = _config_facts(attrs.get(CONFIG_ATTR))
    counts, durations, completes, best = _scan(trials, values, directions)
    compute = sum(s for _, s in durations)
    return {
        "study": name,
        "trainer": attrs.get("hpsearch.trainer") or "",
        "method": attrs.get("sklearn.strategy") or sampler or "",
        "metric": attrs.get("hpsearch.objective") or "",
        "direction": ",".join(directions),
        "best_value": best[0] if best else None,
        "best_std": None,
        "best_params": {},
        "best_trial": best[1] if best else None,
        "complete": counts["COMPLETE"],
        "pruned": counts["PRUNED"],
        "failed": counts["FAIL"],
        "running": counts["running"],
        "compute_s": compute,
        "gpu_s": compute * gpus * workers if gpus > 0 else None,
        "time_to_best_s": sum(s for n, s in durations if n <= best[1]) if best else None,
        "trials_to_best": sum(1 for n, _ in durations if n <= best[1]) if best else None,
        "compute_to_beat_s": {},
        "storage": mask_url(url),
        "_best_tid": best[2] if best else None,
        "_trace": _Trace(durations, completes, gpus * workers if gpus > 0 else 1.0, directions[:1] == ["maximize"]),
    }


class _Trace(NamedTuple):
    """What compute-to-beat needs of a study's trials, kept until the baselines' best values are known."""

    durations: list[tuple[int, float]]  # (number, seconds) of finished trials
    completes: list[tuple[int, float]]  # (number, value) of COMPLETE trials
    factor: float  # GPUs per trial × workers when the study used GPUs, else 1
    maximize: bool


def _compute_to_beat(trace: _Trace, target: float | None) -> float | None:
    """Compute seconds (GPU seconds where GPUs were used) up to the first COMPLETE trial better than ``target``."""
    if target is None:
        return None
    first = min((n for n, v in trace.completes if _is_better(v, target, trace.maximize)), default=None)
    if first is None:
        return None
    return sum(s for n, s in trace.durations if n <= first) * trace.factor


#: A study to compare: (storage URL, study name, its ``compare_with`` baselines as (storage URL, study name)).
_Target = tuple[str, str, list[tuple[str, str]]]


def _targets(studies: Iterable[str | Path | StudyConfig], storage: str | None) -> list[_Target]:
    """(storage URL, study name, baselines) for each study file, config or (with ``storage``) name."""
    from hpsearch.config import StudyConfig, load_config

    out: list[_Target] = []
    for item in studies:
        if isinstance(item, StudyConfig):
            cfg = item
        elif storage is not None and Path(item).suffix.lower() not in (".yaml", ".yml") and not Path(item).exists():
            out.append((storage, str(item), []))
            continue
        else:
            cfg = load_config(item)
        url = storage or cfg.resolved_storage()
        check_storage(url, file=cfg.file, must_exist=True)
        out.append((url, cfg.name, _baselines(cfg, storage)))
    return out


def _read_targets(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Rows by (storage URL, study name), one read per storage."""
    by_url: dict[str, list[str]] = {}
    for url, name in pairs:
        by_url.setdefault(url, [])
        if name not in by_url[url]:
            by_url[url].append(name)
    return {(url, r["study"]): r for url, names in by_url.items() for r in _read_storage(url, names)}


def _baselines(cfg: StudyConfig, storage: str | None) -> list[tuple[str, str]]:
    """(storage URL, study name) of each of ``cfg``'s ``compare_with`` files; a file that no longer
    loads is left out with a warning, never an error of compare (the study's own check refused it
    when it ran, so it broke since)."""
    import logging

    from hpsearch.config import load_config

    out = []
    for path in cfg.compare_with_paths():
        try:
            b = load_config(path)
        except ConfigError as e:
            logging.getLogger("hpsearch").warning("compare_with: %s is left out: %s", path, one_line(str(e)))
            continue
        out.append((storage or b.resolved_storage(), b.name))
    return out


def _baseline_bests(targets: list[_Target], found: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """Best value of every baseline named by ``targets``; None for one not run yet (no database or no study)."""
    bests: dict[tuple[str, str], Any] = {}
    for url, name in dict.fromkeys(b for _, _, baselines in targets for b in baselines):
        row = found.get((url, name))
        if row is None:
            try:
                check_storage(url, file="compare_with", must_exist=True)
                row = _read_storage(url, [name])[0]
            except (ConfigError, StorageError):
                row = None
        bests[(url, name)] = row["best_value"] if row else None
    return bests


def compare(studies: Sequence[str | Path | StudyConfig] | None = None, *, storage: str | None = None) -> pd.DataFrame:
    """One row per study (see the module docstring for the columns); reads, never writes.

    Args:
        studies: Study YAML files (or configs). With ``storage``, plain study
            names are accepted too. None or empty: every study in ``storage``.
        storage: Storage URL overriding the files' own, or to list.

    Raises:
        ConfigError: Neither studies nor storage, or a bad study file.
        StorageError: Missing database or study.
    """
    import pandas as pd

    return pd.DataFrame(compare_rows(studies, storage=storage), columns=COLUMNS)


def compare_rows(
    studies: Sequence[str | Path | StudyConfig] | None = None, *, storage: str | None = None
) -> list[dict[str, Any]]:
    """What :func:`compare` returns, as a list of dicts (no pandas import)."""
    rows: list[dict[str, Any]] = []
    if not studies:
        if storage is None:
            raise ConfigError("compare: give study files, or --storage URL to compare every study in it")
        check_storage(storage, file="compare", field="--storage", must_exist=True)
        rows = _read_storage(storage, None)
    else:
        targets = _targets(studies, storage)
        found = _read_targets((url, name) for url, name, _ in targets)
        bests = _baseline_bests(targets, found)
        for url, name, baselines in targets:
            row = found[(url, name)]
            row["compute_to_beat_s"] = {b: _compute_to_beat(row["_trace"], bests[(u, b)]) for u, b in baselines}
        rows = [found[(url, name)] for url, name in dict.fromkeys((u, n) for u, n, _ in targets)]
    return [{c: r.get(c) for c in COLUMNS} for r in rows]


def _text_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _beat_cell(value: Any) -> str:
    """``compute_to_beat_s`` for markdown: ``name 12 s`` per baseline, ``name not beaten`` when it never was."""
    if not isinstance(value, dict):
        return ""
    return ", ".join(f"{name} {_secs(s)}" for name, s in value.items())


def _secs(seconds: float | None) -> str:
    """Seconds for people (``not beaten`` for None): ``0.42 s`` below 10 s, else as :func:`duration`."""
    if seconds is None:
        return "not beaten"
    return f"{seconds:.2g} s" if seconds < 10 else duration(seconds)


def _cut(name: Any, size: int = 24) -> str:
    text = str(name)
    return text if len(text) <= size else text[: size - 1] + "…"


#: The ``table`` format's columns: (short header, cell of a row).
_SHORT: list[tuple[str, Any]] = [
    ("study", lambda r: _cut(r["study"])),
    ("trainer", lambda r: r["trainer"] or ""),
    ("method", lambda r: r["method"] or ""),
    ("metric", lambda r: r["metric"] or ""),
    ("dir", lambda r: ",".join(d[:3] for d in str(r["direction"] or "").split(","))),
    ("best", lambda r: fmt_num(r["best_value"])),
    ("std", lambda r: fmt_num(r["best_std"], 2)),
    ("#best", lambda r: fmt_num(r["best_trial"])),
    ("ok/pr/fail/run", lambda r: f"{r['complete']}/{r['pruned']}/{r['failed']}/{r['running']}"),
    ("compute", lambda r: _secs(r["compute_s"])),
    ("gpu", lambda r: "–" if r["gpu_s"] is None else _secs(r["gpu_s"])),
    ("to best", lambda r: "–" if r["time_to_best_s"] is None else _secs(r["time_to_best_s"])),
    ("n best", lambda r: fmt_num(r["trials_to_best"])),
]


#: The keys the narrow ``table`` format reads: without them, ``table`` is one plain aligned table.
_NARROW_NEEDS = set(COLUMNS) - {"best_params", "compute_to_beat_s", "storage"}


def _aligned(head: list[str], cells: list[list[str]]) -> list[str]:
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(head)]
    return ["  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip() for line in [head, *cells]]


def _blocks(columns: list[list[str]], width: int) -> list[list[int]]:
    """Column indexes per block: each starts with column 0 and holds what fits in ``width`` (at least one more)."""
    sizes = [max(len(x) for x in col) for col in columns]
    blocks: list[list[int]] = []
    for i in range(1, len(columns)):
        if blocks and sum(sizes[j] + 2 for j in blocks[-1]) + sizes[i] <= width:
            blocks[-1].append(i)
        else:
            blocks.append([0, i])
    return blocks or [[0]]


def _beat_columns(records: list[dict[str, Any]]) -> list[list[str]]:
    """One ``beat NAME`` column per baseline named by any row: compute to beat it, blank where not a baseline."""
    names = list(dict.fromkeys(n for r in records for n in (r.get("compute_to_beat_s") or {})))
    return [
        [f"beat {_cut(n, 16)}"]
        + [_secs(r["compute_to_beat_s"][n]) if n in (r.get("compute_to_beat_s") or {}) else "" for r in records]
        for n in names
    ]


def _text_table(records: list[dict[str, Any]], width: int) -> str:
    """The ``table`` format: short headers, cut names, wrapped into blocks of at most ``width`` columns."""
    columns = [[h] + [str(cell(r)) for r in records] for h, cell in _SHORT] + _beat_columns(records)
    blocks = []
    for block in _blocks(columns, width):
        body = [[columns[i][k] for i in block] for k in range(1, len(records) + 1)]
        blocks.append("\n".join(_aligned([columns[i][0] for i in block], body)))
    return "\n\n".join(blocks)


def _params_table(records: list[dict[str, Any]], fmt: str) -> str:
    """The second table of ``--params``: one row per study and best param, values to 4 significant digits."""
    head = ["study", "param", "value"]
    cells = [
        [_cut(r["study"]) if fmt == "table" else str(r["study"]), str(k), fmt_num(v)]
        for r in records
        for k, v in (r.get("best_params") or {}).items()
    ]
    if fmt == "table":
        return "\n".join(_aligned(head, cells))
    return _markdown(head, cells)


def _markdown(head: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines)


def _csv(records: list[dict[str, Any]], columns: list[str]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in records:
        writer.writerow(
            [json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else ("" if v is None else v) for v in r.values()]
        )
    return buf.getvalue().rstrip("\n")


def render(
    rows: list[dict[str, Any]] | pd.DataFrame, fmt: str, *, params: bool = False, width: int | None = None
) -> str:
    """Rows (or the frame) as ``table`` (aligned text), ``csv``, ``json`` (a list of objects) or ``markdown``.

    ``csv`` and ``json`` hold every column. ``table`` and ``markdown`` leave ``best_params`` out and, with
    ``params``, add a second table (study, param, value). ``table`` wraps into blocks of at most ``width``
    characters (default: the terminal's, ``$COLUMNS``, else 80).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if isinstance(rows, list):
        records = rows
    else:
        records = rows.astype(object).where(rows.notna(), None).to_dict(orient="records")
    columns = list(records[0]) if records else list(COLUMNS)
    if fmt == "json":
        return json.dumps(records, ensure_ascii=False, indent=2, default=str)
    if fmt == "csv":
        return _csv(records, columns)
    if fmt == "table" and not set(columns) >= _NARROW_NEEDS:  # not compare rows: one plain aligned table
        cols = [c for c in columns if c != "best_params"]
        main = "\n".join(_aligned(cols, [[_text_cell(r[c]) for c in cols] for r in records]))
    elif fmt == "table":
        import shutil

        main = _text_table(records, width or shutil.get_terminal_size((80, 24)).columns)
    else:
        cols = [c for c in columns if c != "best_params"]
        main = _markdown(
            cols, [[_beat_cell(r[c]) if c == "compute_to_beat_s" else _text_cell(r[c]) for c in cols] for r in records]
        )
    return main + ("\n\n" + _params_table(records, fmt) if params else "")
