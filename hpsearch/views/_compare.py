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
metric, direction  the objective (several: comma-separated, in order)
best_value         best feasible COMPLETE value (None with several objectives: see front)
best_std           its CV spread (``std_test_<metric>`` or ``metrics.<metric>_std``)
best_params        the best trial's params (dict)
best_trial         its number
complete, pruned,
failed, running    trial counts by state (``running`` includes WAITING)
infeasible         COMPLETE trials that break a ``constraints:`` bound (never the best)
front              several objectives: the Pareto front's size (feasible trials)
hypervolume        several objectives: the front's hypervolume against one reference
                   point shared by the compared studies (:mod:`hpsearch.views._front`)
compute_s          sum of finished trials' durations (a trial's wall time; an
                   imported row: its fits' and scorings' seconds)
gpu_s              compute_s × GPUs per trial × workers, when the study used GPUs
time_to_best_s     compute_s of the trials up to and including the best, in trial order
trials_to_best     number of finished trials up to and including the best
evaluation         what the best trial was scored on (its ``evaluation`` attribute: dataset,
                   examples, split, ``val_hash`` ...; None when the trainer records none)
compute_to_beat_s  per ``compare_with`` baseline (study name -> seconds): compute_s
                   (gpu_s where GPUs were used) of the trials up to and including
                   the first COMPLETE one strictly better than the baseline's best
                   value; None when never beaten or the baseline has no best
                   value yet (not run); ``{}`` for a study without baselines
                   (or given by name); with ``storage`` the baselines are read there
storage            storage URL, password masked
=================  ==============================================================

:func:`render` writes ``csv`` and ``json`` with every column (dicts as JSON).
``table`` and ``markdown`` show ``evaluation`` short (``holdout 103 #a1b2c3``) and add one
warning line under the table when the studies were scored on different examples
(:func:`evaluation_warning`). :func:`paired_compare` compares two studies' best trials fold by fold.
``table`` and ``markdown`` leave ``best_params`` out (and ``table`` also
``storage``); ``params=True`` adds a second table, one row per study and param.
``table`` uses short headers, cuts study names to 24 characters and, when the
columns do not fit the terminal width (``$COLUMNS``, 80 when unknown), wraps
into blocks separated by a blank line, each starting with the ``study`` column.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from hpsearch.data._splits import EVALUATION_ATTR
from hpsearch.errors import ConfigError, StorageError, one_line
from hpsearch.storage import check_storage, mask_url, readonly_engine
from hpsearch.study._scheduling import WARM_START_ATTR
from hpsearch.views._format import duration
from hpsearch.views._format import fmt as fmt_num

if TYPE_CHECKING:
    import pandas as pd

    from hpsearch.config import StudyConfig

__all__ = [
    "compare",
    "compare_output",
    "compare_rows",
    "COLUMNS",
    "FORMATS",
    "evaluation_cell",
    "evaluation_warning",
    "corrected_t_test",
    "paired_compare",
    "render",
    "render_paired",
]

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
    "infeasible",
    "front",
    "hypervolume",
    "compute_s",
    "gpu_s",
    "time_to_best_s",
    "trials_to_best",
    "compute_to_beat_s",
    "evaluation",
    "storage",
]
FORMATS = ("table", "csv", "json", "markdown")
_FINISHED = ("COMPLETE", "PRUNED", "FAIL")
#: The study attribute holding the resolved study YAML (written by the study manager).
CONFIG_ATTR = "hpsearch.config"
_STUDY_KEYS = ("hpsearch.trainer", "hpsearch.objective", CONFIG_ATTR, "sklearn.strategy")
#: The trial attribute where ``sklearn_cv`` keeps each fold's score.
CV_SCORES_ATTR = "cv_scores"
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
    "trial_sys": ("trial_system_attributes", (("trial_id", "Integer"), ("key", "String"), ("value_json", "Text"))),
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
    infeasible = _infeasible(con, t, ids)
    for tid, value, vtype in con.execute(
        select(v.c.trial_id, v.c.value, v.c.value_type)
        .select_from(v.join(tr, tr.c.trial_id == v.c.trial_id))
        .where(and_(tr.c.study_id.in_(ids), complete, v.c.objective == 0))
    ):
        if tid not in infeasible:  # an infeasible trial is never the best
            values[tid] = (value, str(vtype))
    for sid in ids:
        trials[sid] = [(*tr_[:2], "INFEASIBLE" if tr_[0] in infeasible else tr_[2], *tr_[3:]) for tr_ in trials[sid]]
    return trials, values


def _infeasible(con: Any, t: dict[str, Any], ids: list[int]) -> set[int]:
    """Trial ids with a constraint above 0 (Optuna's ``constraints:<name>`` system attributes)."""
    from sqlalchemy import and_, select

    tr, sa = t["trials"], t["trial_sys"]
    rows = con.execute(
        select(sa.c.trial_id, sa.c.value_json)
        .select_from(sa.join(tr, tr.c.trial_id == sa.c.trial_id))
        .where(and_(tr.c.study_id.in_(ids), sa.c.key.like("constraints:%")))
    )
    return {tid for tid, value in rows if isinstance(_loads(value), (int, float)) and _loads(value) > 0}


def _best_details(
    con: Any, t: dict[str, Any], rows: list[dict[str, Any]]
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """The best trials' params, and their user attributes that may hold the CV spread, by trial id."""
    from sqlalchemy import and_, or_, select

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
    keys = {"metrics", EVALUATION_ATTR, CV_SCORES_ATTR} | {f"std_test_{r['metric']}" for r in rows if r["metric"]}
    for tid, key, value in con.execute(
        select(ta.c.trial_id, ta.c.key, ta.c.value_json).where(
            and_(ta.c.trial_id.in_(best_ids), or_(ta.c.key.in_(sorted(keys)), ta.c.key.like("split%")))
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
    evaluation = found.get(EVALUATION_ATTR)
    row["evaluation"] = evaluation if isinstance(evaluation, dict) else None
    row["_fold_scores"] = _fold_scores(found, row["metric"])


def _fold_scores(attrs: dict[str, Any], metric: str) -> list[float] | None:
    """The best trial's score on each fold, in fold order: ``cv_scores`` (``sklearn_cv``) or
    ``split<k>_test_<metric>`` (an imported ``sklearn_search`` row); None when it has neither."""
    scores = attrs.get(CV_SCORES_ATTR)
    if isinstance(scores, list) and all(isinstance(v, (int, float)) for v in scores):
        return [float(v) for v in scores]
    pattern = re.compile(rf"^split(\d+)_test_{re.escape(metric)}$")
    found = {int(m[1]): v for k, v in attrs.items() if (m := pattern.match(k)) and isinstance(v, (int, float))}
    if not found or sorted(found) != list(range(len(found))):
        return None
    return [float(found[k]) for k in range(len(found))]


def _scan(
    trials: list[_Trial], values: dict[int, tuple[float, str]], directions: list[str]
) -> tuple[dict[str, int], list[tuple[int, float]], list[tuple[int, float]], tuple[float, int, int] | None]:
    """(counts by state, incl. ``running``; (number, seconds) of finished trials; (number, value) of COMPLETE
    ones; best (value, number, trial id))."""
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "running": 0, "INFEASIBLE": 0}
    maximize = bool(directions) and directions[0] == "maximize"
    best: tuple[float, int, int] | None = None
    durations: list[tuple[int, float]] = []
    completes: list[tuple[int, float]] = []
    for tid, number, state, start, end in trials:
        if state == "INFEASIBLE":  # a COMPLETE trial outside a constraint: counted as both
            counts["INFEASIBLE"] += 1
            state = "COMPLETE"
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
        "infeasible": counts["INFEASIBLE"],
        "front": None,
        "hypervolume": None,
        "compute_s": compute,
        "gpu_s": compute * gpus * workers if gpus > 0 else None,
        "time_to_best_s": sum(s for n, s in durations if n <= best[1]) if best else None,
        "trials_to_best": sum(1 for n, _ in durations if n <= best[1]) if best else None,
        "compute_to_beat_s": {},
        "evaluation": None,
        "storage": mask_url(url),
        "_url": url,
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


def compare(
    studies: Sequence[str | Path | StudyConfig] | None = None,
    *,
    storage: str | None = None,
    reference: Sequence[float] | None = None,
) -> pd.DataFrame:
    """One row per study (see the module docstring for the columns); reads, never writes.

    Args:
        studies: Study YAML files (or configs). With ``storage``, plain study
            names are accepted too. None or empty: every study in ``storage``.
        storage: Storage URL overriding the files' own, or to list.
        reference: Several objectives: the hypervolume's reference point (default: see
            :mod:`hpsearch.views._front`).

    Raises:
        ConfigError: Neither studies nor storage, a bad study file, or a reference of the wrong length.
        StorageError: Missing database or study.
    """
    import pandas as pd

    return pd.DataFrame(compare_rows(studies, storage=storage, reference=reference), columns=COLUMNS)


def compare_rows(
    studies: Sequence[str | Path | StudyConfig] | None = None,
    *,
    storage: str | None = None,
    reference: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """What :func:`compare` returns, as a list of dicts (no pandas import)."""
    rows = _full_rows(studies, storage)
    _add_fronts(rows, reference)
    return [{c: r.get(c) for c in COLUMNS} for r in rows]


def _add_fronts(rows: list[dict[str, Any]], reference: Sequence[float] | None) -> None:
    """Fill ``front`` and ``hypervolume`` (and name every objective) for the multi-objective studies."""
    multi = [r for r in rows if "," in r["direction"]]
    if not multi:
        return
    import optuna

    from hpsearch.storage import open_readonly_storage
    from hpsearch.study._objectives import study_metrics
    from hpsearch.views._front import front_cell, front_summaries

    studies = [optuna.load_study(study_name=r["study"], storage=open_readonly_storage(r["_url"])) for r in multi]
    for row, study, summary in zip(multi, studies, front_summaries(studies, reference), strict=True):
        row.update(front_cell(summary))
        row["metric"] = ",".join(study_metrics(study))


def _full_rows(studies: Sequence[str | Path | StudyConfig] | None, storage: str | None) -> list[dict[str, Any]]:
    """Compare rows with their private keys (``_fold_scores``, ``_trace``)."""
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
    return rows


def evaluation_cell(record: dict[str, Any] | None) -> str:
    """An ``evaluation`` record, short: ``holdout 103 #a1b2c3`` or ``cv:5 2127 #d4e5f6`` ("" for None)."""
    if not isinstance(record, dict):
        return ""
    split = str(record.get("split") or "?").split(" ")[0]
    return f"{split} {record.get('examples', '?')} #{str(record.get('val_hash') or '?')[:6]}"


def _evaluation_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two evaluations the same: the split, its size and the hash of its examples
    (content ids: the dataset's name or path may differ for the same examples)."""
    return (record.get("split"), record.get("examples"), record.get("val_hash"))


def evaluation_warning(rows: Sequence[dict[str, Any]]) -> str | None:
    """One warning line when the rows' best trials were scored on different examples, else None.

    Rows whose trainer records no ``evaluation`` are left out (unknown is not known to differ).
    """
    known = [(r["study"], r["evaluation"]) for r in rows if isinstance(r.get("evaluation"), dict)]
    if len({_evaluation_key(e) for _, e in known}) < 2:
        return None
    datasets = {e.get("dataset") for _, e in known}
    seen = ", ".join(
        f"{name} {evaluation_cell(e)}" + (f" ({e.get('dataset') or '?'})" if len(datasets) > 1 else "")
        for name, e in known
    )
    return (
        f"warning: not scored on the same examples: {seen}; the scores are not directly comparable "
        "(score them on one split: validation: holdout)"
    )


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
    ("infeas", lambda r: str(r.get("infeasible") or "")),
    ("front", lambda r: fmt_num(r.get("front"))),
    ("hypervol", lambda r: fmt_num(r.get("hypervolume"))),
    ("compute", lambda r: _secs(r["compute_s"])),
    ("gpu", lambda r: "–" if r["gpu_s"] is None else _secs(r["gpu_s"])),
    ("to best", lambda r: "–" if r["time_to_best_s"] is None else _secs(r["time_to_best_s"])),
    ("n best", lambda r: fmt_num(r["trials_to_best"])),
    ("evaluated on", lambda r: evaluation_cell(r.get("evaluation")) or "–"),
]


#: Table columns left out when no study fills them.
_OPTIONAL = ("infeas", "front", "hypervol")

#: The keys the narrow ``table`` format reads: without them, ``table`` is one plain aligned table.
_NARROW_NEEDS = set(COLUMNS) - {"best_params", "compute_to_beat_s", "evaluation", "storage"}


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
    # The columns of constraints and several objectives only when a study has them.
    columns = [c for c in columns if c[0] not in _OPTIONAL or any(x not in ("", "–") for x in c[1:])]
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
        main = _markdown(cols, [[_markdown_cell(c, r[c]) for c in cols] for r in records])
    warning = evaluation_warning(records) if "evaluation" in columns and "study" in columns else None
    main += f"\n{warning}" if warning else ""
    return main + ("\n\n" + _params_table(records, fmt) if params else "")


def _markdown_cell(column: str, value: Any) -> str:
    if column == "compute_to_beat_s":
        return _beat_cell(value)
    if column == "evaluation":
        return evaluation_cell(value)
    return _text_cell(value)


def compare_output(
    studies: Sequence[str],
    *,
    storage: str | None = None,
    fmt: str = "table",
    params: bool = False,
    paired: bool = False,
    reference: str | None = None,
) -> tuple[str, str | None]:
    """What ``hpsearch compare`` prints: the text for stdout, and a warning line for stderr (None: none).

    ``table`` and ``markdown`` carry the evaluation warning under the table; ``csv`` and ``json`` leave it
    out of the data and return it for stderr. ``paired`` renders :func:`paired_compare` of two studies.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if paired:
        if len(studies) != 2:
            raise ConfigError(f"compare --paired: give exactly two studies, got {len(studies)}")
        return render_paired(paired_compare(studies[0], studies[1], storage=storage), fmt), None
    from hpsearch.views._front import parse_reference

    rows = compare_rows(list(studies), storage=storage, reference=parse_reference(reference))
    return render(rows, fmt, params=params), evaluation_warning(rows) if fmt in ("csv", "json") else None


# ---------------------------------------------------------------- paired comparison


def paired_compare(
    a: str | Path | StudyConfig, b: str | Path | StudyConfig, *, storage: str | None = None
) -> dict[str, Any]:
    """Two studies' best trials compared fold by fold, on the same folds.

    Returns the studies, metric, each fold's scores and difference (A - B), the mean
    difference, the corrected resampled t-test of Nadeau & Bengio (2003) (``t``, ``df``,
    two-sided ``p``) and the fold wins (by the objective's direction).

    Raises:
        ConfigError: Not two studies, no per-fold scores, or not scored on the same folds.
    """
    rows = _full_rows([a, b], storage)
    if len(rows) != 2:
        raise ConfigError("compare --paired: give two different studies, got the same study twice")
    ra, rb = rows
    _check_pairable(ra, rb)
    sa, sb = ra["_fold_scores"], rb["_fold_scores"]
    diffs = [x - y for x, y in zip(sa, sb, strict=True)]
    t, p = corrected_t_test(diffs, test_train_ratio=1 / (len(diffs) - 1))
    sign = 1 if ra["direction"] == "maximize" else -1
    return {
        "a": ra["study"],
        "b": rb["study"],
        "metric": ra["metric"],
        "direction": ra["direction"],
        "evaluation": ra["evaluation"],
        "folds": [{"fold": k, "a": x, "b": y, "diff": x - y} for k, (x, y) in enumerate(zip(sa, sb, strict=True))],
        "mean_diff": sum(diffs) / len(diffs),
        "t": t,
        "df": len(diffs) - 1,
        "p": p,
        "wins": {
            "a": sum(1 for d in diffs if d * sign > 0),
            "b": sum(1 for d in diffs if d * sign < 0),
            "ties": sum(1 for d in diffs if d == 0),
        },
    }


def corrected_t_test(diffs: Sequence[float], *, test_train_ratio: float) -> tuple[float, float]:
    """(t, two-sided p) of the corrected resampled t-test (Nadeau & Bengio, 2003).

    ``t = mean(d) / sqrt((1/k + n_test/n_train) * var(d, ddof=1))`` with ``k - 1`` degrees of
    freedom; ``test_train_ratio`` is ``n_test/n_train`` (``1/(k-1)`` for k-fold CV). Equal
    differences (no variance) give ``t = ±inf, p = 0``, or ``t = 0, p = 1`` when all are 0.
    """
    from scipy.stats import t as student_t

    k = len(diffs)
    mean = sum(diffs) / k
    var = sum((d - mean) ** 2 for d in diffs) / (k - 1)
    scale = math.sqrt((1 / k + test_train_ratio) * var)
    if scale == 0:
        return (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / scale
    return t, float(2 * student_t.sf(abs(t), k - 1))


def _check_pairable(ra: dict[str, Any], rb: dict[str, Any]) -> None:
    """Refuse two best trials that were not scored fold by fold on the very same folds."""
    where = "compare --paired"
    for r in (ra, rb):
        if r["best_trial"] is None:
            raise ConfigError(f"{where}: study {r['study']!r} has no COMPLETE trial yet; run it first")
        if r["_fold_scores"] is None:
            raise ConfigError(
                f"{where}: the best trial of {r['study']!r} has no per-fold scores; only sklearn_cv and "
                "sklearn_search studies store them (compare the others without --paired)"
            )
        if r["evaluation"] is None:
            raise ConfigError(
                f"{where}: study {r['study']!r} records no evaluation (run before hpsearch recorded its folds); "
                "run it again to compare fold by fold"
            )
    if ra["metric"] != rb["metric"] or ra["direction"] != rb["direction"]:
        raise ConfigError(
            f"{where}: {ra['study']!r} optimises {ra['metric']} ({ra['direction']}) but {rb['study']!r} "
            f"{rb['metric']} ({rb['direction']}); pair studies of the same objective"
        )
    if _evaluation_key(ra["evaluation"]) != _evaluation_key(rb["evaluation"]):
        raise ConfigError(
            f"{where}: {ra['study']!r} ({evaluation_cell(ra['evaluation'])}) and {rb['study']!r} "
            f"({evaluation_cell(rb['evaluation'])}) were not scored on the same folds; give both the same "
            "dataset, validation, cv, data_seed and max_examples"
        )
    if len(ra["_fold_scores"]) != len(rb["_fold_scores"]) or len(ra["_fold_scores"]) < 2:
        raise ConfigError(
            f"{where}: {ra['study']!r} and {rb['study']!r} have {len(ra['_fold_scores'])} and "
            f"{len(rb['_fold_scores'])} fold scores; a paired test needs the same 2 or more folds (validation: cv)"
        )


def render_paired(result: dict[str, Any], fmt: str) -> str:
    """:func:`paired_compare`'s result as ``table`` (the folds, then the test), ``markdown`` or ``json``."""
    if fmt == "json":
        return json.dumps(result, ensure_ascii=False, indent=2)
    if fmt not in ("table", "markdown"):
        raise ConfigError(f"--format: --paired prints table, markdown or json, got {fmt!r}")
    head = ["fold", _cut(result["a"]), _cut(result["b"]), "diff"]
    cells = [[str(f["fold"]), fmt_num(f["a"]), fmt_num(f["b"]), f"{f['diff']:+.4g}"] for f in result["folds"]]
    table = "\n".join(_aligned(head, cells)) if fmt == "table" else _markdown(head, cells)
    wins = result["wins"]
    return "\n".join(
        [
            table,
            "",
            f"{result['metric']} ({result['direction']}), {len(cells)} folds, "
            f"evaluated on {evaluation_cell(result['evaluation'])}",
            f"mean difference ({result['a']} - {result['b']}): {result['mean_diff']:+.4g}",
            f"corrected resampled t-test (Nadeau & Bengio 2003): t = {result['t']:.4g}, "
            f"df = {result['df']}, p = {result['p']:.4g}",
            f"fold wins: {result['a']} {wins['a']}, {result['b']} {wins['b']}, ties {wins['ties']}",
        ]
    )
