"""Real services for tests, on 127.0.0.1 only: a throwaway PostgreSQL and a two-node Ray.

PostgreSQL comes from ``.ci/services.sh`` (``HPSEARCH_TEST_PG_URL``, ``_DATA``, ``_BIN``);
without it, ``pg_server`` starts its own cluster when Debian's binaries are installed.
Without either, Postgres tests skip, except under CI (``CI`` set to 1, true or yes, any
case; ``.ci/run`` sets ``CI=true``) where they fail: CI must never pass by skipping them.
Every test that needs a service, a browser or an optional package calls :func:`missing`
(or :func:`require_module`) instead of ``pytest.skip`` / ``importorskip``, so the same
rule holds for all of them. Import the fixtures into a test module to use them.
"""

from __future__ import annotations

import atexit
import glob
import importlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit, urlunsplit

import pytest

#: Values of ``CI`` that mean "running under CI" (compared case-insensitively): CI
#: systems set ``CI=true`` (GitHub Actions, GitLab, .ci/run), some ``CI=1``.
CI_TRUE = frozenset({"1", "true", "yes"})
#: The role whose host connections need a password (see .ci/services.sh).
SECRET_ROLE = "hps_secret"


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``CI`` is 1, true or yes in any case; unset, empty, 0 or false are not CI."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() in CI_TRUE


def missing(what: str) -> None:
    """Skip, or fail under CI, when a service or package the test needs is not there.

    Reads ``CI`` at call time, so a test can check both branches with monkeypatch.
    """
    if in_ci():
        pytest.fail(f"{what} (under CI this fails instead of skipping: run .ci/test, "
                    "or source .ci/services.sh and install the test extras)", pytrace=False)
    pytest.skip(what)


def require_module(name: str, install: str = "pip install -e '.[test]'") -> ModuleType:
    """Import ``name``; if it is not installed, :func:`missing` (skip, or fail under CI)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"{name} is not installed: {install}")
        raise  # not reached: missing() raises


def free_port(low: int = 20000, high: int = 60000) -> int:
    """A free TCP port on 127.0.0.1 (outside Ray's worker range 10002-19999)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if low <= port < high:
            return port


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class PgServer:
    """A PostgreSQL cluster the tests may create databases in, and restart."""

    url: str  # postgresql+psycopg://postgres@127.0.0.1:PORT/DB
    data: str | None
    bin: str | None
    owned: bool = False

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 5432)

    def url_for(self, db: str, *, user: str = "postgres", password: str | None = None) -> str:
        parts = urlsplit(self.url)
        auth = f"{user}:{password}" if password else user
        return urlunsplit(parts._replace(netloc=f"{auth}@{parts.hostname}:{self.port}", path=f"/{db}"))

    def execute(self, sql: str, *, db: str | None = None) -> list[tuple]:
        import psycopg

        dsn = self.url_for(db or urlsplit(self.url).path.lstrip("/")).replace("+psycopg", "")
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as con:
            cur = con.execute(sql)
            return cur.fetchall() if cur.description else []

    def _ctl(self, *args: str) -> None:
        if not (self.data and self.bin):
            missing("PostgreSQL data directory unknown (set HPSEARCH_TEST_PG_DATA/_BIN); cannot restart it")
        # Not a pipe: a server started by `restart` keeps pg_ctl's stdout open for good.
        with open(f"{os.path.dirname(self.data)}/pg_ctl.log", "ab") as log:
            subprocess.run(_as_owner([f"{self.bin}/pg_ctl", "-D", self.data, "-w", "-t", "60", *args]),
                           check=True, stdout=log, stderr=subprocess.STDOUT, timeout=90)

    def restart(self) -> float:
        """``pg_ctl restart`` (fast shutdown: every connection is cut); returns seconds taken."""
        t0 = time.monotonic()
        self._ctl("-m", "fast", "restart")
        return time.monotonic() - t0

    def stop(self) -> None:
        """Stop the server (fast shutdown), remembering its options for :meth:`start`."""
        import shlex

        with open(f"{self.data}/postmaster.opts") as fh:  # the running server's command line
            argv = shlex.split(fh.read())
        self._opts = shlex.join(a for i, a in enumerate(argv[1:], 1) if a != "-D" and argv[i - 1] != "-D")
        self._ctl("-m", "fast", "stop")

    def start(self) -> None:
        self._ctl("-l", f"{self.data}/server.log", "-o", self._opts, "start")


def _start_own() -> PgServer | None:
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins or not os.path.exists(f"{bins[-1]}/initdb"):
        return None
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return None
    bin_ = bins[-1]
    root = tempfile.mkdtemp(prefix="hps-pg-", dir="/tmp")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, port = f"{root}/data", free_port()
    subprocess.run(_as_owner([f"{bin_}/initdb", "-U", "postgres", "--auth=trust", "-D", data]),
                   check=True, capture_output=True, timeout=120)
    hba = Path(data) / "pg_hba.conf"
    subprocess.run(_as_owner(["sed", "-i", f"1i host all {SECRET_ROLE} 127.0.0.1/32 scram-sha-256", str(hba)]),
                   check=True, timeout=30)
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={data}"
    subprocess.run(_as_owner([f"{bin_}/pg_ctl", "-D", data, "-l", f"{data}/server.log", "-w", "-t", "60",
                              "-o", opts, "start"]), check=True, capture_output=True, timeout=90)
    subprocess.run([f"{bin_}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "hpsearch_test"],
                   check=True, capture_output=True, timeout=60)
    return PgServer(f"postgresql+psycopg://postgres@127.0.0.1:{port}/hpsearch_test", data, bin_, owned=True)


#: This process's own cluster, started at most once: test modules import ``pg_server``,
#: and each import is a separate session fixture, so the cache is here, not in the fixture.
_OWN: list[PgServer] = []


def _own_server() -> PgServer | None:
    """This process's own cluster (:func:`_start_own`), started on first use."""
    if not _OWN:
        server = _start_own()
        if server is None:
            return None
        _OWN.append(server)
        atexit.register(stop_own_server)
    return _OWN[0]


def stop_own_server() -> None:
    """Stop and delete this process's own cluster, if it started one (tests/conftest.py
    calls it when the session ends; ``atexit`` is the fallback)."""
    while _OWN:
        server = _OWN.pop()
        subprocess.run(_as_owner([f"{server.bin}/pg_ctl", "-D", str(server.data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(os.path.dirname(str(server.data)), ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    """The test PostgreSQL (from .ci/services.sh, or started here); skip/fail if none."""
    url = os.environ.get("HPSEARCH_TEST_PG_URL")
    # Under pytest-xdist each worker starts its own cluster when it can: a test that
    # restarts or stops its server (test_postgres.py) must not cut another worker's
    # connections. The cluster from .ci/services.sh serves a plain run, or a worker
    # that cannot start one.
    server = _own_server() if os.environ.get("PYTEST_XDIST_WORKER") else None
    if server is None and url:
        server = PgServer(url, os.environ.get("HPSEARCH_TEST_PG_DATA"), os.environ.get("HPSEARCH_TEST_PG_BIN"))
    if server is None:
        server = _own_server()
    if server is None:
        missing("no PostgreSQL: source .ci/services.sh (or install Debian's postgresql)")
    require_module("psycopg", "pip install -e '.[postgres]'")
    return server


@pytest.fixture
def pg_db(pg_server: PgServer):
    """A fresh, empty database on the test server; yields its name, drops it after."""
    name = f"hps_{secrets.token_hex(6)}"
    pg_server.execute(f"CREATE DATABASE {name}")
    yield name
    pg_server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_url(pg_server: PgServer, pg_db: str) -> str:
    """``postgresql+psycopg://`` URL of a fresh, empty database."""
    return pg_server.url_for(pg_db)


@pytest.fixture(scope="module")
def pg_module_db(pg_server: PgServer):
    """One database per test module, with Optuna's schema; see ``pg_empty_url``."""
    from hpsearch.storage._urls import open_storage

    name = f"hps_{secrets.token_hex(6)}"
    pg_server.execute(f"CREATE DATABASE {name}")
    open_storage(pg_server.url_for(name)).engine.dispose()
    yield name
    pg_server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_empty_url(pg_server: PgServer, pg_module_db: str) -> str:
    """URL of the module's database, emptied (TRUNCATE): much faster than a new database."""
    rows = pg_server.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'",
        db=pg_module_db,
    )
    pg_server.execute(f"TRUNCATE {', '.join(r[0] for r in rows)} RESTART IDENTITY CASCADE", db=pg_module_db)
    return pg_server.url_for(pg_module_db)


# ------------------------------------------------------------------ Ray


@dataclass
class RayCluster:
    address: str
    client_address: str  # ray://127.0.0.1:PORT (Ray Client)
    env: dict[str, str]  # what a client needs: RAY_AUTH_MODE/RAY_AUTH_TOKEN, RAY_TMPDIR
    head_node_id: str
    worker_node_id: str
    more_node_ids: tuple[str, ...] = ()


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


_RAY_START_LOOPBACK = """
import sys
import ray._private.ray_constants as constants
import ray._private.services as services
constants.ENABLE_RAY_CLUSTER = True              # allow `ray start --address` ...
services.resolve_ip_for_localhost = lambda h: h  # ... and keep 127.0.0.1 as given
from ray.scripts.scripts import main
sys.argv[0] = "ray"
sys.exit(main())
"""


def _kill_cluster(pgids: list[int], temp: str) -> None:
    """SIGKILL the cluster's processes: its process groups, then anything naming its temp dir.

    Never ``ray stop``: it kills every Ray process on the machine, other tests' included.
    """
    import signal

    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as fh:
                if temp.encode() in fh.read():
                    os.kill(int(cmdline.split("/")[2]), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def start_two_node_ray(
    *, worker_resources: dict[str, float], head_cpus: int = 1, more_workers: tuple[dict[str, float], ...] = ()
) -> tuple[RayCluster, Callable[[], None]]:
    """``ray start --head`` plus a second node with ``worker_resources``, all on 127.0.0.1.

    ``head_cpus=0`` keeps trials off the head; ``more_workers`` adds a node per entry
    (its custom resources), each with 1 CPU, in a session of its own.

    Token authentication on (a fresh token), files and sockets in a private temp dir,
    every port chosen free (none of Ray's fixed defaults, so clusters of concurrent
    test runs never collide). Returns the cluster and a stop function.
    """
    temp = tempfile.mkdtemp(prefix="hps-rc-", dir="/tmp")  # short: socket paths fit 107 bytes
    port, client_port = free_port(), free_port()
    env = {
        **os.environ,
        "RAY_TMPDIR": temp,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    # Ray 2.60 turns a 127.0.0.1 node address into the machine's eth0 address unless this
    # switch is 0; but with it 0, `ray start --address` refuses to add a node (a check
    # meant for Windows/OSX). So every process runs with 0 (loopback), and the second
    # node's `ray start` runs through _RAY_START_LOOPBACK, which lifts that one check.
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env.pop("RAY_ADDRESS", None)
    common = ["--node-ip-address=127.0.0.1", "--num-gpus=0", f"--temp-dir={temp}",
              "--object-store-memory=100000000", "--disable-usage-stats"]
    pgids: list[int] = []

    def ray_start(*args: str, cli: list[str]) -> None:
        proc = subprocess.Popen([*cli, "start", *args, *common], env=env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        pgids.append(proc.pid)
        out, _ = proc.communicate(timeout=180)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed: {out[-2000:]}")

    def stop() -> None:
        _kill_cluster(pgids, temp)
        shutil.rmtree(temp, ignore_errors=True)

    try:
        ray_start("--head", f"--port={port}", f"--num-cpus={head_cpus}", "--include-dashboard=false",
                  f"--dashboard-port={free_port()}", f"--ray-client-server-port={client_port}",
                  f"--dashboard-agent-listen-port={free_port()}", cli=[_ray_bin()])
        for resources in (worker_resources, *more_workers):
            ray_start(f"--address=127.0.0.1:{port}", "--num-cpus=1", f"--resources={json.dumps(resources)}",
                      f"--dashboard-agent-listen-port={free_port()}", cli=[sys.executable, "-c", _RAY_START_LOOPBACK])
        probe = (
            "import json, ray; ray.init(address='127.0.0.1:%d', configure_logging=False, log_to_driver=False);"
            "print(json.dumps([[n['NodeID'], n['Resources']] for n in ray.nodes() if n['Alive']]))" % port
        )
        deadline = time.monotonic() + 60
        while True:
            out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
            nodes = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []
            if len(nodes) == 2 + len(more_workers) or time.monotonic() > deadline:
                break
            time.sleep(1)
        if len(nodes) != 2 + len(more_workers):
            raise RuntimeError(f"the Ray cluster did not come up: {out.stderr[-2000:]}")
        key = next(iter(worker_resources))
        worker = next(n for n, res in nodes if key in res)
        head = next(n for n, res in nodes if not set(res) & {k for r in (worker_resources, *more_workers) for k in r})
    except BaseException:
        stop()
        raise
    client_env = {k: env[k] for k in ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    others = tuple(n for n, res in nodes if n not in (head, worker))
    return RayCluster(f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}", client_env, head, worker, others), stop
