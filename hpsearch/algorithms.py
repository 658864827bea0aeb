"""Samplers and pruners by name: dict registries over Optuna's own classes."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hpsearch.config import StudyConfig
from hpsearch.errors import ConfigError, one_line

if TYPE_CHECKING:
    import optuna

__all__ = ["SAMPLERS", "PRUNERS", "RETRY_ATTR", "make_sampler", "make_pruner"]

#: Trial system attribute: this FAIL trial's params should run again (set by the manager).
RETRY_ATTR = "hpsearch:retry"


def _grid(cfg: StudyConfig, **options: Any) -> optuna.samplers.BaseSampler:
    from hpsearch.space import grid_points

    return _grid_sampler_class()(grid_points(cfg), seed=cfg.sampler.seed, **options)


def _optuna(name: str) -> Callable[..., Any]:
    def factory(cfg: StudyConfig, **options: Any) -> Any:
        import optuna

        cls = getattr(optuna.samplers, name)
        if "seed" in inspect.signature(cls).parameters:
            options.setdefault("seed", cfg.sampler.seed)
        with warnings.catch_warnings():
            # "QMCSampler is experimental": noise for a CLI that promises one line on bad input.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(**options)

    factory.__name__ = name
    return factory


#: sampler name -> factory(config, **options)
SAMPLERS: dict[str, Callable[..., Any]] = {
    "grid": _grid,
    "random": _optuna("RandomSampler"),
    "tpe": _optuna("TPESampler"),
    "qmc": _optuna("QMCSampler"),
    "cmaes": _optuna("CmaEsSampler"),
    "gp": _optuna("GPSampler"),
    "nsga2": _optuna("NSGAIISampler"),
}

#: pruner name -> Optuna class name in optuna.pruners
PRUNERS: dict[str, str] = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "asha": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
}


def _target(name: str, kind: str, registry: dict[str, Any], file: str) -> Any:
    if name not in registry:
        raise ConfigError(
            f"{file}: {kind}.name: unknown {kind} {name!r}; choose one of: {', '.join(registry)}"
        )
    return registry[name]


def _call(factory: Callable[..., Any], kind: str, options: dict[str, Any], file: str, *args: Any) -> Any:
    target = factory
    try:
        return factory(*args, **options)
    except TypeError as e:
        params = inspect.signature(getattr(target, "__wrapped__", target)).parameters
        bad = next((k for k in options if k not in params), None)
        where = f"{kind}.options.{bad}" if bad else f"{kind}.options"
        raise ConfigError(one_line(f"{file}: {where}: {e}; check the option names")) from None
    except (ValueError, ImportError, ModuleNotFoundError) as e:
        raise ConfigError(one_line(f"{file}: {kind}.options: {e}")) from None


def make_sampler(cfg: StudyConfig) -> optuna.samplers.BaseSampler:
    """The study's sampler, built from ``sampler.name`` and ``sampler.options``."""
    file = cfg.file
    factory = _target(cfg.sampler.name, "sampler", SAMPLERS, file)
    return _call(factory, "sampler", dict(cfg.sampler.options), file, cfg)


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    """The study's pruner, built from ``pruner.name`` and ``pruner.options``."""
    import optuna

    file = cfg.file
    cls = getattr(optuna.pruners, _target(cfg.pruner.name, "pruner", PRUNERS, file))
    options = dict(cfg.pruner.options)
    bad = next((k for k in options if k not in inspect.signature(cls).parameters), None)
    if bad:
        raise ConfigError(
            f"{file}: pruner.options.{bad}: {cls.__name__} has no option {bad!r}; "
            f"valid: {', '.join(p for p in inspect.signature(cls).parameters)}"
        )
    return _call(cls, "pruner", options, file)


_GRID_CLASS: type | None = None


def _grid_sampler_class() -> type:
    """Optuna's GridSampler, made safe for ask/tell, retries and resume.

    Optuna's version counts FAIL trials as visited (so a failed point is never
    retried), assigns ``grid_id = trial.number`` for the first trials (wrong
    after a resume with failures) and calls ``study.stop()`` in ``after_trial``
    (which raises outside ``optimize``). Here a point is done when a trial of
    it is COMPLETE, PRUNED, or FAIL without the manager's retry mark; points
    of FAIL trials marked for retry (orphaned, worker died) run first; and
    exhaustion is checked by the manager through :meth:`is_exhausted`.
    """
    global _GRID_CLASS
    if _GRID_CLASS is not None:
        return _GRID_CLASS
    import optuna
    from optuna.trial import TrialState

    class HpsearchGridSampler(optuna.samplers.GridSampler):
        def _ids_by_state(self, study: optuna.Study) -> tuple[set[int], set[int], list[int]]:
            done: set[int] = set()
            running: set[int] = set()
            failed: list[int] = []
            for t in study._storage.get_all_trials(study._study_id, deepcopy=False):
                gid = t.system_attrs.get("grid_id")
                if gid is None or not self._same_search_space(t.system_attrs["search_space"]):
                    continue
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                    done.add(gid)
                elif t.state in (TrialState.RUNNING, TrialState.WAITING):
                    running.add(gid)
                elif t.state == TrialState.FAIL:
                    if t.system_attrs.get(RETRY_ATTR):
                        failed.append(gid)
                    else:
                        done.add(gid)  # failed for a reason a re-run would repeat
            return done, running, failed

        def remaining(self, study: optuna.Study) -> int:
            """Grid points not yet COMPLETE or PRUNED (running ones included)."""
            done, _, _ = self._ids_by_state(study)
            return len(self._all_grids) - len(done)

        def is_exhausted(self, study: optuna.Study) -> bool:  # noqa: D102
            done, running, _ = self._ids_by_state(study)
            return len(done | running) >= len(self._all_grids)

        def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if "grid_id" in trial.system_attrs or "fixed_params" in trial.system_attrs:
                return
            done, running, failed = self._ids_by_state(study)
            busy = done | running
            retry = [g for g in failed if g not in busy]
            if retry:
                grid_id = retry[0]
            else:
                free = [g for g in range(len(self._all_grids)) if g not in busy]
                if not free:
                    raise RuntimeError("grid exhausted: ask() called after is_exhausted()")
                grid_id = int(self._rng.rng.choice(free))
            study._storage.set_trial_system_attr(trial._trial_id, "search_space", self._search_space)
            study._storage.set_trial_system_attr(trial._trial_id, "grid_id", grid_id)

        def after_trial(self, *args: Any, **kwargs: Any) -> None:
            # No study.stop(): the manager checks is_exhausted() before each ask.
            return None

    _GRID_CLASS = HpsearchGridSampler
    return HpsearchGridSampler
