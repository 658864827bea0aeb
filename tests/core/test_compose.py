"""docker-compose.yml: valid for docker-compose (v1 needs no engine) and shaped as the README says."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO
from tests.services import missing

SERVICES = {"postgres", "ray-head", "ray-worker", "dashboard", "hpsearch"}
INIT_DIR = "./docker/postgres-init"  # mounted into the postgres image's /docker-entrypoint-initdb.d


def _env_example() -> dict[str, str]:
    lines = (REPO / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_file_validates(tmp_path):
    exe = shutil.which("docker-compose")
    if exe is None:
        missing("docker-compose is not installed (source .ci/services.sh, or apt-get install docker-compose)")
    for name in ("docker-compose.yml", "Dockerfile"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copy(REPO / ".env.example", tmp_path / ".env")  # what the README's first step does
    (tmp_path / "studies").mkdir()
    res = subprocess.run([exe, "-f", "docker-compose.yml", "config"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    resolved = yaml.safe_load(res.stdout)
    assert SERVICES <= set(resolved["services"])
    assert [str(p).removesuffix("/tcp") for p in resolved["services"]["postgres"]["ports"]] == ["127.0.0.1:5432:5432"]
    gpu = resolved["services"]["ray-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    # The dashboard, resolved: `hpsearch dashboard` as the read-only role, holding only that role's password.
    env = _env_example()
    dash = resolved["services"]["dashboard"]
    assert dash["command"] == [
        "hpsearch", "dashboard",
        "--storage", f"postgresql+psycopg://{env['POSTGRES_READONLY_USER']}@postgres:5432/{env['POSTGRES_DB']}",
        "--host", "0.0.0.0", "--port", "8080",
    ]
    assert dash["environment"] == {"PGPASSWORD": env["POSTGRES_READONLY_PASSWORD"]}
    assert env["POSTGRES_PASSWORD"] not in str(dash) and env["RAY_AUTH_TOKEN"] not in str(dash)
    assert [str(p).removesuffix("/tcp") for p in dash["ports"]] == ["127.0.0.1:8080:8080"]
    # An .env from before the read-only role is refused, naming what to add.
    old = "".join(line for line in (REPO / ".env.example").read_text().splitlines(keepends=True)
                  if not line.startswith("POSTGRES_READONLY_"))
    (tmp_path / ".env").write_text(old)
    res = subprocess.run([exe, "-f", "docker-compose.yml", "config", "-q"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode != 0 and "POSTGRES_READONLY_" in res.stderr, res.stderr
    # Without .env, docker-compose refuses: the env file is required, not optional.
    (tmp_path / ".env").unlink()
    res = subprocess.run([exe, "-f", "docker-compose.yml", "config", "-q"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and ".env" in res.stderr


def test_services_and_their_shape(compose):
    services = compose["services"]
    assert SERVICES <= set(services)
    pg = services["postgres"]
    assert pg["env_file"] == ".env" and "healthcheck" in pg and "pg_isready" in str(pg["healthcheck"]["test"])
    assert any(v.split(":")[0] in compose["volumes"] for v in pg["volumes"])
    assert "POSTGRES_PASSWORD" not in str(pg.get("environment", ""))  # only from the env file
    for name, svc in services.items():
        for port in svc.get("ports", []):
            # Every published port names its host address (127.0.0.1 by default), never an implicit 0.0.0.0.
            default = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(port))
            assert default.count(":") == 2 and default.startswith("127.0.0.1:"), (name, port)
        if name != "postgres":
            assert svc["image"].startswith("${HPSEARCH_IMAGE")
        if name not in ("postgres", "dashboard"):
            assert svc["env_file"] == ".env"
    assert f"{INIT_DIR}:/docker-entrypoint-initdb.d:ro" in pg["volumes"]
    assert "-h 127.0.0.1" in str(pg["healthcheck"]["test"])  # not healthy while the init scripts run
    head = services["ray-head"]
    assert "--head" in head["command"] and "--port=6379" in head["command"]
    assert "--ray-client-server-port=10001" in head["command"] and "8265" in head["expose"]
    assert not any("8265" in str(p) for p in head.get("ports", []))  # dashboard stays inside
    worker = services["ray-worker"]
    assert "--address=ray-head:6379" in worker["command"] and "container_name" not in worker  # scalable
    (gpu,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    dash = services["dashboard"]
    cmd = dash["command"]
    # hpsearch's read-only dashboard, not stock optuna-dashboard (which deletes artifacts and writes).
    assert cmd[:2] == ["hpsearch", "dashboard"] and "optuna-dashboard" not in str(cmd)
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and cmd[cmd.index("--port") + 1] == "8080"
    storage = cmd[cmd.index("--storage") + 1]
    assert storage.startswith("postgresql+psycopg://${POSTGRES_READONLY_USER") and "@postgres:5432/" in storage
    assert list(dash["environment"]) == ["PGPASSWORD"]
    assert dash["environment"]["PGPASSWORD"].startswith("${POSTGRES_READONLY_PASSWORD")
    # No env_file and no owner credentials: the container cannot connect as the owner.
    assert "env_file" not in dash and "POSTGRES_USER" not in str(dash) and "POSTGRES_PASSWORD" not in str(dash)
    assert dash["depends_on"]["postgres"]["condition"] == "service_healthy"
    runner = services["hpsearch"]
    assert runner["environment"]["RAY_ADDRESS"] == "auto"
    assert "ray start --address=ray-head:6379 --num-cpus=0 --num-gpus=0" in " ".join(runner["entrypoint"])
    assert "@postgres:5432/" in str(runner["entrypoint"]) and runner["command"][:2] == ["hpsearch", "run"]
    env_example = (REPO / ".env.example").read_text()
    for var in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "POSTGRES_READONLY_USER",
                "POSTGRES_READONLY_PASSWORD", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        assert f"\n{var}=" in env_example
    env = _env_example()
    assert env["POSTGRES_READONLY_USER"] != env["POSTGRES_USER"]
    assert env["POSTGRES_READONLY_PASSWORD"] != env["POSTGRES_PASSWORD"]


def test_readonly_role_init_script_is_mounted_and_runnable():
    """The script compose mounts; what its SQL does is tested on a real PostgreSQL in
    tests/dashboard/test_dashboard_readonly.py (the same file, run with psql)."""
    scripts = sorted((REPO / INIT_DIR).iterdir())
    assert [p.name for p in scripts] == ["10-readonly-role.sh"]
    script = scripts[0]
    assert script.stat().st_mode & 0o111  # executed by the image (not sourced into its entrypoint)
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    for needed in ("GRANT CONNECT ON DATABASE", "GRANT USAGE ON SCHEMA public",
                   "GRANT SELECT ON ALL TABLES IN SCHEMA public",
                   'ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES'):
        assert needed in text
    assert not re.search(r"GRANT\s+(ALL|INSERT|UPDATE|DELETE|TRUNCATE)", text)
    res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr


def test_every_ray_node_and_the_runner_share_the_checkpoint_volume(compose):
    services = compose["services"]
    for name in ("ray-head", "ray-worker", "hpsearch"):
        mounts = services[name]["volumes"]
        assert "checkpoints:/checkpoints" in mounts, name
    assert services["hpsearch"]["environment"]["HPSEARCH_CHECKPOINTS"] == "/checkpoints"
    assert "checkpoints" in compose["volumes"]
