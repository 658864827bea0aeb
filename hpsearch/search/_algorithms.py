"""Samplers and pruners by name: dict registries over Optuna's own classes."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpsearch.config import StudyConfig
from hpsearch.errors import ConfigError, one_line

if TYPE_CHECKING:
    import optuna

__all__ = ["SAMPLERS", "PRUNERS", "SamplerFactory", "RETRY_ATTR", "make_sampler", "make_pruner"]

#: Trial system attribute: this FAIL trial's params should run again (set by the manager).
RETRY_ATTR = "hpsearch:retry"


@dataclass(frozen=True)
class SamplerFactory:
    """Builds one sampler kind from the study: ``factory(cfg, **options)``.

    ``target()`` is the class the options go to (they are checked against its
    signature, not this wrapper's), and ``own`` maps the arguments the factory
    sets itself to the study field that sets them.
    """

    build: Callable[..., Any]
    target: Callable[[], type]
    own: Mapping[str, str] = field(default_factory=dict)

    def __call__(self, cfg: StudyConfig, **options: Any) -> Any:
        return self.build(cfg, **options)


def _grid(cfg: StudyConfig, **options: Any) -> optuna.samplers.BaseSampler:
    from hpsearch.search._space import grid_points

    return _grid_sampler_class()(grid_points(cfg), seed=cfg.sampler.seed, **options)


def _optuna(name: str) -> SamplerFactory:
    def target() -> type:
        import optuna

        return getattr(optuna.samplers, name)  # type: ignore[no-any-return]

    def build(cfg: StudyConfig, **options: Any) -> Any:
        import optuna

        cls = target()
        if "seed" in inspect.signature(cls).parameters:
            options.setdefault("seed", cfg.sampler.seed)
        with warnings.catch_warnings():
            # "QMCSampler is experimental": noise for a CLI that promises one line on bad input.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(**options)

    return SamplerFactory(build, target)


#: sampler name -> factory(config, **options)
SAMPLERS: dict[str, SamplerFactory] = {
    "grid": SamplerFactory(_grid, lambda: _grid_sampler_class(), {"search_space": "search_space", "seed": "sampler.seed"}),
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


def _check_names(cls: type, kind: str, options: dict[str, Any], file: str, own: Mapping[str, str]) -> None:
    """Refuse the first option ``cls`` does not take (or that hpsearch sets itself), by name."""
    params = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    for key in options:
        if key in own:
            raise ConfigError(
                f"{file}: {kind}.options.{key}: set by {own[key]}; remove it from {kind}.options"
            )
        if key not in params:
            valid = [p for p in params if p not in own]
            raise ConfigError(
                f"{file}: {kind}.options.{key}: {cls.__name__.removeprefix('Hpsearch')} has no option "
                f"{key!r}; " + (f"valid: {', '.join(valid)}" if valid else f"it takes no {kind}.options")
            )


def _culprit(build: Callable[..., Any], options: dict[str, Any]) -> str | None:
    """The option that fails on its own (the others left at their defaults), if exactly one does.

    A TypeError from a bad value (``'<' not supported between 'str' and 'int'``)
    does not say which option it came from; building with each option alone does.
    """
    failing = []
    for key, value in options.items():
        try:
            build(**{key: value})
        except Exception:  # noqa: BLE001 - any failure points at this option
            failing.append(key)
    return failing[0] if len(failing) == 1 else None


def _call(build: Callable[..., Any], kind: str, options: dict[str, Any], file: str) -> Any:
    """``build(**options)``, its errors turned into one line naming the option when it can."""
    try:
        return build(**options)
    except TypeError as e:
        bad = _culprit(build, options) if len(options) > 1 else next(iter(options), None)
        where = f"{kind}.options.{bad}" if bad else f"{kind}.options"
        raise ConfigError(one_line(f"{file}: {where}: {e}; check the option values")) from None
    except (ValueError, ImportError, ModuleNotFoundError) as e:
        raise ConfigError(one_line(f"{file}: {kind}.options: {e}")) from None


def make_sampler(cfg: StudyConfig) -> optuna.samplers.BaseSampler:
    """The study's sampler, built from ``sampler.name`` and ``sampler.options``."""
    file = cfg.file
    factory = _target(cfg.sampler.name, "sampler", SAMPLERS, file)
    options = dict(cfg.sampler.options)
    _check_names(factory.target(), "sampler", options, file, factory.own)
    return _call(lambda **o: factory(cfg, **o), "sampler", options, file)


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    """The study's pruner, built from ``pruner.name`` and ``pruner.options``."""
    import optuna

    file = cfg.file
    cls = getattr(optuna.pruners, _target(cfg.pruner.name, "pruner", PRUNERS, file))
    options = dict(cfg.pruner.options)
    _check_names(cls, "pruner", options, file, {})
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
