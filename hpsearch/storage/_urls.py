"""Storage URLs -> Optuna's RDBStorage (SQLite or PostgreSQL), and secret masking.

SQLite files run in WAL mode with ``synchronous=NORMAL`` and a busy timeout:
the study manager is the only writer, readers (dashboard, ``hpsearch show``)
never block it, and a commit costs no fsync.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hpsearch.errors import ConfigError, StorageError, one_line

if TYPE_CHECKING:
    import optuna

__all__ = ["check_storage", "mask_secrets", "mask_url", "open_storage", "sqlite_path", "url_password"]

_SUPPORTED = ("sqlite", "postgresql", "postgresql+psycopg", "postgresql+psycopg2")
# The password runs to the last '@' of the authority: an unencoded '@' in it must not leak its tail.
_PASSWORD_RE = re.compile(r"(?P<head>[a-z][a-z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]*(?:@[^@\s/]*)*)(?P<at>@)", re.I)
# libpq also takes the password as a query parameter: ...?password=secret
_QUERY_PASSWORD_RE = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&#\s'\"]*)", re.I)
SQLITE_BUSY_TIMEOUT_S = 60.0


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    url = _PASSWORD_RE.sub(lambda m: f"{m['head']}***{m['at']}", url)
    return _QUERY_PASSWORD_RE.sub(lambda m: f"{m['head']}***", url)


def mask_secrets(text: str, *secrets: str | None) -> str:
    """``text`` with every URL password, every given secret and ``$PGPASSWORD`` replaced by ``***``."""
    text = mask_url(text)
    env = os.environ.get("PGPASSWORD")
    for s in (*secrets, env if env and len(env) >= 4 else None):  # a tiny one would mask plain text
        if s:
            text = text.replace(s, "***")
    return text


def url_password(url: str) -> str | None:
    """The password in ``url`` (None if it has none or cannot be parsed), to mask it in driver errors."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None for other URLs or memory)."""
    if not url.startswith("sqlite:"):
        return None
    rest = url[len("sqlite:") :]
    if not rest.startswith("///") or rest in ("///", "///:memory:"):
        return None
    return Path(rest[3:].split("?", 1)[0])


class _SQLiteConnect:
    """Connection factory applying our pragmas (picklable, unlike a closure)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False)
        con.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA foreign_keys=ON")
        return con


def check_storage(url: str, *, field: str = "storage", file: str = "<study>", must_exist: bool = False) -> None:
    """Check the URL can be used, without creating or writing anything.

    Raises:
        ConfigError: Unsupported or malformed URL.
        StorageError: Unreachable server, missing folder, or (``must_exist``) no database.
    """
    scheme = _check_url(url, field, file)
    if scheme != "sqlite":
        _check_server(url, scheme, field, file)
        return
    path = sqlite_path(url)
    if path is None:
        raise ConfigError(
            f"{file}: {field}: {mask_url(url)!r} is not a SQLite file URL; write "
            "sqlite:///relative.db or sqlite:////absolute/path.db"
        )
    _check_sqlite_file(path, field, file, must_exist)


def _check_url(url: str, field: str, file: str) -> str:
    """The URL's scheme, once the URL is one hpsearch supports and can parse."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme.split("+", 1)[0] in ("mysql", "mariadb"):
        # Optuna's RDB works on MySQL, but our study lock (hpsearch.storage._locks) has no MySQL
        # version: several drivers on one study could then over-run it or repeat a grid point.
        raise ConfigError(
            f"{file}: {field}: MySQL is not supported ({mask_url(url)!r}): several drivers on one "
            "study need a study lock, which hpsearch has for SQLite or PostgreSQL; use "
            "sqlite:///path/to/file.db or postgresql+psycopg://user@host:port/db"
        )
    if scheme not in _SUPPORTED:
        raise ConfigError(
            f"{file}: {field}: unsupported storage URL {mask_url(url)!r}; use "
            "sqlite:///path/to/file.db or postgresql+psycopg://user@host:port/db"
        )
    try:
        netloc = urlsplit(url).netloc
    except ValueError as e:  # e.g. an unclosed [IPv6 host
        raise ConfigError(f"{file}: {field}: malformed URL {mask_url(url)!r}: {e}") from None
    if netloc.count("@") > 1:
        raise ConfigError(
            f"{file}: {field}: the user or password in {mask_url(url)!r} holds an '@'; percent-encode it as %40"
        )
    return scheme


def _check_sqlite_file(path: Path, field: str, file: str, must_exist: bool) -> None:
    """The database file can be created or opened: its folder exists, and an existing file is SQLite."""
    if path.is_dir():
        raise StorageError(f"{file}: {field}: {path} is a directory, not a database file")
    if must_exist and not path.exists():
        raise StorageError(f"{file}: {field}: no database at {path}; run the study first")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise StorageError(f"{file}: {field}: folder {parent} does not exist; create it or fix the path")
    if not path.exists():
        return
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as e:
        raise StorageError(f"{file}: {field}: cannot read {path}: {e.strerror}") from None
    if head and head != b"SQLite format 3\x00":
        raise StorageError(f"{file}: {field}: {path} is not a SQLite database")


def _check_server(url: str, scheme: str, field: str, file: str) -> None:
    """A server URL answers ``SELECT 1`` (one connection, closed at once)."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, connect_args=_connect_args(scheme), poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as con:
            con.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as e:  # noqa: BLE001 - every driver error means "cannot use it"
        msg = mask_secrets(one_line(str(e).split("\n")[0]), url_password(url))
        raise StorageError(
            f"{file}: {field}: cannot connect to {mask_url(url)}: {msg[:200]}; "
            "check host, port, database and credentials"
        ) from None


def _connect_args(scheme: str) -> dict[str, Any]:
    if scheme.startswith("postgresql"):
        return {"connect_timeout": 10}
    return {}


def open_storage(url: str, *, create: bool = True) -> optuna.storages.RDBStorage:
    """An Optuna RDBStorage for ``url`` with our engine settings.

    Args:
        url: SQLite or server URL (already checked with :func:`check_storage`).
        create: Create Optuna's tables if missing; False opens read-only use.
    """
    import optuna

    path = sqlite_path(url)
    engine_kwargs: dict[str, Any]
    if path is not None:
        engine_kwargs = {"creator": _SQLiteConnect(str(path))}
    else:
        scheme = url.split("://", 1)[0].lower()
        engine_kwargs = {"pool_pre_ping": True, "connect_args": _connect_args(scheme)}
    import time

    import sqlalchemy.exc

    for attempt in range(6):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=not create)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as e:
            # Several drivers creating the schema at once race in CREATE TABLE / TYPE:
            # the loser sees "already exists" or a duplicate key; the schema is there now.
            text = str(e).lower()
            if attempt < 5 and any(m in text for m in ("already exists", "duplicate key", "unique constraint")):
                time.sleep(0.2 * (attempt + 1))
                continue
            error: Exception = e
        except Exception as e:  # noqa: BLE001
            error = e
        msg = mask_secrets(one_line(str(error).split("\n")[0]), url_password(url))
        raise StorageError(f"storage {mask_url(url)}: {msg[:300]}") from None
    raise AssertionError("unreachable")  # pragma: no cover
