"""`hpsearch dashboard` changes nothing: not a byte of an artifact, not a row of the database.

Three independent layers, each tested: the HTTP guard (only GET and HEAD reach
optuna-dashboard), the read-only artifact store (write/remove raise) and the
read-only storage (read-only connections). On PostgreSQL, compose's dashboard
connects as a role that can only SELECT; the same init script that compose
mounts is run here for real.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, run_cli
from tests.dashboard.helpers import dashboard
from tests.services import PgServer, missing, pg_db, pg_server, pg_url  # noqa: F401 - fixtures

INIT_SCRIPT = REPO / "docker" / "postgres-init" / "10-readonly-role.sh"

ARTS = '''
import json

def fit(params, ctx):
    # Two files per trial; the manager stores each as an Optuna artifact.
    (ctx.artifact_dir / "curve.json").write_text(json.dumps({"x": params["x"], "trial": ctx.trial_number}))
    (ctx.artifact_dir / "notes.txt").write_text(f"trial {ctx.trial_number} x={params['x']}")
    return (params["x"] - 1) ** 2
'''

STUDY = """
name: arts
objective: {direction: minimize}
sampler: {name: random, seed: 0}
n_trials: 3
search_space:
  x: {type: float, low: -5, high: 5}
trainer: {kind: python, function: "arts.py:fit"}
executor: local
"""

Snapshot = tuple[dict[str, str], list[str]]


def _snapshot(tmp_path: Path) -> Snapshot:
    """sha256 of every file under the artifact folder, and the whole SQLite database as sorted SQL."""
    root = tmp_path / "hpsearch-artifacts"
    files = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(root.rglob("*")) if p.is_file()}
    con = sqlite3.connect(f"file:{tmp_path / 'hpsearch.db'}?mode=ro", uri=True)
    try:
        dump = sorted(con.iterdump())
    finally:
        con.close()
    return files, dump


def _diff(before: Snapshot, after: Snapshot) -> str:
    """What changed, in words ('' when nothing did)."""
    (f0, d0), (f1, d1) = before, after
    parts = []
    if gone := sorted(set(f0) - set(f1)):
        parts.append(f"{len(gone)} of {len(f0)} artifact files removed")
    if new := sorted(set(f1) - set(f0)):
        parts.append(f"{len(new)} artifact files added")
    if changed := [k for k in set(f0) & set(f1) if f0[k] != f1[k]]:
        parts.append(f"{len(changed)} artifact files rewritten")
    if d0 != d1:
        parts.append(f"database: {len(set(d0) - set(d1))} SQL lines gone, {len(set(d1) - set(d0))} new")
    return "; ".join(parts)


def _mutating_requests(sid: int, tid: int, aid: str, other_aid: str) -> list[tuple[str, str, Any]]:
    """Every mutating route of optuna-dashboard 0.21, with plausible bodies and real ids."""
    upload = {"file": "data:text/plain;base64," + base64.b64encode(b"planted").decode(), "filename": "planted.txt"}
    history = "0f0e0d0c-0b0a-4908-8706-050403020100"
    llm = {"user_query": "remove every failed trial"}
    return [
        # First: what the UI's "Delete study" sends (it removed the artifacts before hpsearch refused it).
        ("DELETE", f"/api/studies/{sid}", {"remove_associated_artifacts": True}),
        ("POST", "/api/studies", {"study_name": "planted", "directions": ["minimize"]}),
        ("POST", f"/api/studies/{sid}/rename", {"study_name": "renamed"}),
        ("PUT", f"/api/studies/{sid}/note", {"version": 1000, "body": "overwritten"}),
        ("POST", f"/api/studies/{sid}/preference", {"mode": "ChooseWorst", "candidates": [tid, tid + 1], "clicked": tid}),
        ("PUT", f"/api/studies/{sid}/preference_feedback_component", {"output_type": "note", "artifact_key": None}),
        ("DELETE", f"/api/studies/{sid}/preference/{history}", None),
        ("POST", f"/api/studies/{sid}/preference/{history}", None),
        ("POST", f"/api/trials/{tid}/tell", {"state": "Fail"}),
        ("POST", f"/api/trials/{tid}/user-attrs", {"user_attrs": {"planted": 1}}),
        ("POST", f"/api/studies/{sid}/{tid}/skip", None),
        ("PUT", f"/api/studies/{sid}/{tid}/note", {"version": 1000, "body": "overwritten"}),
        ("POST", f"/api/artifacts/{sid}/{tid}", upload),
        ("POST", f"/api/artifacts/{sid}", upload),  # writes the file before it touches the database
        ("DELETE", f"/api/artifacts/{sid}/{tid}/{aid}", None),
        ("DELETE", f"/api/artifacts/{sid}/{other_aid}", None),  # removes any artifact id, study's or trial's
        ("POST", "/incompatible-rdb-schema", b""),  # the schema-upgrade form
        ("POST", "/api/llm/trial_filter_query", llm),
        ("POST", "/api/llm/generate_plotly_graph_query", llm),
        ("POST", "/api/llm/re_generate_plotly_graph_query", {**llm, "previous_plotly_graph_query": "{}", "error_message": "x"}),
        ("PATCH", f"/api/studies/{sid}", {"study_name": "patched"}),  # no such route: refused all the same
    ]


def _real_ids(get_json: Callable[[str], Any], sid: int) -> tuple[int, str, str]:
    """A trial id, one of its artifact ids and another trial's, from the dashboard's own API."""
    trials = get_json(f"/api/studies/{sid}?after=0")["trials"]
    trial = next(t for t in trials if len(t["artifacts"]) >= 2)
    other = next(a["artifact_id"] for t in trials if t is not trial for a in t["artifacts"])
    return trial["trial_id"], trial["artifacts"][0]["artifact_id"], other


@pytest.fixture
def study_with_artifacts(write_study, tmp_path: Path) -> Path:
    path = write_study(STUDY, **{"arts.py": ARTS})
    res = run_cli("run", path, "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    files, _ = _snapshot(tmp_path)
    assert len(files) == 6, files  # 3 trials x 2 files
    return path


def test_no_http_request_changes_an_artifact_or_a_row(study_with_artifacts: Path, tmp_path: Path) -> None:
    before = _snapshot(tmp_path)
    answers, changes = [], []
    with dashboard(study_with_artifacts, cwd=tmp_path) as dash:
        sid = dash.study_id("arts")
        tid, aid, other_aid = _real_ids(dash.get_json, sid)
        last = before
        for method, path, body in _mutating_requests(sid, tid, aid, other_aid):
            status, text = dash.request(method, path, body)
            answers.append((method, path, status, text))
            now = _snapshot(tmp_path)
            if what := _diff(last, now):
                changes.append(f"{method} {path} -> {status}: {what}")
            last = now
        assert changes == [], "the dashboard changed data:\n" + "\n".join(changes)
        assert [a[:3] for a in answers if a[2] < 400] == [], "mutating requests not answered with an error"
        # The guard in front of optuna-dashboard answers them all, saying why.
        for method, path, status, text in answers:
            assert status == 403, (method, path, status, text[:300])
            assert json.loads(text)["reason"].startswith("hpsearch dashboard is read-only"), text
        # Still serving: the study, its trials, and an artifact byte for byte.
        assert dash.proc.poll() is None, dash.log.read_text()[-2000:]
        assert dash.study_id("arts") == sid
        assert len(dash.get_json(f"/api/studies/{sid}?after=0")["trials"]) == 3  # type: ignore[index]
        status, blob = dash.request("GET", f"/artifacts/{sid}/{tid}/{aid}")
        assert status == 200 and hashlib.sha256(blob).hexdigest() == before[0][aid]
        assert dash.request("HEAD", "/api/meta")[0] == 200
    assert _snapshot(tmp_path) == before


def _call_wsgi(app: Callable[..., Any], method: str, target: str, body: Any = None) -> tuple[int, bytes]:
    """One request straight into a WSGI app (no server); its status code and body."""
    from wsgiref.util import setup_testing_defaults

    path, _, query = target.partition("?")
    data = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                               "wsgi.input": io.BytesIO(data), "CONTENT_LENGTH": str(len(data)),
                               "CONTENT_TYPE": "application/json"}
    setup_testing_defaults(environ)
    status: list[str] = []
    out = app(environ, lambda s, headers, exc_info=None: status.append(s))
    try:
        blob = b"".join(out)
    finally:
        getattr(out, "close", lambda: None)()
    return int(status[0].split()[0]), blob


def test_inner_layers_hold_without_the_http_guard(study_with_artifacts: Path, tmp_path: Path) -> None:
    """optuna-dashboard's own app, on the read-only store and storage, with the guard taken off."""
    from hpsearch.views import ReadOnlyHTTP, build_app, resolve

    app = build_app(resolve(study_with_artifacts, None))
    assert isinstance(app, ReadOnlyHTTP)
    inner = app.app  # what the guard wraps: no method filter in front of it
    sid = 1
    tid, aid, other_aid = _real_ids(lambda p: json.loads(_call_wsgi(inner, "GET", p)[1]), sid)
    before = last = _snapshot(tmp_path)
    changes, statuses = [], {}
    for method, path, body in _mutating_requests(sid, tid, aid, other_aid):
        statuses[(method, path)] = _call_wsgi(inner, method, path, body)[0]
        now = _snapshot(tmp_path)
        if what := _diff(last, now):
            changes.append(f"{method} {path}: {what}")
        last = now
    assert changes == [], "\n".join(changes)
    assert _snapshot(tmp_path) == before
    # The reported case: the study delete now fails at the artifact store, before the storage.
    assert statuses[("DELETE", f"/api/studies/{sid}")] >= 500
    assert statuses[("POST", f"/api/artifacts/{sid}")] >= 500
    status, blob = _call_wsgi(inner, "GET", f"/artifacts/{sid}/{tid}/{aid}")
    assert status == 200 and hashlib.sha256(blob).hexdigest() == before[0][aid]


def test_readonly_artifact_store_reads_and_refuses_writes(study_with_artifacts: Path, tmp_path: Path) -> None:
    from hpsearch.views import ReadOnlyArtifactStore

    before, _ = _snapshot(tmp_path)
    store = ReadOnlyArtifactStore(tmp_path / "hpsearch-artifacts")
    aid = next(iter(before))
    with store.open_reader(aid) as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == before[aid]
    with pytest.raises(PermissionError, match="hpsearch dashboard is read-only"):
        store.remove(aid)
    with pytest.raises(PermissionError, match="hpsearch dashboard is read-only"):
        store.write(aid, io.BytesIO(b"overwritten"))
    with pytest.raises(PermissionError, match="hpsearch dashboard is read-only"):
        store.write("new-artifact", io.BytesIO(b"planted"))
    from optuna.artifacts.exceptions import ArtifactNotFound

    with pytest.raises(ArtifactNotFound):
        store.open_reader("no-such-artifact")
    assert _snapshot(tmp_path)[0] == before


# ------------------------------------------------------------------ PostgreSQL: compose's read-only role


def _run_init_script(
    pg_server: PgServer, db: str, role: str, password: str, *, owner: str = "postgres",  # noqa: F811
) -> subprocess.CompletedProcess[str]:
    """docker/postgres-init/10-readonly-role.sh, as the postgres image runs it, against ``db``."""
    psql_dir = pg_server.bin or os.path.dirname(shutil.which("psql") or "")
    if not psql_dir or not os.access(f"{psql_dir}/psql", os.X_OK):
        missing("psql is not installed (Debian's postgresql-client)")
    env = {**os.environ, "PATH": f"{psql_dir}:{os.environ.get('PATH', '')}", "PGHOST": "127.0.0.1",
           "PGPORT": str(pg_server.port), "POSTGRES_USER": owner, "POSTGRES_DB": db,
           "POSTGRES_READONLY_USER": role, "POSTGRES_READONLY_PASSWORD": password}
    env.pop("PGPASSWORD", None)
    return subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def readonly_role(pg_server: PgServer, pg_db: str) -> Iterator[tuple[str, str]]:  # noqa: F811
    """The compose init script run on a fresh database; yields (role, password); drops the role after."""
    role, password = f"hps_ro_{secrets.token_hex(4)}", f"pw-{secrets.token_hex(8)}"
    res = _run_init_script(pg_server, pg_db, role, password)
    assert res.returncode == 0, res.stderr
    try:
        yield role, password
    finally:
        pg_server.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        pg_server.execute(f'DROP OWNED BY "{role}"', db=pg_db)  # its grants and default privileges
        pg_server.execute(f'DROP ROLE "{role}"')


@pytest.mark.postgres
def test_compose_readonly_role_reads_and_cannot_write(
    write_study, tmp_path: Path, pg_server: PgServer, pg_db: str, pg_url: str, readonly_role: tuple[str, str],  # noqa: F811
) -> None:
    import psycopg
    from psycopg import errors

    from hpsearch.storage import open_readonly_storage

    role, password = readonly_role
    # The owner creates Optuna's tables after the script ran (as the compose runner does).
    path = write_study(STUDY, **{"arts.py": ARTS})
    res = run_cli("run", path, "-q", "--storage", pg_url, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    ro_url = pg_server.url_for(pg_db, user=role, password=password)
    dsn = ro_url.replace("+psycopg", "")
    with psycopg.connect(dsn, autocommit=True) as con:
        # Readable only through the default privileges: these tables did not exist when the script ran.
        assert con.execute("SELECT count(*) FROM trials").fetchone() == (3,)
        assert con.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        # Lift the session's read-only default: the grants alone must stop every write.
        con.execute("SET default_transaction_read_only = off")
        for sql in ("INSERT INTO studies (study_name) VALUES ('planted')",
                    "UPDATE trials SET state = 'FAIL'",
                    "DELETE FROM trial_values",
                    "TRUNCATE trials CASCADE",
                    "CREATE TABLE planted (x int)"):
            with pytest.raises(errors.InsufficientPrivilege):
                con.execute(sql)
    assert pg_server.execute("SELECT count(*), min(state::text) FROM trials", db=pg_db) == [(3, "COMPLETE")]
    assert pg_server.execute("SELECT study_name FROM studies", db=pg_db) == [("arts",)]
    # Re-running the script (an old volume) is harmless; the owner as "read-only" role is refused.
    assert _run_init_script(pg_server, pg_db, role, password).returncode == 0
    same = _run_init_script(pg_server, pg_db, "postgres", password)
    assert same.returncode != 0 and "must differ from POSTGRES_USER" in same.stderr

    show = run_cli("show", path, "--storage", ro_url, cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    assert "arts (3 trials)" in show.stdout and password not in show.stdout + show.stderr
    storage = open_readonly_storage(ro_url)
    try:
        assert len(storage.get_all_trials(storage.get_study_id_from_name("arts"))) == 3
    finally:
        storage.engine.dispose()

    with dashboard("--storage", ro_url, cwd=tmp_path) as dash:
        sid = dash.study_id("arts")
        assert len(dash.get_json(f"/api/studies/{sid}?after=0")["trials"]) == 3  # type: ignore[index]
        assert dash.request("DELETE", f"/api/studies/{sid}")[0] == 403
        assert password not in dash.log.read_text()
    assert pg_server.execute("SELECT count(*) FROM trials", db=pg_db) == [(3,)]
