"""The study file's schema: pydantic models with ``extra="forbid"``.

Models only check values; reading the file and turning a pydantic error into
one line live in :mod:`hpsearch.config._loading` and :mod:`hpsearch.config._errors`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from hpsearch.config._tracking import TrackingConfig

__all__ = [
    "CategoricalParam",
    "ConstraintConfig",
    "FloatParam",
    "IntParam",
    "ObjectiveConfig",
    "ParamSpec",
    "PrunerConfig",
    "RayConfig",
    "ResourcesConfig",
    "SamplerConfig",
    "StudyConfig",
    "TrainerConfig",
    "WarmStartConfig",
]

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"


def _no_bool(v: Any) -> Any:
    # YAML 1.1 reads yes/no/on/off as booleans, and pydantic would take True as 1.
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {str(v).lower()} (a YAML boolean)")
    return v


#: Numbers that refuse booleans (``max_failures: yes`` is a typo, not 1).
Int = Annotated[int, BeforeValidator(_no_bool)]
Num = Annotated[float, BeforeValidator(_no_bool)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ObjectiveConfig(_Model):
    """Which metric the study optimises, and in which direction."""

    metric: str = "value"
    direction: Literal["minimize", "maximize"] = "maximize"


class ConstraintConfig(_Model):
    """A bound on a metric the trainer returns: a trial outside it is infeasible (never the best)."""

    metric: str
    max: Num | None = None
    min: Num | None = None

    @model_validator(mode="after")
    def _bounded(self) -> ConstraintConfig:
        if self.max is None and self.min is None:
            raise ValueError(
                f"give `max` or `min` (or both) for {self.metric!r}, e.g. {{metric: {self.metric}, max: 5.0}}"
            )
        for name in ("max", "min"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v}")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self

    def violation(self, value: float) -> float:
        """How far ``value`` is outside the bound (<= 0: inside), as Optuna's constraints read it."""
        over = value - self.max if self.max is not None else -math.inf
        under = self.min - value if self.min is not None else -math.inf
        return float(max(over, under))


class SamplerConfig(_Model):
    """An Optuna sampler by name (see ``hpsearch.search._algorithms.SAMPLERS``)."""

    name: str = "tpe"
    seed: Int | None = 0
    options: dict[str, Any] = Field(default_factory=dict)
    #: On a finite space, never run a point twice: a point already finished (or running)
    #: is drawn again, and the study ends once every point has run. Default: on for
    #: ``random`` and ``tpe``, off for the others (``grid`` never repeats a point).
    dedupe: bool | None = None

    @field_validator("dedupe")
    @classmethod
    def _dedupe_default(cls, v: bool | None, info: Any) -> bool:
        return info.data.get("name") in ("random", "tpe") if v is None else v


class PrunerConfig(_Model):
    """An Optuna pruner by name (see ``hpsearch.search._algorithms.PRUNERS``)."""

    name: str = "none"
    options: dict[str, Any] = Field(default_factory=dict)


class SchedulerConfig(_Model):
    """What runs next: ``sampler`` (each trial sampled, the default) or ``pbt`` (population-based training).

    PBT (Jaderberg et al. 2017; the defaults follow Ray Tune's PopulationBasedTraining):
    ``population`` members start from the sampler's params; each trains ``interval``
    steps (epochs, or reports) per generation; then the bottom ``quantile`` copies the
    checkpoint of a member of the top ``quantile`` (exploit) and changes its ``mutate``
    params (explore): resampled with ``resample_probability``, else multiplied by one of
    ``perturb`` (a categorical moves to a neighbouring choice).
    """

    name: Literal["sampler", "pbt"] = "sampler"
    population: Int = Field(default=8, ge=2)
    interval: Int = Field(default=1, ge=1)
    #: Generations (segments per member); default: the trainer's ``epochs`` / ``interval``.
    generations: Int | None = Field(default=None, ge=1)
    quantile: Num = Field(default=0.25, gt=0, le=0.5)
    resample_probability: Num = Field(default=0.25, ge=0, le=1)
    perturb: list[Num] = Field(default_factory=lambda: [0.8, 1.2], min_length=1)
    #: Params explore may change (default: every param of the search space).
    mutate: list[str] | None = None


class ResourcesConfig(_Model):
    """What one trial needs. With ``workers > 1`` cpus and gpus are per worker."""

    cpus: Num = Field(default=1.0, gt=0)
    gpus: Num = Field(default=0.0, ge=0)
    workers: Int = Field(default=1, ge=1)
    custom: dict[str, Num] = Field(default_factory=dict)

    @field_validator("gpus")
    @classmethod
    def _gpu_fraction(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError(f"a fraction of a GPU must be below 1, or whole GPUs; got {v}")
        return v


class RayConfig(_Model):
    """Where trials run when the executor is ``ray``."""

    address: str | None = None
    namespace: str | None = None
    #: A private Ray (no ``address``) and a light trainer (``sklearn_cv``): trials run on
    #: the driver's threads for this many seconds before Ray starts, so a study that is
    #: done by then never pays Ray's start-up. 0 starts Ray at once.
    driver_first_s: Num = Field(default=5.0, ge=0)


class CheckpointsConfig(_Model):
    """Where trials' checkpoints live and how many each trial keeps."""

    #: A folder (relative to the study file) or a URI pyarrow opens (``s3://``, ``gs://``, a
    #: shared mount). Default: ``hpsearch-checkpoints/`` beside a SQLite file (else the study file).
    path: str | None = None
    #: Checkpoints kept per trial (the newest ones).
    keep: Int = Field(default=1, ge=1)
    #: ``false``: no checkpoints; interrupted trials start again from step 0.
    enabled: bool = True


#: A condition: parameter -> the values under which the conditioned parameter is sampled.
When = dict[str, list[bool | int | float | str | None]] | None


@dataclass
class _WhenInput:
    """A raw ``when:`` with its parameter's name and the raw search space (see ``StudyConfig._link_when``)."""

    name: str
    when: Any
    space: dict[str, Any]

    def __repr__(self) -> str:  # what an error message shows as "got"
        return repr(self.when)


def _raw_choices(spec: Any) -> list[Any] | None:
    """The choices of a raw (unvalidated) param spec; None when it is not categorical."""
    if isinstance(spec, list):
        return spec
    if isinstance(spec, dict) and spec.get("type", "categorical") == "categorical":
        choices = spec.get("choices")
        return choices if isinstance(choices, list) else None
    return None


def _raw_deps(spec: Any) -> list[str]:
    when = spec.get("when") if isinstance(spec, dict) else None
    if isinstance(when, _WhenInput):
        when = when.when
    return [str(k) for k in when] if isinstance(when, dict) else []


def _cycle(name: str, space: dict[str, Any]) -> list[str] | None:
    """A dependency path from ``name`` back to itself, if the conditions loop."""
    stack: list[tuple[str, list[str]]] = [(name, [name])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for dep in _raw_deps(space.get(node)):
            if dep == name:
                return [*path, dep]
            if dep not in seen:
                seen.add(dep)
                stack.append((dep, [*path, dep]))
    return None


def _same(a: Any, b: Any) -> bool:
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def _check_when(v: Any) -> Any:
    """``when:`` normalised to ``{param: [values]}``, checked against its siblings when it knows them."""
    if isinstance(v, _WhenInput):
        _check_siblings(v)
        v = v.when
    if isinstance(v, dict):
        return {k: list(x) if isinstance(x, list) else [x] for k, x in v.items()}
    return v


def _check_siblings(w: _WhenInput) -> None:
    if not isinstance(w.when, dict):
        return
    if not w.when:
        raise ValueError("is empty; name a categorical parameter and its values, e.g. `when: {optimizer: sgd}`")
    for key, values in w.when.items():
        if key not in w.space:
            known = ", ".join(n for n in w.space if n != w.name) or "none"
            raise ValueError(f"unknown parameter {key!r}; condition on one of: {known}")
        choices = _raw_choices(w.space[key])
        if choices is None:
            raise ValueError(f"{key!r} is not categorical; conditions are on categorical parameters (choices: [...])")
        for value in values if isinstance(values, list) else [values]:
            if not any(_same(value, c) for c in choices):
                raise ValueError(f"{value!r} is not one of {key}'s choices {choices}; use one of them")
    loop = _cycle(w.name, w.space)
    if loop:
        raise ValueError(f"conditions form a cycle ({' -> '.join(loop)}); remove one of these `when:` keys")


class FloatParam(_Model):
    type: Literal["float"]
    low: Num
    high: Num
    log: bool = False
    step: Num | None = None
    #: Sampled only when every listed parameter takes one of its listed values.
    when: Annotated[When, BeforeValidator(_check_when)] = None

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        for name in ("low", "high"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"low must be > 0 when log: true, got {self.low}")
        if self.step is not None:
            if self.step <= 0:
                raise ValueError(f"step must be > 0, got {self.step}")
            if self.log:
                raise ValueError("step and log: true cannot be combined; drop one of them")
        return self


class IntParam(_Model):
    type: Literal["int"]
    low: Int
    high: Int
    log: bool = False
    step: Int = 1
    when: Annotated[When, BeforeValidator(_check_when)] = None

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"low must be >= 1 when log: true, got {self.low}")
        if self.step <= 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        if self.log and self.step != 1:
            raise ValueError("step and log: true cannot be combined; drop one of them")
        return self


Scalar = bool | int | float | str | None


class CategoricalParam(_Model):
    type: Literal["categorical"] = "categorical"
    choices: list[Scalar] = Field(min_length=1)
    when: Annotated[When, BeforeValidator(_check_when)] = None

    @field_validator("choices")
    @classmethod
    def _unique(cls, v: list[Scalar]) -> list[Scalar]:
        seen: list[Scalar] = []
        for c in v:
            if any(c == s and type(c) is type(s) for s in seen):
                raise ValueError(f"choice {c!r} is listed twice")
            seen.append(c)
        return v


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class TrainerConfig(BaseModel):
    """``kind`` plus that kind's settings (validated by the trainer's own model)."""

    model_config = ConfigDict(extra="allow")

    kind: str


class WarmStartConfig(_Model):
    """An earlier study whose COMPLETE trials are copied into this one as history (``warm_start:``).

    ``from``: its study file (relative to this file); or ``study`` (a name) with ``storage``
    (default: this study's storage). ``top``: copy only its N best trials (default: all).
    """

    model_config = ConfigDict(extra="forbid", validate_default=True, serialize_by_alias=True)

    from_: str | None = Field(default=None, alias="from")
    storage: str | None = None
    study: str | None = Field(default=None, pattern=_NAME_RE)
    top: Int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> WarmStartConfig:
        if self.from_ is not None and (self.study is not None or self.storage is not None):
            raise ValueError("give `from` (a study file) or `study` (with `storage`), not both")
        if self.from_ is None and self.study is None:
            raise ValueError("name the earlier study: `from: other_study.yaml`, or `study: NAME` (and `storage: URL`)")
        return self


class StudyConfig(_Model):
    """A whole study file."""

    name: str = Field(pattern=_NAME_RE)
    description: str = ""
    storage: str | None = None
    artifacts: str | None = None
    #: One objective, or a list of them (a multi-objective study: its result is a Pareto front).
    objective: Annotated[
        Annotated[ObjectiveConfig, Tag("one")] | Annotated[list[ObjectiveConfig], Tag("several")],
        Discriminator(lambda v: "several" if isinstance(v, list) else "one"),
    ] = Field(default_factory=ObjectiveConfig)
    #: Bounds on metrics: trials that break one are infeasible (Optuna's trial constraints).
    constraints: list[ConstraintConfig] = Field(default_factory=list)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    n_trials: Int | None = Field(20, ge=1)
    timeout: Num | None = Field(None, gt=0)
    max_concurrent_trials: Int | None = Field(None, ge=1)
    max_failures: Int = Field(5, ge=1)
    max_retries: Int = Field(1, ge=0)
    #: A trial whose loss turns NaN/inf: FAIL (counts toward max_failures) or PRUNED.
    on_nonfinite_loss: Literal["fail", "prune"] = "fail"
    search_space: dict[str, ParamSpec] = Field(default_factory=dict)
    trainer: TrainerConfig
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    executor: Literal["ray", "local"] = "ray"
    ray: RayConfig = Field(default_factory=RayConfig)
    checkpoints: CheckpointsConfig = Field(default_factory=CheckpointsConfig)
    #: Study files of baselines this study is compared with (relative to this file).
    compare_with: list[str] = Field(default_factory=list)
    #: Points (one value per search_space param) run first, in order; enqueued once per study.
    enqueue: list[dict[str, Any]] = Field(default_factory=list)
    #: Copy an earlier study's finished trials in as history before the first trial.
    warm_start: WarmStartConfig | None = None
    #: Experiment trackers (MLflow, TensorBoard) the manager writes every trial to.
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    #: Where the study file lives; relative paths in it resolve from here.
    source: Path | None = Field(default=None, exclude=True)
    #: The study file as the user named it, for messages.
    display_path: str | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _link_when(cls, data: Any) -> Any:
        # Each ``when:`` is checked by its param's validator (so errors name search_space.NAME.when),
        # which needs the param's name and its siblings: hand them over with the raw value.
        space = data.get("search_space") if isinstance(data, dict) else None
        if not isinstance(space, dict) or not any(isinstance(s, dict) and "when" in s for s in space.values()):
            return data
        linked = {
            n: {**s, "when": _WhenInput(str(n), s["when"], space)} if isinstance(s, dict) and "when" in s else s
            for n, s in space.items()
        }
        return {**data, "search_space": linked}

    @field_validator("objective")
    @classmethod
    def _one_or_several(cls, v: ObjectiveConfig | list[ObjectiveConfig]) -> ObjectiveConfig | list[ObjectiveConfig]:
        if not isinstance(v, list):
            return v
        if not v:
            raise ValueError("is an empty list; give one objective or several, e.g. [{metric: accuracy}]")
        metrics = [o.metric for o in v]
        twice = next((m for m in metrics if metrics.count(m) > 1), None)
        if twice is not None:
            raise ValueError(f"metric {twice!r} is listed twice; each objective needs its own metric")
        return v[0] if len(v) == 1 else v

    @field_validator("constraints")
    @classmethod
    def _one_per_metric(cls, v: list[ConstraintConfig]) -> list[ConstraintConfig]:
        metrics = [c.metric for c in v]
        twice = next((m for m in metrics if metrics.count(m) > 1), None)
        if twice is not None:
            raise ValueError(f"metric {twice!r} has two constraints; give its min and max in one entry")
        return v

    @field_validator("search_space", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        # ``lr: [0.1, 0.01]`` is shorthand for categorical choices;
        # a mapping without ``type`` but with ``choices`` is categorical too.
        if not isinstance(v, dict):
            return v
        out: dict[Any, Any] = {}
        for name, spec in v.items():
            if isinstance(spec, list):
                spec = {"type": "categorical", "choices": spec}
            elif isinstance(spec, dict) and "type" not in spec and "choices" in spec:
                spec = {"type": "categorical", **spec}
            out[name] = spec
        return out

    @field_validator("search_space")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", name):
                raise ValueError(
                    f"parameter name {name!r} must start with a letter or '_' and hold "
                    "only letters, digits, '_' and '.'"
                )
        return v

    @property
    def file(self) -> str:
        """The study file for error messages: as the user named it."""
        if self.display_path:
            return self.display_path
        return str(self.source) if self.source is not None else "<study>"

    @property
    def objectives(self) -> list[ObjectiveConfig]:
        """The objectives in order (one for a single-objective study)."""
        return list(self.objective) if isinstance(self.objective, list) else [self.objective]

    @property
    def first_objective(self) -> ObjectiveConfig:
        """The objective trainers report each epoch and single-objective rules use (the only one, or the first)."""
        return self.objectives[0]

    @property
    def multi_objective(self) -> bool:
        return isinstance(self.objective, list)

    @property
    def study_dir(self) -> Path:
        return self.source.parent if self.source is not None else Path.cwd()

    @property
    def trainer_settings(self) -> dict[str, Any]:
        return dict(self.trainer.model_extra or {})

    def resolved_storage(self) -> str:
        """The storage URL, defaulting to ``hpsearch.db`` beside the study file."""
        if self.storage:
            return self.storage
        return f"sqlite:///{(self.study_dir / 'hpsearch.db').resolve()}"

    def compare_with_paths(self) -> list[Path]:
        """The ``compare_with`` study files, resolved from this file's folder."""
        return [p if p.is_absolute() else (self.study_dir / p).resolve() for p in map(Path, self.compare_with)]

    def resolved_checkpoints(self) -> str:
        """The checkpoint root: ``checkpoints.path`` (a URI as written, a folder resolved), else the default."""
        path = self.checkpoints.path
        if path and "://" in path:
            return path
        if path:
            p = Path(path)
            return str(p if p.is_absolute() else (self.study_dir / p).resolve())
        url = self.resolved_storage()
        if url.startswith("sqlite:///"):
            return str(Path(url[len("sqlite:///") :]).resolve().parent / "hpsearch-checkpoints")
        return str((self.study_dir / "hpsearch-checkpoints").resolve())

    def resolved_artifacts(self) -> Path:
        """Artifact folder: ``artifacts`` or ``hpsearch-artifacts`` beside a SQLite file."""
        if self.artifacts:
            p = Path(self.artifacts)
            return p if p.is_absolute() else (self.study_dir / p).resolve()
        url = self.resolved_storage()
        if url.startswith("sqlite:///"):
            return Path(url[len("sqlite:///") :]).resolve().parent / "hpsearch-artifacts"
        return (self.study_dir / "hpsearch-artifacts").resolve()
