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
storage            storage URL, password masked
=================  ==============================================================
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.errors import ConfigError, StorageError, one_line
from hpsearch.storage import check_storage, mask_url

if TYPE_CHECKING:
    import pandas as pd

    from hpsearch.config import StudyConfig

__all__ = ["compare", "compare_rows", "COLUMNS", "FORMATS", "render"]

COLUMNS = [
    "study", "trainer", "method", "metric", "direction", "best_value", "best_std", "best_params",
    "best_trial", "complete", "pruned", "failed", "running", "compute_s", "gpu_s",
    "time_to_best_s", "trials_to_best", "storage",
]
FORMATS = ("table", "csv", "json", "markdown")
_FINISHED = ("COMPLETE", "PRUNED", "FAIL")
_STUDY_KEYS = ("hpsearch.trainer", "hpsearch.objective", "hpsearch.config._study", "sklearn.strategy")


def _tables() -> dict[str, Any]:
    from sqlalchemy import DateTime, Float, Integer, String, Text, column, table

    return {
        "studies": table("studies", column("study_id", Integer), column("study_name", String)),
        "directions": table(
            "study_directions", column("study_id", Integer), column("objective", Integer),
            column("direction", String),
        ),
        "study_attrs": table(
            "study_user_attributes", column("study_id", Integer), column("key", String),
            column("value_json", Text),
        ),
        "trials": table(
            "trials", column("trial_id", Integer), column("number", Integer), column("study_id", Integer),
            column("state", String), column("datetime_start", DateTime), column("datetime_complete", DateTime),
        ),
        "values": table(
            "trial_values", column("trial_id", Integer), column("objective", Integer),
            column("value", Float), column("value_type", String),
        ),
        "params": table(
            "trial_params", column("trial_id", Integer), column("param_name", String),
            column("param_value", Float), column("distribution_json", Text),
        ),
        "trial_attrs": table(
            "trial_user_attributes", column("trial_id", Integer), column("key", String),
            column("value_json", Text),
        ),
    }


def _engine(url: str) -> Any:
    import sqlalchemy

    from hpsearch.storage import sqlite_path

    path = sqlite_path(url)
    kwargs: dict[str, Any] = {"poolclass": sqlalchemy.pool.NullPool}
    if path is not None:
        kwargs["creator"] = _ReadOnlySQLite(str(path))
    elif url.lower().startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 10}  # an unreachable server fails, never hangs
    return sqlalchemy.create_engine(url, **kwargs)


class _ReadOnlySQLite:
    """Read-only connections: no writes, and no WAL checkpoint into the file on close."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self) -> Any:
        import sqlite3
        from urllib.parse import quote

        path = Path(self.path).resolve()
        # With a WAL file present, a read-write handle would checkpoint it into
        # the database on close (rewriting the file); a read-only one cannot.
        # Without one, read-only would leave new -wal/-shm files behind.
        mode = "ro" if Path(f"{path}-wal").exists() else "rw"
        con = sqlite3.connect(f"file:{quote(str(path))}?mode={mode}", uri=True, timeout=60, check_same_thread=False)
        con.execute("PRAGMA query_only=ON")
        return con


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
    import sqlalchemy
    from sqlalchemy import and_, select

    t = _tables()
    engine = _engine(url)
    try:
        with engine.connect() as con:
            try:
                q = select(t["studies"].c.study_id, t["studies"].c.study_name)
                if names is not None:
                    q = q.where(t["studies"].c.study_name.in_(names))
                studies = {name: sid for sid, name in con.execute(q)}
            except sqlalchemy.exc.OperationalError as e:
                raise StorageError(
                    f"storage {mask_url(url)}: not an Optuna storage ({one_line(str(e.orig))[:120]})"
                ) from None
            for name in names or []:
                if name not in studies:
                    raise StorageError(f"no study named {name!r} in {mask_url(url)}; run it first")
            order = names if names is not None else sorted(studies, key=lambda n: studies[n])
            ids = [studies[n] for n in order]
            if not ids:
                return []
            d = t["directions"]
            directions: dict[int, list[str]] = {}
            for sid, obj, direction in con.execute(
                select(d.c.study_id, d.c.objective, d.c.direction).where(d.c.study_id.in_(ids)).order_by(d.c.objective)
            ):
                directions.setdefault(sid, []).append(str(direction).lower())
            sa = t["study_attrs"]
            attrs: dict[int, dict[str, Any]] = {}
            for sid, key, value in con.execute(
                select(sa.c.study_id, sa.c.key, sa.c.value_json).where(
                    and_(sa.c.study_id.in_(ids), sa.c.key.in_(_STUDY_KEYS))
                )
            ):
                attrs.setdefault(sid, {})[key] = _loads(value)
            tr = t["trials"]
            trials: dict[int, list[tuple[int, int, str, Any, Any]]] = {sid: [] for sid in ids}
            for tid, number, sid, state, start, end in con.execute(
                select(tr.c.trial_id, tr.c.number, tr.c.study_id, tr.c.state, tr.c.datetime_start, tr.c.datetime_complete)
                .where(tr.c.study_id.in_(ids))
            ):
                trials[sid].append((tid, number, str(state), start, end))
            v = t["values"]
            values: dict[int, tuple[float, str]] = {}
            for tid, value, vtype in con.execute(
                select(v.c.trial_id, v.c.value, v.c.value_type)
                .select_from(v.join(tr, tr.c.trial_id == v.c.trial_id))
                .where(and_(tr.c.study_id.in_(ids), sqlalchemy.cast(tr.c.state, sqlalchemy.String) == "COMPLETE", v.c.objective == 0))
            ):
                values[tid] = (value, str(vtype))

            rows = [
                _summarise(order[i], sid, directions.get(sid, []), attrs.get(sid, {}), trials[sid], values, url)
                for i, sid in enumerate(ids)
            ]
            best_ids = [r["_best_tid"] for r in rows if r["_best_tid"] is not None]
            params: dict[int, dict[str, Any]] = {}
            extra: dict[int, dict[str, Any]] = {}
            if best_ids:
                p = t["params"]
                for tid, name, value, dist in con.execute(
                    select(p.c.trial_id, p.c.param_name, p.c.param_value, p.c.distribution_json)
                    .where(p.c.trial_id.in_(best_ids))
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
    finally:
        engine.dispose()
    for row in rows:
        tid = row.pop("_best_tid")
        if tid is None:
            continue
        row["best_params"] = params.get(tid, {})
        found = extra.get(tid, {})
        std = found.get(f"std_test_{row['metric']}")
        if std is None:
            std = (found.get("metrics") or {}).get(f"{row['metric']}_std")
        row["best_std"] = float(std) if isinstance(std, (int, float)) else None
    return rows


def _summarise(
    name: str, sid: int, directions: list[str], attrs: dict[str, Any],
    trials: list[tuple[int, int, str, Any, Any]], values: dict[int, tuple[float, str]], url: str,
) -> dict[str, Any]:
    sampler, gpus, workers = _config_facts(attrs.get("hpsearch.config._study"))
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
    running = 0
    maximize = bool(directions) and directions[0] == "maximize"
    best: tuple[float, int, int] | None = None  # value, number, trial_id
    durations: list[tuple[int, float]] = []
    for tid, number, state, start, end in trials:
        if state in counts:
            counts[state] += 1
            secs = (end - start).total_seconds() if start is not None and end is not None else 0.0
            durations.append((number, max(0.0, secs)))
        else:
            running += 1
        if state == "COMPLETE" and tid in values and len(directions) == 1:
            value, vtype = values[tid]
            if vtype != "FINITE":
                value = math.inf if vtype == "INF_POS" else -math.inf
            if value is not None and _is_better(value, best[0] if best else None, maximize):
                best = (value, number, tid)
    compute = sum(s for _, s in durations)
    row: dict[str, Any] = {
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
        "running": running,
        "compute_s": compute,
        "gpu_s": compute * gpus * workers if gpus > 0 else None,
        "time_to_best_s": sum(s for n, s in durations if n <= best[1]) if best else None,
        "trials_to_best": sum(1 for n, _ in durations if n <= best[1]) if best else None,
        "storage": mask_url(url),
        "_best_tid": best[2] if best else None,
    }
    return row


def _targets(
    studies: Iterable[str | Path | StudyConfig], storage: str | None
) -> list[tuple[str, str]]:
    """(storage URL, study name) for each study file, config or (with ``storage``) name."""
    from hpsearch.config import StudyConfig, load_config

    out: list[tuple[str, str]] = []
    for item in studies:
        if isinstance(item, StudyConfig):
            cfg = item
        elif storage is not None and Path(item).suffix.lower() not in (".yaml", ".yml") and not Path(item).exists():
            out.append((storage, str(item)))
            continue
        else:
            cfg = load_config(item)
        url = storage or cfg.resolved_storage()
        check_storage(url, file=cfg.file, must_exist=True)
        out.append((url, cfg.name))
    return out


def compare(
    studies: Sequence[str | Path | StudyConfig] | None = None, *, storage: str | None = None
) -> pd.DataFrame:
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
        by_url: dict[str, list[str]] = {}
        for url, name in targets:
            by_url.setdefault(url, [])
            if name not in by_url[url]:
                by_url[url].append(name)
        found = {(url, r["study"]): r for url, names in by_url.items() for r in _read_storage(url, names)}
        rows = [found[t] for t in dict.fromkeys(targets)]
    return [{c: r.get(c) for c in COLUMNS} for r in rows]


def _text_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def render(rows: list[dict[str, Any]] | pd.DataFrame, fmt: str) -> str:
    """Rows (or the frame) as ``table`` (aligned text), ``csv``, ``json`` (a list of objects) or ``markdown``."""
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
    cols = [c for c in columns if c != "storage"] if fmt == "table" else columns
    cells = [[_text_cell(r[c]) for c in cols] for r in records]
    if fmt == "markdown":
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()]
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)
