"""``hpsearch dashboard``: optuna-dashboard on a study's storage, read-only, with its artifacts.

The study manager is the only writer. The dashboard opens the storage so that
it *cannot* write: on SQLite through read-only connections (``mode=ro`` /
``PRAGMA query_only``, no table creation), on PostgreSQL in read-only
transactions. A read-only reader of a WAL database takes no write lock, so a
running study never sees "database is locked" because of the dashboard (the
failure of optuna-dashboard#545, where the dashboard's connections on a
rollback-journal database blocked the writer).

Nothing the dashboard's UI or HTTP API sends may change a byte, so three
independent layers stand in the way of every write:

1. :class:`ReadOnlyHTTP`, a WSGI guard in front of optuna-dashboard: only GET
   and HEAD reach it; every other method is answered 403 before any route runs.
2. :class:`ReadOnlyArtifactStore`: artifacts can be read, never written or
   removed. optuna-dashboard removes a study's artifacts *before* it deletes the
   study in storage, so a read-only storage alone would not save them.
3. :func:`hpsearch.storage.open_readonly_storage`: connections that cannot write.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hpsearch.errors import ConfigError, HpsearchError, StorageError, one_line
from hpsearch.storage import check_storage, mask_url, open_readonly_storage, sqlite_path

__all__ = [
    "LOOPBACK_HOSTS",
    "READ_ONLY",
    "DashboardTarget",
    "ReadOnlyArtifactStore",
    "ReadOnlyHTTP",
    "build_app",
    "host_warning",
    "require_extra",
    "resolve",
    "serve",
]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
INSTALL_HINT = "pip install 'hpsearch[dashboard]'"
#: The start of every refusal, from the HTTP guard and from the artifact store.
READ_ONLY = "hpsearch dashboard is read-only"


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


class ReadOnlyArtifactStore:
    """Optuna's ``ArtifactStore`` protocol over an artifact folder, for reading only.

    ``open_reader`` serves artifacts as ``FileSystemArtifactStore`` does (and
    raises ``ArtifactNotFound`` the same way); ``write`` and ``remove`` raise
    :class:`PermissionError` without touching the folder.
    """

    def __init__(self, root: str | Path) -> None:
        from optuna.artifacts import FileSystemArtifactStore

        self.root = Path(root)
        self._files = FileSystemArtifactStore(self.root)

    def open_reader(self, artifact_id: str) -> IO[bytes]:
        return self._files.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: IO[bytes]) -> None:
        raise PermissionError(f"{READ_ONLY}: refusing to write artifact {artifact_id} into {self.root}")

    def remove(self, artifact_id: str) -> None:
        raise PermissionError(f"{READ_ONLY}: refusing to remove artifact {artifact_id} from {self.root}")


_SAFE_METHODS = frozenset({"GET", "HEAD"})
#: Request bodies read (and dropped) before a refusal, so the client gets the answer, not a reset.
_DRAIN_LIMIT = 256 * 1024 * 1024


class ReadOnlyHTTP:
    """WSGI guard: GET and HEAD go to ``app``; any other method gets 403 and never reaches it.

    The refusal is JSON ``{"reason": "hpsearch dashboard is read-only: ..."}``;
    ``reason`` is the key optuna-dashboard's UI reads from a failed request.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method in _SAFE_METHODS:
            return self.app(environ, start_response)
        _drain(environ)
        path = environ.get("PATH_INFO", "")
        body = json.dumps(
            {"reason": f"{READ_ONLY}: {method} {path} refused; the study manager is the only writer"}
        ).encode()
        start_response(
            "403 Forbidden",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Allow", "GET, HEAD")],
        )
        return [body]


def _drain(environ: dict[str, Any]) -> None:
    """Read the refused request's body: closing a socket with unread input sends a reset
    that can make the client lose the 403."""
    try:
        left = min(int(environ.get("CONTENT_LENGTH") or 0), _DRAIN_LIMIT)
    except ValueError:
        return
    stream = environ.get("wsgi.input")
    while stream is not None and left > 0:
        chunk = stream.read(min(left, 1 << 16))
        if not chunk:
            break
        left -= len(chunk)


def build_app(target: DashboardTarget) -> ReadOnlyHTTP:
    """optuna-dashboard's WSGI app on ``target``, behind all three read-only layers."""
    require_extra("optuna_dashboard")
    import optuna_dashboard

    storage = open_readonly_storage(target.storage_url)
    store = None
    if target.artifact_dir is not None and target.artifact_dir.is_dir():
        store = ReadOnlyArtifactStore(target.artifact_dir)
    return ReadOnlyHTTP(optuna_dashboard.wsgi(storage, artifact_store=store))


def serve(target: DashboardTarget, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve :func:`build_app` until interrupted (blocks).

    The server is the one ``optuna_dashboard.run_server`` uses (bottle's wsgiref
    adapter); only the app it runs is wrapped.
    """
    app = build_app(target)
    import bottle  # optuna-dashboard's web framework

    has_arts = target.artifact_dir is not None and target.artifact_dir.is_dir()
    arts = f", artifacts {target.artifact_dir}" if has_arts else ", no artifact folder"
    shown = f"[{host}]" if ":" in host else host
    print(
        f"optuna-dashboard on {mask_url(target.storage_url)} (read-only{arts}): http://{shown}:{port}/dashboard",
        file=sys.stderr,
        flush=True,
    )
    try:
        bottle.run(app, host=host, port=port)
    except KeyboardInterrupt:
        print("dashboard stopped", file=sys.stderr)
    except OSError as e:
        raise StorageError(f"--port: cannot listen on {host}:{port}: {e.strerror or e}") from None
