"""The study file: a pydantic schema loaded from YAML.

``load_config(path)`` is the one validation point. Every problem becomes a
:class:`~hpsearch.errors.ConfigError` whose message is one line of the form
``<file>: <field.path>: <what was expected, what was got, how to fix it>``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hpsearch.errors import ConfigError, one_line

__all__ = [
    "StudyConfig",
    "ObjectiveConfig",
    "SamplerConfig",
    "PrunerConfig",
    "ResourcesConfig",
    "RayConfig",
    "FloatParam",
    "IntParam",
    "CategoricalParam",
    "load_config",
    "MAX_STUDY_FILE_BYTES",
]

#: Study files larger than this are refused before parsing.
MAX_STUDY_FILE_BYTES = 1_000_000

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
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


class SamplerConfig(_Model):
    """An Optuna sampler by name (see ``hpsearch.search._algorithms.SAMPLERS``)."""

    name: str = "tpe"
    seed: Int | None = 0
    options: dict[str, Any] = Field(default_factory=dict)


class PrunerConfig(_Model):
    """An Optuna pruner by name (see ``hpsearch.search._algorithms.PRUNERS``)."""

    name: str = "none"
    options: dict[str, Any] = Field(default_factory=dict)


class ResourcesConfig(_Model):
    """What one trial needs. With ``workers > 1`` cpus and gpus are per worker."""

    cpus: Num = Field(1.0, gt=0)
    gpus: Num = Field(0.0, ge=0)
    workers: Int = Field(1, ge=1)
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


class FloatParam(_Model):
    type: Literal["float"]
    low: Num
    high: Num
    log: bool = False
    step: Num | None = None

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


class StudyConfig(_Model):
    """A whole study file."""

    name: str = Field(pattern=_NAME_RE)
    description: str = ""
    storage: str | None = None
    artifacts: str | None = None
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
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
    #: Study files of baselines this study is compared with (relative to this file).
    compare_with: list[str] = Field(default_factory=list)

    #: Where the study file lives; relative paths in it resolve from here.
    source: Path | None = Field(default=None, exclude=True)
    #: The study file as the user named it, for messages.
    display_path: str | None = Field(default=None, exclude=True)

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

    def resolved_artifacts(self) -> Path:
        """Artifact folder: ``artifacts`` or ``hpsearch-artifacts`` beside a SQLite file."""
        if self.artifacts:
            p = Path(self.artifacts)
            return p if p.is_absolute() else (self.study_dir / p).resolve()
        url = self.resolved_storage()
        if url.startswith("sqlite:///"):
            return Path(url[len("sqlite:///") :]).resolve().parent / "hpsearch-artifacts"
        return (self.study_dir / "hpsearch-artifacts").resolve()


# ---------------------------------------------------------------- loading


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a silent override is a bug)."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_mapping(loader: _SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # ``<<: *base`` merges; its keys may be overridden, that is no duplicate
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain name, not a list or mapping", key_node.start_mark
            )
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_SafeLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping  # type: ignore[arg-type]
)


#: Deepest nesting accepted in a study file (a real study nests about 4 deep).
MAX_DEPTH = 50


class _Budget:
    """Counts values visited: YAML aliases can make a small file expand to billions."""

    def __init__(self, file: str) -> None:
        self.left = MAX_STUDY_FILE_BYTES  # a file without aliases holds fewer values than bytes
        self.file = file
        self.stack: list[int] = []

    def enter(self, value: Any, path: str) -> None:
        where = path or "(top level)"
        if id(value) in self.stack:
            raise ConfigError(f"{self.file}: {where}: a YAML alias refers to itself; remove the loop")
        if len(self.stack) >= MAX_DEPTH:
            raise ConfigError(f"{self.file}: {where}: nested over {MAX_DEPTH} levels deep; flatten it")
        self.left -= len(value)
        if self.left < 0:
            raise ConfigError(
                f"{self.file}: {where}: YAML aliases expand to over {MAX_STUDY_FILE_BYTES:,} "
                "values; write the values out or use fewer aliases"
            )
        self.stack.append(id(value))


def _interpolate(value: Any, path: str, file: str, budget: _Budget | None = None) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in strings from the environment.

    Also the one walk over the whole file: refuses alias loops and alias bombs.
    """
    if isinstance(value, (dict, list)):
        budget = budget or _Budget(file)
        budget.enter(value, path)
        try:
            if isinstance(value, dict):
                return {
                    k: _interpolate(v, f"{path}.{k}" if path else str(k), file, budget)
                    for k, v in value.items()
                }
            return [_interpolate(v, f"{path}[{i}]", file, budget) for i, v in enumerate(value)]
        finally:
            budget.stack.pop()
    if not isinstance(value, str) or "${" not in value:
        return value

    def sub(m: re.Match[str]) -> str:
        var, default = m.group(1), m.group(2)
        if var in os.environ:
            return os.environ[var]
        if default is not None:
            return default
        raise ConfigError(
            f"{file}: {path}: environment variable {var} is not set; export it "
            f"or write ${{{var}:-default}}"
        )

    return _ENV_RE.sub(sub, value)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("float", "int", "categorical", "function-after[_check()]"):
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


def _format_validation(err: ValidationError, file: str) -> str:
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


def _read_yaml(path: Path) -> dict[str, Any]:
    file = str(path)
    if not path.exists():
        raise ConfigError(f"{file}: no such file; check the path")
    if path.is_dir():
        raise ConfigError(f"{file}: is a directory; pass a study .yaml file")
    if not path.is_file():
        # A pipe would block the read forever; /dev/zero would never end.
        raise ConfigError(f"{file}: not a regular file (a pipe or device); pass a study .yaml file")
    try:
        size = path.stat().st_size
        if size > MAX_STUDY_FILE_BYTES:
            raise ConfigError(
                f"{file}: is {size:,} bytes; a study file must be under "
                f"{MAX_STUDY_FILE_BYTES:,} bytes (put data in a separate file)"
            )
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{file}: cannot read ({e.strerror}); check permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text; a study file is YAML") from None
    if "\x00" in text:
        raise ConfigError(f"{file}: holds binary data; a study file is YAML text")
    try:
        data = yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        if "could not determine a constructor" in str(e):
            problem = "YAML tags that construct Python objects are refused; use plain values"
        elif "'\\t'" in problem:
            problem = "a tab character; YAML indents with spaces, replace the tabs"
        raise ConfigError(one_line(f"{file}: {where}invalid YAML: {problem}")) from None
    if data is None:
        raise ConfigError(f"{file}: is empty; a study needs at least name and trainer")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{file}: (top level): expected a mapping of keys (name, trainer, ...), "
            f"got {type(data).__name__}"
        )
    return data


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read, interpolate and validate a study file.

    Args:
        path: The study YAML file.
        overrides: Dotted keys to set after loading (``{"sampler.seed": 3}``),
            as the CLI flags do. ``None`` values are ignored.

    Raises:
        ConfigError: On any problem, with file and field in the message.
    """
    p = Path(path)
    file = str(path)
    data = _interpolate(_read_yaml(p), "", file)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{file}: {key}: cannot override inside a non-mapping")
        node[parts[-1]] = value
    try:
        cfg = StudyConfig.model_validate({**data, "source": p.resolve(), "display_path": file})
    except ValidationError as e:
        raise ConfigError(_format_validation(e, file)) from None
    for i, other in enumerate(cfg.compare_with_paths()):
        if not other.is_file():
            raise ConfigError(
                f"{file}: compare_with[{i}]: no study file {cfg.compare_with[i]!r} "
                f"(looked for {other}); paths are relative to this file"
            )
    return cfg
