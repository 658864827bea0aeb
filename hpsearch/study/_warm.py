"""Warm start: ``enqueue`` points and an earlier study's trials, written once as the study opens.

Both are checked before anything is written (:func:`check_seeds`, :func:`load_source`,
called by ``open_study`` before it opens the storage) and written by :func:`seed_study`
under the study lock, once per study: each enqueued trial carries its point in the
user attribute ``hpsearch.enqueued`` and each copied trial its origin in
``warm_start_from`` (:data:`~hpsearch.study._scheduling.WARM_START_ATTR`), so a re-run,
even after a ``kill -9`` half-way through, adds only what is missing.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.config import CategoricalParam, FloatParam, IntParam
from hpsearch.errors import ConfigError
from hpsearch.search._conditional import Conditions
from hpsearch.storage import StudyLock, check_storage, mask_url, open_readonly_storage
from hpsearch.storage import _optuna as ox
from hpsearch.study._objectives import Objectives, dominates
from hpsearch.study._scheduling import WARM_START_ATTR

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from hpsearch.config import StudyConfig
    from hpsearch.study._prepare import Prepared

__all__ = ["ENQUEUED_ATTR", "WARM_START_STUDY_ATTR", "WarmSource", "check_seeds", "load_source", "seed_study"]

logger = logging.getLogger("hpsearch")

#: User attribute of an enqueued trial: its point as canonical JSON.
ENQUEUED_ATTR = "hpsearch.enqueued"
#: Study user attribute written once the warm start is copied: ``{"from", "storage", "top", "copied", "skipped"}``.
WARM_START_STUDY_ATTR = "warm_start"


def fit_value(value: Any, spec: Any) -> Any:
    """``value`` as ``spec`` (a search_space entry) stores it.

    Raises:
        ValueError: The value is outside the param's range or choices (the message says which).
    """
    if isinstance(spec, CategoricalParam):
        for c in spec.choices:
            if c == value and isinstance(c, bool) == isinstance(value, bool):
                return c
        raise ValueError(f"{value!r} is not one of the choices {spec.choices}; use one of them")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected a number, got {value!r}")
    if not spec.low <= value <= spec.high:
        raise ValueError(f"{value!r} is outside [{spec.low}, {spec.high}]; give a value in that range")
    if isinstance(spec, IntParam):
        if value != int(value) or (int(value) - spec.low) % spec.step:
            raise ValueError(f"{value!r} is not low {spec.low} plus a multiple of step {spec.step}")
        return int(value)
    assert isinstance(spec, FloatParam)
    if spec.step is not None:
        k = round((value - spec.low) / spec.step)
        if abs(spec.low + k * spec.step - value) > 1e-8 * max(1.0, abs(value)):
            raise ValueError(f"{value!r} is not low {spec.low} plus a multiple of step {spec.step}")
    return float(value)


def fit_point(point: dict[str, Any], space: dict[str, Any], conditions: Conditions | None = None) -> dict[str, Any]:
    """``point`` with one value per param of ``space``, each as the study stores it.

    With ``conditions`` (the space's ``when:``), a param whose condition fails for the
    point is left out, and must be absent from it.

    Raises:
        KeyError: A param of ``space`` is missing (its name).
        ValueError: A value does not fit; ``args`` are (param, why).
    """
    out: dict[str, Any] = {}
    for name in conditions.order if conditions is not None else space:
        spec = space[name]
        if conditions is not None and not conditions.holds(name, out):
            if name in point:
                raise ValueError(name, f"its when: {spec.when} does not hold for this point; leave it out")
            continue
        if name not in point:
            raise KeyError(name)
        try:
            out[name] = fit_value(point[name], spec)
        except ValueError as e:
            raise ValueError(name, str(e)) from None
    return out


def _enqueue_points(cfg: StudyConfig) -> list[dict[str, Any]]:
    """The ``enqueue`` points, fitted to the search space.

    Raises:
        ConfigError: An unknown or missing param, or a value outside the space.
    """
    file, space = cfg.file, cfg.search_space
    points = []
    for i, point in enumerate(cfg.enqueue):
        unknown = sorted(set(point) - set(space))
        if unknown:
            raise ConfigError(
                f"{file}: enqueue[{i}].{unknown[0]}: not a search_space param; "
                f"use only {', '.join(space) or 'nothing (the search space is empty)'}"
            )
        try:
            points.append(fit_point(point, space, Conditions.of(cfg)))
        except KeyError as e:
            raise ConfigError(
                f"{file}: enqueue[{i}].{e.args[0]}: missing; give every search_space param a value"
            ) from None
        except ValueError as e:
            raise ConfigError(f"{file}: enqueue[{i}].{e.args[0]}: {e.args[1]}") from None
    return points


def check_seeds(prepared: Prepared) -> None:
    """Refuse bad ``enqueue`` points, and seeds with a scheduler that cannot take them (nothing written)."""
    cfg = prepared.config
    _enqueue_points(cfg)
    if not cfg.enqueue and cfg.warm_start is None:
        return
    key = "enqueue" if cfg.enqueue else "warm_start"
    if cfg.scheduler.name == "pbt":
        raise ConfigError(
            f"{cfg.file}: {key}: PBT starts its population from the sampler and counts every trial as a "
            f"member; remove {key} or use scheduler: sampler"
        )
    if prepared.trainer.imports_trials:
        raise ConfigError(
            f"{cfg.file}: {key}: trainer {prepared.trainer.kind!r} runs its whole search in one job "
            f"and takes no trials from the study; remove {key}"
        )


@dataclass
class WarmSource:
    """The earlier study's trials to copy (already its ``top`` best, its own trials only)."""

    label: str
    name: str
    storage: str
    trials: list[FrozenTrial] = field(default_factory=list)

    def record(self, top: int | None, copied: int, skipped: int) -> dict[str, Any]:
        """The study attribute that says the warm start is done."""
        return {
            "from": self.label,
            "storage": mask_url(self.storage),
            "top": top,
            "copied": copied,
            "skipped": skipped,
        }


def _source_address(prepared: Prepared) -> tuple[str, str, str]:
    """(label, study name, storage URL) of ``warm_start``'s study."""
    from hpsearch.config import load_config

    cfg = prepared.config
    ws = cfg.warm_start
    assert ws is not None
    if ws.from_ is None:
        assert ws.study is not None
        return ws.study, ws.study, ws.storage or prepared.storage_url
    path = Path(ws.from_)
    path = path if path.is_absolute() else cfg.study_dir / path
    if not path.is_file():
        raise ConfigError(
            f"{cfg.file}: warm_start.from: no study file {ws.from_!r} (looked at {path}); "
            "give a path relative to this file"
        )
    source = load_config(path)
    return ws.from_, source.name, source.resolved_storage()


def _already_done(prepared: Prepared) -> bool:
    """Whether this study already holds the warm start it asks for (a read-only look; False when unsure)."""
    from hpsearch.storage import sqlite_path

    cfg, url = prepared.config, prepared.storage_url
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return False
    storage = None
    try:
        storage = open_readonly_storage(url)
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(cfg.name))
    except Exception:  # noqa: BLE001 - no study (yet), or no tables: not done
        return False
    finally:
        _dispose(storage)
    done = attrs.get(WARM_START_STUDY_ATTR) or {}
    ws = cfg.warm_start
    assert ws is not None
    return done.get("from") == (ws.from_ or ws.study) and done.get("top") == ws.top


def _dispose(storage: Any) -> None:
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


def load_source(prepared: Prepared) -> WarmSource | None:
    """The ``warm_start`` study's best trials, read before this study is written; None: nothing to copy.

    Raises:
        ConfigError: No such file or study, the study itself, or another objective or direction.
    """
    cfg = prepared.config
    if cfg.warm_start is None or _already_done(prepared):
        return None
    label, name, url = _source_address(prepared)
    if name == cfg.name and url == prepared.storage_url:
        raise ConfigError(
            f"{cfg.file}: warm_start: names this study itself; give the earlier study (a file or its name)"
        )
    field_ = "warm_start.from" if cfg.warm_start.from_ else "warm_start.storage"
    check_storage(url, field=field_, file=cfg.file, must_exist=True)
    storage = open_readonly_storage(url)
    try:
        source = WarmSource(label, name, url, _best_trials(storage, name, url, prepared))
    finally:
        _dispose(storage)
    return source


def _best_trials(storage: Any, name: str, url: str, prepared: Prepared) -> list[FrozenTrial]:
    """The source study's own COMPLETE trials, its ``top`` best first by its direction."""
    from optuna.trial import TrialState

    cfg = prepared.config
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        raise ConfigError(
            f"{cfg.file}: warm_start: no study {name!r} in {mask_url(url)}; run it first or fix the name"
        ) from None
    _check_same_objectives(storage, study_id, name, cfg)
    directions = [o.direction for o in cfg.objectives]
    trials = [
        t
        for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None and WARM_START_ATTR not in t.user_attrs
    ]
    if len(directions) > 1:  # best first: by how many trials dominate it
        trials.sort(key=lambda t: (sum(dominates(o.values, t.values, directions) for o in trials), t.number))
    else:
        sign = -1 if directions[0] == "maximize" else 1
        trials.sort(key=lambda t: (sign * t.value, t.number))
    top = cfg.warm_start.top if cfg.warm_start else None
    return sorted(trials[:top], key=lambda t: t.number)


def _check_same_objectives(storage: Any, study_id: int, name: str, cfg: StudyConfig) -> None:
    """Refuse a source study with other objectives (metrics or directions) than this one."""
    ours = [(o.metric, o.direction) for o in cfg.objectives]
    directions = [d.name.lower() for d in storage.get_study_directions(study_id)]
    metrics = storage.get_study_system_attrs(study_id).get("study:metric_names")
    if not metrics or len(metrics) != len(directions):
        single = storage.get_study_user_attrs(study_id).get("hpsearch.objective", cfg.first_objective.metric)
        metrics = [single] if len(directions) == 1 else [f"objective {i}" for i in range(len(directions))]
    theirs = list(zip(metrics, directions, strict=True))
    if theirs != ours:
        show = ", ".join(f"{m} ({d})" for m, d in theirs)
        mine = ", ".join(f"{m} ({d})" for m, d in ours)
        raise ConfigError(
            f"{cfg.file}: warm_start: study {name!r} optimised {show}, this one {mine}; "
            "warm-start from a study of the same objective"
        )


def seed_study(study: optuna.Study, prepared: Prepared, source: WarmSource | None, driver: str) -> None:
    """Copy the warm-start history, then enqueue the points, each once (under the study lock)."""
    points = _enqueue_points(prepared.config)
    if source is None and not points:
        return
    lock = StudyLock(prepared.storage_url, prepared.config.name, driver)
    try:
        with lock.hold() as stale:
            if stale:
                ox.refresh(study)
            if source is not None:
                _copy_history(study, prepared, source)
            _enqueue(study, points)
    finally:
        lock.close()


def _copy_history(study: optuna.Study, prepared: Prepared, source: WarmSource) -> None:
    """Add the source trials this study lacks as COMPLETE trials marked ``warm_start_from``; record it."""
    have = {t.user_attrs.get(WARM_START_ATTR) for t in study.get_trials(deepcopy=False)}
    new, skipped = _copies(prepared, source, have)
    study.add_trials(new)
    copied = len(source.trials) - skipped
    top = prepared.config.warm_start.top if prepared.config.warm_start else None
    logger.log(
        logging.WARNING if skipped else logging.INFO,
        "%s: warm_start: copied %d trial(s) of study %r; skipped %d whose params fall outside this search_space",
        prepared.file,
        copied,
        source.name,
        skipped,
    )
    study.set_user_attr(WARM_START_STUDY_ATTR, source.record(top, copied, skipped))


def _copies(prepared: Prepared, source: WarmSource, have: set[Any]) -> tuple[list[FrozenTrial], int]:
    """(the source trials to add, not yet in ``have``, as this study's trials; how many do not fit the space).

    A param of the source that this space lacks is dropped; one this space has and the trial lacks,
    or a value outside this space, skips the trial.
    """
    import optuna

    space, dists = prepared.config.search_space, prepared.distributions
    conditions = Conditions.of(prepared.config)
    objectives = Objectives.of(prepared.config)
    new, skipped = [], 0
    for t in source.trials:
        tag = f"{source.name}#{t.number}"
        try:
            params = fit_point(t.params, space, conditions)
        except (KeyError, ValueError):
            skipped += 1
            continue
        if tag in have:
            continue
        attrs: dict[str, Any] = {WARM_START_ATTR: tag}
        if "metrics" in t.user_attrs:
            attrs["metrics"] = t.user_attrs["metrics"]
        new.append(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE,
                values=t.values,
                params=params,
                distributions={k: dists[k] for k in params},
                user_attrs=attrs,
                system_attrs=_constraints(objectives, attrs.get("metrics") or {}),
            )
        )
    return new, skipped


def _enqueue(study: optuna.Study, points: list[dict[str, Any]]) -> None:
    """Enqueue each point not yet enqueued (a point listed twice runs twice)."""
    have = Counter(t.user_attrs.get(ENQUEUED_ATTR) for t in study.get_trials(deepcopy=False))
    for point in points:
        key = json.dumps(point, sort_keys=True)
        if have[key] > 0:
            have[key] -= 1
            continue
        study.enqueue_trial(point, user_attrs={ENQUEUED_ATTR: key})


def _constraints(objectives: Objectives, metrics: dict[str, float]) -> dict[str, float]:
    """This study's constraints on a copied trial, from its stored metrics (a metric it lacks: not judged)."""
    if not objectives.constraints or any(
        not isinstance(metrics.get(c.metric), (int, float)) for c in objectives.constraints
    ):
        return {}
    return {f"constraints:{k}": v for k, v in objectives.violations(metrics).items()}
