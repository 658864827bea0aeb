"""Samplers and pruners by name: dict registries over Optuna's own classes."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpsearch.config import StudyConfig
from hpsearch.errors import ConfigError, one_line
from hpsearch.search._grid import grid_sampler_class

if TYPE_CHECKING:
    import optuna

__all__ = ["PRUNERS", "SAMPLERS", "SamplerFactory", "make_pruner", "make_sampler"]


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

    return grid_sampler_class()(grid_points(cfg), seed=cfg.sampler.seed, **options)


def _optuna(name: str) -> SamplerFactory:
    def target() -> type:
        import optuna

        return getattr(optuna.samplers, name)

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
    "grid": SamplerFactory(_grid, grid_sampler_class, {"search_space": "search_space", "seed": "sampler.seed"}),
    "random": _optuna("RandomSampler"),
    "tpe": _optuna("TPESampler"),
    "qmc": _optuna("QMCSampler"),
    "cmaes": _optuna("CmaEsSampler"),
    "gp": _optuna("GPSampler"),
    "nsga2": _optuna("NSGAIISampler"),
    "nsga3": _optuna("NSGAIIISampler"),
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
        raise ConfigError(f"{file}: {kind}.name: unknown {kind} {name!r}; choose one of: {', '.join(registry)}")
    return registry[name]


def _check_names(cls: type, kind: str, options: dict[str, Any], file: str, own: Mapping[str, str]) -> None:
    """Refuse the first option ``cls`` does not take (or that hpsearch sets itself), by name."""
    params = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    for key in options:
        if key in own:
            raise ConfigError(f"{file}: {kind}.options.{key}: set by {own[key]}; remove it from {kind}.options")
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
