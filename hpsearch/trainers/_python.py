"""Trainer ``python``: any function ``f(params)`` or ``f(params, ctx)``."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import Field

from hpsearch.errors import ConfigError, one_line
from hpsearch.trainers._base import BaseTrainer, TrainerSettings, TrialContext

__all__ = ["PythonTrainer", "load_function"]

_CACHE: dict[tuple[str, str], Callable[..., Any]] = {}


def _parse_spec(spec: str, field: str) -> tuple[str, str]:
    """``(module or file, attribute)`` of ``module:function`` / ``file.py:function``."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise ConfigError(f"{field}: expected 'module:function' or 'file.py:function', got {spec!r}")
    return target, attr


def _import_file(target: str, base_dir: Path, *, field: str, spec: str) -> ModuleType:
    """The module of a ``.py`` file (relative paths from ``base_dir``); ``sys.path`` is not touched."""
    path = Path(target)
    if not path.is_absolute():
        path = (base_dir / path).resolve()
    if not path.is_file():
        raise ConfigError(f"{field}: file {path} does not exist; fix the path in {spec!r}")
    name = f"hpsearch_user_{abs(hash(str(path)))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:  # pragma: no cover - a .py file always has one
        raise ConfigError(f"{field}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    # Registered so that pickling, dataclasses and typing can find the module by name.
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def _import_module(target: str, base_dir: Path) -> ModuleType:
    """Import ``target`` with the study folder first on ``sys.path`` only while it imports.

    The named module and its siblings resolve from the study folder; afterwards
    ``sys.path`` is as it was, so a study folder holding ray.py, datasets.py or
    plotly.py never shadows the packages imported later.
    """
    base = str(base_dir)
    sys.path.insert(0, base)
    try:
        return importlib.import_module(target)
    finally:
        with contextlib.suppress(ValueError):  # the user's module removed it itself
            sys.path.remove(base)


def load_function(spec: str, base_dir: Path, *, field: str = "trainer.function") -> Callable[..., Any]:
    """Import ``module:function`` or ``path/to/file.py:function``; leaves ``sys.path`` unchanged.

    Only the module or file the user named is imported; a relative file path
    resolves from ``base_dir`` (the study file's folder).

    Raises:
        ConfigError: naming ``field``, when the spec is malformed, the module
            cannot be imported or raised while importing, or has no such function.
    """
    key = (spec, str(base_dir))
    if key in _CACHE:
        return _CACHE[key]
    target, attr = _parse_spec(spec, field)
    try:
        if target.endswith(".py"):
            module = _import_file(target, base_dir, field=field, spec=spec)
        else:
            module = _import_module(target, base_dir)
    except ConfigError:
        raise
    except ModuleNotFoundError as e:
        raise ConfigError(
            f"{field}: cannot import module {target!r} ({e}); install it, or name a file as 'file.py:{attr}'"
        ) from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing
        raise ConfigError(one_line(f"{field}: importing {target!r} raised {type(e).__name__}: {e}")) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{field}: {target!r} has no function {attr!r}; check the name")
    _CACHE[key] = fn
    return fn


class PythonSettings(TrainerSettings):
    function: str
    #: Fixed values passed with every trial's params (params win on a clash).
    defaults: dict[str, Any] = Field(default_factory=dict)


class PythonTrainer(BaseTrainer):
    """Calls a user function with the trial's params (and the context, if it takes two)."""

    kind = "python"
    Settings = PythonSettings
    can_checkpoint = True  # through ctx.save_checkpoint / ctx.load_checkpoint, in the user's function
    #: With ``resources.workers > 1`` the function runs on every rank, with
    #: torch.distributed initialised by Ray Train; rank 0's ctx reports.
    supports_workers = True
    settings: PythonSettings

    def validate(self, param_names: set[str]) -> None:
        fn = load_function(self.settings.function, self.study_dir)
        try:
            n = len(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            n = 1
        if n not in (1, 2):
            raise ConfigError(
                f"trainer.function: {self.settings.function} takes {n} arguments; write f(params) or f(params, ctx)"
            )

    def run(self, params: dict[str, Any], ctx: TrialContext) -> dict[str, float] | float:
        fn = load_function(self.settings.function, self.study_dir)
        merged = {**self.settings.defaults, **params}
        if len(inspect.signature(fn).parameters) == 2:
            return fn(merged, ctx)
        return fn(merged)
