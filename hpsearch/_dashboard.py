"""``hpsearch dashboard``: optuna-dashboard on a study's storage, read-only, with its artifacts.

The study manager is the only writer. The dashboard opens the storage so that
it *cannot* write: on SQLite through read-only connections (``mode=ro`` /
``PRAGMA query_only``, no table creation), on PostgreSQL in read-only
transactions. A read-only reader of a WAL database takes no write lock, so a
running study never sees "database is locked" because of the dashboard (the
failure of optuna-dashboard#545, where the dashboard's connections on a
rollback-journal database blocked the writer).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.errors import ConfigError, HpsearchError, StorageError, one_line
from hpsearch.storage import check_storage, mask_secrets, mask_url, sqlite_path, url_password

if TYPE_CHECKING:
    import optuna

__all__ = ["DashboardTarget", "LOOPBACK_HOSTS", "host_warning", "open_readonly_storage", "require_extra", "resolve", "serve"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
INSTALL_HINT = "pip install 'hpsearch[dashboard]'"


def require_extra(*modules: str) -> None:
    """Raise a one-line error naming the extra when an optional module is missing."""
    import importlib.util

    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise HpsearchError(f"{name} is not installed; run: {INSTALL_HINT}")
        try:
            __import__(name)
        except ImportError as e:
            raise HpsearchError(f"{name} cannot be imported ({one_line(str(e))}); run: {INSTALL_HINT}") from None


def host_warning(host: str) -> str | None:
    """The warning to print when the dashboard would listen beyond this machine."""
    if host in LOOPBACK_HOSTS:
        return None
    return (
        f"warning: the dashboard listens on {host}: anyone who can reach this machine sees every "
        "study, its config and its artifacts, with no authentication; keep 127.0.0.1 and use an "
        "SSH tunnel unless this network is trusted"
    )


@dataclass
class DashboardTarget:
    """What the dashboard serves: a storage URL and (if known) the artifact folder."""

    storage_url: str
    artifact_dir: Path | None


def resolve(study: str | Path | None, storage: str | None) -> DashboardTarget:
    """The storage and artifact folder of a study file, or of ``--storage`` alone."""
    storage = storage or None
    if study is None and storage is None:
        raise ConfigError("dashboard: give a study file, or --storage URL")
    if study is not None:
        from hpsearch.config import load_config

        cfg = load_config(study, {"storage": storage})
        url = cfg.resolved_storage()
        file = str(study)
        artifacts: Path | None = cfg.resolved_artifacts()
    else:
        assert storage is not None
        url, file = storage, "dashboard"
        path = sqlite_path(url)
        artifacts = path.resolve().parent / "hpsearch-artifacts" if path is not None else None
    check_storage(url, file=file, field="storage" if study is not None else "--storage", must_exist=True)
    return DashboardTarget(url, artifacts)


def open_readonly_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage on ``url`` through connections that cannot write.

    Tables are never created; SQLite connections are read-only (see
    :class:`hpsearch._compare._ReadOnlySQLite`), PostgreSQL sessions run with
    ``default_transaction_read_only``. Any write raises.
    """
    import optuna

    from hpsearch._compare import _ReadOnlySQLite

    path = sqlite_path(url)
    engine_kwargs: dict[str, Any]
    if path is not None:
        engine_kwargs = {"creator": _ReadOnlySQLite(str(path))}
    elif url.lower().startswith("postgresql"):
        engine_kwargs = {
            "pool_pre_ping": True,
            "connect_args": {"connect_timeout": 10, "options": "-c default_transaction_read_only=on"},
        }
    else:
        engine_kwargs = {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=True)
    except Exception as e:  # noqa: BLE001 - every driver error means "cannot read it"
        msg = mask_secrets(one_line(str(e).split("\n")[0]), url_password(url))
        raise StorageError(f"storage {mask_url(url)}: not readable as an Optuna storage: {msg[:300]}") from None


def serve(target: DashboardTarget, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run optuna-dashboard until interrupted (blocks)."""
    require_extra("optuna_dashboard")
    import optuna_dashboard
    from optuna.artifacts import FileSystemArtifactStore

    storage = open_readonly_storage(target.storage_url)
    store = None
    if target.artifact_dir is not None and target.artifact_dir.is_dir():
        store = FileSystemArtifactStore(str(target.artifact_dir))
    arts = f", artifacts {target.artifact_dir}" if store is not None else ", no artifact folder"
    shown = f"[{host}]" if ":" in host else host
    print(
        f"optuna-dashboard on {mask_url(target.storage_url)} (read-only{arts}): "
        f"http://{shown}:{port}/dashboard",
        file=sys.stderr,
        flush=True,
    )
    try:
        optuna_dashboard.run_server(storage, host=host, port=port, artifact_store=store)
    except KeyboardInterrupt:
        print("dashboard stopped", file=sys.stderr)
    except OSError as e:
        raise StorageError(f"--port: cannot listen on {host}:{port}: {e.strerror or e}") from None
