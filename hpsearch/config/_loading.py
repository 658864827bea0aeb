"""Reading a study file: safe YAML, ${VAR} interpolation, overrides, then one validation.

``load_config(path)`` is the one validation point. Every problem becomes a
:class:`~hpsearch.errors.ConfigError` whose message is one line of the form
``<file>: <field.path>: <what was expected, what was got, how to fix it>``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hpsearch.config._errors import format_validation
from hpsearch.config._schema import StudyConfig
from hpsearch.errors import ConfigError, one_line

__all__ = ["MAX_STUDY_FILE_BYTES", "load_config"]

#: Study files larger than this are refused before parsing.
MAX_STUDY_FILE_BYTES = 1_000_000

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_SafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


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
                return {k: _interpolate(v, f"{path}.{k}" if path else str(k), file, budget) for k, v in value.items()}
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
            f"{file}: {path}: environment variable {var} is not set; export it or write ${{{var}:-default}}"
        )

    return _ENV_RE.sub(sub, value)


def _read_text(path: Path) -> str:
    """The file's text, refusing what is not a small regular UTF-8 text file."""
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
    return text


def _parse_yaml(text: str, file: str) -> dict[str, Any]:
    """The YAML mapping in ``text``; a YAML error becomes one line with its line and column."""
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
            f"{file}: (top level): expected a mapping of keys (name, trainer, ...), got {type(data).__name__}"
        )
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    """The study file's top-level mapping."""
    return _parse_yaml(_read_text(path), str(path))


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
        raise ConfigError(format_validation(e, file)) from None
    for i, other in enumerate(cfg.compare_with_paths()):
        if not other.is_file():
            raise ConfigError(
                f"{file}: compare_with[{i}]: no study file {cfg.compare_with[i]!r} "
                f"(looked for {other}); paths are relative to this file"
            )
    return cfg
