"""Storage passwords never show: not in output, errors, logs, stored attributes or trial records."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest

from hpsearch.config import load_config
from hpsearch.study._manager import resolved_config_yaml
from hpsearch.storage._urls import mask_secrets, mask_url
from tests.conftest import run_cli
from tests.services import SECRET_ROLE, PgServer, pg_db, pg_server  # noqa: F401 - fixtures

PW = "Sekr3t-d41d8cd9"

MASKED = [
    # (URL or text holding PW, what must remain visible)
    (f"postgresql+psycopg://hps:{PW}@db:5432/hps", "postgresql+psycopg://hps:***@db:5432/hps"),
    (f"postgresql://hps:{PW}@db/hps?sslmode=require", "postgresql://hps:***@db/hps?sslmode=require"),
    (f"postgresql+psycopg2://hps:{PW}@10.0.0.7:6543/hps", "postgresql+psycopg2://hps:***@10.0.0.7:6543/hps"),
    (f"mysql+pymysql://root:{PW}@127.0.0.1/x", "mysql+pymysql://root:***@127.0.0.1/x"),
    (f"postgresql://:{PW}@db/hps", "postgresql://:***@db/hps"),  # no user name
    (f"postgresql://hps:a:{PW}@db/hps", "postgresql://hps:***@db/hps"),  # ':' in the password
    (f"postgresql://hps:a@{PW}@db/hps", "postgresql://hps:***@db/hps"),  # unencoded '@' in it
    (f"postgresql://hps:a/{PW}@db/hps", "postgresql://hps:***@db/hps"),  # unencoded '/' in it
    (f"postgresql://hps:{quote(PW + '@:/#?', safe='')}@db/hps", "postgresql://hps:***@db/hps"),
    (f"postgresql://hps@db/hps?password={PW}", "postgresql://hps@db/hps?password=***"),
    (f"postgresql://hps@db/hps?sslmode=require&password={PW}&x=1", "?sslmode=require&password=***&x=1"),
    (f"ray://admin:{PW}@head:10001", "ray://admin:***@head:10001"),
    (f"POSTGRESQL://HPS:{PW}@DB/HPS", "POSTGRESQL://HPS:***@DB/HPS"),
    (f"error: cannot connect to postgresql://hps:{PW}@db/hps: timeout; also mysql://u:{PW}x@h/d",
     "postgresql://hps:***@db/hps: timeout; also mysql://u:***@h/d"),
    (f"storage: 'postgresql://hps:{PW}@db/hps' is bad", "'postgresql://hps:***@db/hps' is bad"),
]

UNCHANGED = [
    "sqlite:////tmp/study/hpsearch.db",
    "sqlite:///relative.db",
    "postgresql+psycopg://hps@db:5432/hps",
    "http://example.com:8080/a/b?c=d",
    "time 12:30@noon, ratio 1:2",
    "user@example.com wrote: a:b@c",
]


@pytest.mark.parametrize(("text", "visible"), MASKED)
def test_mask_url_hides_every_form_of_password(text: str, visible: str) -> None:
    masked = mask_url(text)
    assert PW not in masked and quote(PW) not in masked
    assert visible in masked, masked
    assert mask_url(masked) == masked  # idempotent
    assert mask_secrets(text) == masked


@pytest.mark.parametrize("text", UNCHANGED)
def test_mask_url_leaves_text_without_password_alone(text: str) -> None:
    assert mask_url(text) == text


def test_mask_secrets_hides_named_secrets_and_pgpassword(monkeypatch: pytest.MonkeyPatch) -> None:
    assert mask_secrets(f"token {PW} leaked", PW) == "token *** leaked"
    assert mask_secrets("nothing here", None, "") == "nothing here"
    monkeypatch.setenv("PGPASSWORD", PW)
    assert PW not in mask_secrets(f"libpq said {PW}")


@pytest.mark.parametrize(
    "storage",
    [
        f"postgresql+psycopg://hps:{PW}@db:5432/hps",
        "postgresql+psycopg://hps:${HPS_TEST_PW}@db:5432/hps",
        f"postgresql+psycopg://hps:{quote(PW + '@/', safe='')}@db:5432/hps",
        f"postgresql+psycopg://hps@db:5432/hps?password={PW}",
    ],
)
def test_stored_config_attr_masks_the_password(storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPS_TEST_PW", PW)
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: s
        storage: "{storage}"
        search_space: {{x: {{type: float, low: 0, high: 1}}}}
        trainer: {{kind: python, function: "obj.py:f"}}
    """))
    cfg = load_config(path)
    assert PW in cfg.resolved_storage() or quote(PW + "@/", safe="") in cfg.resolved_storage()
    stored = resolved_config_yaml(cfg)  # what becomes the study attribute hpsearch.config
    assert PW not in stored and quote(PW, safe="") not in stored
    assert "***" in stored and "@db:5432/hps" in stored


# ---------------------------------------------------------------- through the CLI, failing

STUDY = """\
name: s
objective: {metric: value, direction: minimize}
n_trials: 2
executor: local
STORAGE
search_space:
  x: {type: float, low: -10, high: 10}
trainer: {kind: python, function: "obj.py:quadratic"}
"""
OBJ = "def quadratic(params):\n    return (params['x'] - 2) ** 2\n"
UNREACHABLE = "127.0.0.1:9"  # the discard port: connection refused at once


def _secrets_in(text: str, password: str) -> list[str]:
    """The forms of ``password`` found in ``text``: as is, percent-encoded, or its random core."""
    forms = {password, quote(password, safe=""), password.split("-")[1]}
    return [f for f in forms if f in text]


# (args after `hpsearch`, the storage line of the study, extra environment)
FAILING = {
    "in_file": (["run"], f"storage: postgresql+psycopg://hps:{PW}@{UNREACHABLE}/hps", {}),
    "env_var_in_file": (["run"], f"storage: postgresql+psycopg://hps:${{HPS_TEST_PW}}@{UNREACHABLE}/hps",
                        {"HPS_TEST_PW": PW}),
    "storage_flag": (["run", "--storage", f"postgresql+psycopg://hps:{PW}@{UNREACHABLE}/hps"], "", {}),
    "storage_env": (["run"], "", {"HPSEARCH_STORAGE": f"postgresql://hps:{PW}@{UNREACHABLE}/hps"}),
    "query_password": (["run"], f"storage: 'postgresql+psycopg://hps@{UNREACHABLE}/hps?password={PW}'", {}),
    "encoded_password": (["run"], f"storage: postgresql+psycopg://hps:{quote(PW + '@:/', safe='')}@{UNREACHABLE}/hps", {}),
    "unencoded_at": (["run"], f"storage: postgresql+psycopg://hps:x@{PW}@{UNREACHABLE}/hps", {}),
    "unknown_host": (["run"], f"storage: postgresql+psycopg://hps:{PW}@no-such-host.invalid/hps", {}),
    "old_scheme": (["run"], f"storage: postgres://hps:{PW}@{UNREACHABLE}/hps", {}),
    "pgpassword_env": (["run"], f"storage: postgresql+psycopg://hps@{UNREACHABLE}/hps", {"PGPASSWORD": PW}),
    "show": (["show", "--storage", f"postgresql+psycopg://hps:{PW}@{UNREACHABLE}/hps"], "", {}),
    "best": (["best", "--json", "--storage", f"postgresql+psycopg://hps:{PW}@{UNREACHABLE}/hps"], "", {}),
    "compare": (["compare", "--storage", f"postgresql+psycopg://hps:{PW}@{UNREACHABLE}/hps"], "", {}),
}


@pytest.mark.parametrize("case", sorted(FAILING))
def test_failing_run_never_prints_the_password(case: str, tmp_path: Path) -> None:
    args, storage_line, env = FAILING[case]
    (tmp_path / "obj.py").write_text(OBJ)
    path = tmp_path / "s.yaml"
    path.write_text(STUDY.replace("STORAGE", storage_line))
    cmd = [*args] if case == "compare" else [args[0], path, *args[1:]]
    res = run_cli(*cmd, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", **env}, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out[-3000:]
    assert len(res.stderr.splitlines()) == 1 and res.stderr.startswith("error: "), res.stderr[-3000:]
    assert "Traceback" not in out
    password = PW if case != "encoded_password" else PW + "@:/"
    assert not _secrets_in(out, password), out
    assert not list(tmp_path.glob("*.db")) and not (tmp_path / "hpsearch-artifacts").exists()


# ---------------------------------------------------------------- a real run, then grep the database

LEAKY = '''
import os
from urllib.parse import unquote, urlsplit

def f(params, ctx):
    # A trainer that echoes a URL with a password (its own data source, or the storage URL
    # it was handed) everywhere the manager stores trainer data: none of it may be kept.
    url = os.environ["HPS_TEST_URL"]
    pw = urlsplit(url).password  # as written in the URL (percent-encoded)
    ctx.set_user_attr("note", "fine")
    ctx.set_user_attr("echo", {"url": url, "password": [pw, unquote(pw)], url: "as a key"})
    ctx.set_user_attr("pw=" + unquote(pw), "a password in a key")
    (ctx.artifact_dir / f"log-{pw}.txt").write_text("an artifact named after the password")
    kind = ctx.trial_number % 3
    if kind == 0:
        raise RuntimeError("cannot reach " + url + " as " + unquote(pw))
    if kind == 1:
        return {"value": (params["x"] - 2) ** 2, "rows from " + url: 3}
    return {"value": "no number but " + url}  # a string metric: a failure that quotes it
'''


def _sqlite_text(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert {"study_user_attributes", "trial_user_attributes", "trial_system_attributes"} <= set(tables)
        return "\n".join(f"{t}: {con.execute(f'SELECT * FROM {t}').fetchall()}" for t in tables)
    finally:
        con.close()


def _assert_echoes_recorded(dump: str) -> None:
    """What LEAKY echoed reached the database: in attributes, metrics, failures, artifacts."""
    for shown in ("cannot reach", "'echo'", "pw=***", "rows from", "no number but", "log-***.txt"):
        assert shown in dump, shown


def _leaky_study(tmp_path: Path, storage: str, n_trials: int = 3) -> Path:
    (tmp_path / "leaky.py").write_text(LEAKY)
    path = tmp_path / "leaky.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: leaky
        objective: {{metric: value, direction: minimize}}
        sampler: {{name: random, seed: 0}}
        n_trials: {n_trials}
        max_failures: 100
        executor: local
        storage: "{storage}"
        search_space:
          x: {{type: float, low: 0, high: 10}}
        trainer: {{kind: python, function: "leaky.py:f"}}
    """))
    return path


def test_sqlite_run_stores_no_password_from_a_trial_error(tmp_path: Path) -> None:
    """A real study on SQLite: trial errors quoting a password URL are stored masked."""
    url = f"postgresql+psycopg://hps:{PW}@db.example:5432/hps"
    path = _leaky_study(tmp_path, f"sqlite:///{tmp_path / 'study.db'}")
    env = {"HPS_TEST_URL": url, "PGPASSWORD": PW}
    res = run_cli("run", path, cwd=tmp_path, env=env, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    shown = run_cli("show", path, "--limit", "0", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr[-3000:]
    dump = _sqlite_text(tmp_path / "study.db")
    assert "RuntimeError" in dump and "cannot reach" in dump  # the failures are recorded ...
    _assert_echoes_recorded(dump)  # ... and what the trainer echoed ...
    assert not _secrets_in(dump, PW), "password stored in the database"  # ... masked
    assert "hps:***@db.example" in dump
    assert not [p for p in tmp_path.rglob("*") if _secrets_in(p.name, PW)]  # no file named after it
    for out in (res, shown):
        assert not _secrets_in(out.stdout + out.stderr, PW)


@pytest.fixture
def secret_pg_db(pg_server: PgServer, pg_db: str) -> tuple[str, str]:  # noqa: F811
    """(database, password): pg_db owned by role hps_secret, which must give its password."""
    import secrets

    password = f"pw-{secrets.token_hex(8)}-@:/%"  # characters a URL must percent-encode
    if not pg_server.execute(f"SELECT 1 FROM pg_roles WHERE rolname = '{SECRET_ROLE}'"):
        pg_server.execute(f"CREATE ROLE {SECRET_ROLE} LOGIN")
    pg_server.execute(f"ALTER ROLE {SECRET_ROLE} PASSWORD '{password}'")
    pg_server.execute(f"ALTER DATABASE {pg_db} OWNER TO {SECRET_ROLE}")
    pg_server.execute(f"GRANT ALL ON SCHEMA public TO {SECRET_ROLE}", db=pg_db)
    return pg_db, password


@pytest.mark.postgres
def test_postgres_run_stores_and_shows_no_password(pg_server: PgServer, secret_pg_db: tuple[str, str],  # noqa: F811
                                                   tmp_path: Path) -> None:
    """Skips without PostgreSQL (fails under CI=true): grep every text column for the password."""
    db, password = secret_pg_db
    url = f"postgresql+psycopg://{SECRET_ROLE}:{quote(password, safe='')}@127.0.0.1:{pg_server.port}/{db}"
    path = _leaky_study(tmp_path, "${HPS_TEST_URL}")
    env = {"HPS_TEST_URL": url}

    wrong = run_cli("run", path, cwd=tmp_path, env={"HPS_TEST_URL": url.replace(quote(password, safe=""), "nope")})
    assert wrong.returncode == 2 and "password authentication failed" in wrong.stderr, wrong.stderr[-2000:]

    res = run_cli("run", path, cwd=tmp_path, env=env, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    outs = [res]
    for args in (["show", path, "--limit", "0"], ["best", path, "--json"], ["compare", "--storage", url, "--format", "json"]):
        out = run_cli(*args, cwd=tmp_path, env=env)
        assert out.returncode == 0, (args, out.stderr[:1500])
        outs.append(out)
    for out in outs:
        assert not _secrets_in(out.stdout + out.stderr, password), out.stdout + out.stderr

    # Every text column of every table (Optuna's schema: study/trial user and system attributes,
    # params, values, intermediate values, versions ...), read as the superuser.
    tables = [r[0] for r in pg_server.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", db=db)]
    assert {"study_user_attributes", "study_system_attributes", "trial_user_attributes",
            "trial_system_attributes"} <= set(tables)
    dump = "\n".join(f"{t}: {pg_server.execute(f'SELECT * FROM {t}', db=db)}" for t in tables)
    _assert_echoes_recorded(dump)
    assert not _secrets_in(dump, password), "password stored in the database"
    config = json.loads(pg_server.execute(
        "SELECT value_json FROM study_user_attributes WHERE key = 'hpsearch.config'", db=db)[0][0])
    assert f"{SECRET_ROLE}:***@127.0.0.1" in config
