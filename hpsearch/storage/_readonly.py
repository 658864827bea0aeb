"""Read-only access to a study storage, for the views (compare, report, dashboard).

The study manager is the only writer. Readers open the storage so that they
*cannot* write: SQLite through read-only connections (``mode=ro`` or
``PRAGMA query_only``), PostgreSQL in read-only transactions, and Optuna's
tables are never created. A read-only reader of a WAL database takes no write
lock, so a running study never sees "database is locked" because of a reader.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from hpsearch.errors import StorageError, one_line
from hpsearch.storage._urls import mask_secrets, mask_url, sqlite_path, url_password

if TYPE_CHECKING:
    import optuna
    import sqlalchemy

__all__ = ["ReadOnlySQLite", "open_readonly_storage", "readonly_engine"]

#: Seconds a PostgreSQL connection may take: an unreachable server fails, never hangs.
CONNECT_TIMEOUT_S = 10


class ReadOnlySQLite:
    """SQLite connection factory: no writes, and no WAL checkpoint into the file on close.

    Picklable (a class, not a closure), for SQLAlchemy's ``creator``.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self) -> sqlite3.Connection:
        path = Path(self.path).resolve()
        # With a WAL file present, a read-write handle would checkpoint it into
        # the database on close (rewriting the file); a read-only one cannot.
        # Without one, read-only would leave new -wal/-shm files behind.
        mode = "ro" if Path(f"{path}-wal").exists() else "rw"
        con = sqlite3.connect(f"file:{quote(str(path))}?mode={mode}", uri=True, timeout=60, check_same_thread=False)
        con.execute("PRAGMA query_only=ON")
        return con


def readonly_engine(url: str) -> sqlalchemy.engine.Engine:
    """A SQLAlchemy engine on ``url`` for short reads: no pool, read-only SQLite connections.

    The caller disposes of it.
    """
    import sqlalchemy

    path = sqlite_path(url)
    kwargs: dict[str, Any] = {"poolclass": sqlalchemy.pool.NullPool}
    if path is not None:
        kwargs["creator"] = ReadOnlySQLite(str(path))
    elif url.lower().startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return sqlalchemy.create_engine(url, **kwargs)


def _readonly_engine_kwargs(url: str) -> dict[str, Any]:
    path = sqlite_path(url)
    if path is not None:
        return {"creator": ReadOnlySQLite(str(path))}
    if url.lower().startswith("postgresql"):
        return {
            "pool_pre_ping": True,
            "connect_args": {
                "connect_timeout": CONNECT_TIMEOUT_S,
                "options": "-c default_transaction_read_only=on",
            },
        }
    return {"pool_pre_ping": True}


def open_readonly_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage on ``url`` through connections that cannot write.

    Tables are never created; SQLite connections are read-only
    (:class:`ReadOnlySQLite`), PostgreSQL sessions run with
    ``default_transaction_read_only``. Any write raises.

    Raises:
        StorageError: The storage cannot be opened or is not an Optuna storage.
    """
    import optuna

    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=_readonly_engine_kwargs(url), skip_table_creation=True)
    except Exception as e:  # noqa: BLE001 - every driver error means "cannot read it"
        msg = mask_secrets(one_line(str(e).split("\n")[0]), url_password(url))
        raise StorageError(f"storage {mask_url(url)}: not readable as an Optuna storage: {msg[:300]}") from None
