"""docker-compose.yml: valid for docker-compose (v1 needs no engine) and shaped as the README says."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO
from tests.services import missing

SERVICES = {"postgres", "ray-head", "ray-worker", "optuna-dashboard", "hpsearch"}


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
            assert svc["image"].startswith("${HPSEARCH_IMAGE") and svc["env_file"] == ".env"
    head = services["ray-head"]
    assert "--head" in head["command"] and "--port=6379" in head["command"]
    assert "--ray-client-server-port=10001" in head["command"] and "8265" in head["expose"]
    assert not any("8265" in str(p) for p in head.get("ports", []))  # dashboard stays inside
    worker = services["ray-worker"]
    assert "--address=ray-head:6379" in worker["command"] and "container_name" not in worker  # scalable
    (gpu,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    dash = services["optuna-dashboard"]
    assert "optuna-dashboard" in str(dash["command"]) and "@postgres:5432/" in str(dash["command"])
    assert dash["depends_on"]["postgres"]["condition"] == "service_healthy"
    runner = services["hpsearch"]
    assert runner["environment"]["RAY_ADDRESS"] == "auto"
    assert "ray start --address=ray-head:6379 --num-cpus=0 --num-gpus=0" in " ".join(runner["entrypoint"])
    assert "@postgres:5432/" in str(runner["entrypoint"]) and runner["command"][:2] == ["hpsearch", "run"]
    env_example = (REPO / ".env.example").read_text()
    for var in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        assert f"\n{var}=" in env_example
