"""Exposure: what listens, what runs code from a config, and which files get imported.

- A running ``hpsearch run`` on a private local Ray, and ``hpsearch dashboard``, listen on
  loopback only (every TCP listener of the process tree, read from /proc).
- The package never evals/execs config strings, loads YAML unsafely, unpickles files, or
  turns on ``trust_remote_code`` by itself (checked on the source's syntax tree).
- A trainer named ``obj.py:f`` (or ``obj:f``) imports that module and nothing else from its
  folder: trap modules beside it leave a ``PWNED-*`` marker if imported.
"""

from __future__ import annotations

import ast
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.services import require_module

PACKAGE = REPO / "hpsearch"
LOOPBACK = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}

# ---------------------------------------------------------------- sockets from /proc


def _children(pid: int) -> set[int]:
    """``pid`` and all its descendants (from /proc/*/stat parent ids)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(text.rsplit(")", 1)[1].split()[1])
    tree, grew = {pid}, True
    while grew:
        new = {p for p, pp in parents.items() if pp in tree} - tree
        tree |= new
        grew = bool(new)
    return tree


def _addr(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_addr)
    # /proc/net/tcp{,6} print each 32-bit word in host (little-endian) order.
    fixed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(fixed)


def tcp_listeners(pids: set[int]) -> list[tuple[int, str, str, int]]:
    """(pid, command, address, port) of every listening TCP socket of ``pids``."""
    listening: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A":  # LISTEN
                host, port = f[1].split(":")
                listening[f[9]] = (str(_addr(host)), int(port, 16))
    out = []
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in listening:
                host, port = listening[target[8:-1]]
                out.append((pid, cmd, host, port))
    return out


def _not_loopback(listeners: list[tuple[int, str, str, int]]) -> list[tuple[int, str, str, int]]:
    """Listeners reachable from other machines (``::ffff:127.0.0.1`` is loopback, ``::`` is not)."""
    def reachable(host: str) -> bool:
        ip = ipaddress.ip_address(host)
        ip = getattr(ip, "ipv4_mapped", None) or ip
        return ip not in LOOPBACK

    return [entry for entry in listeners if reachable(entry[2])]


def _wait_for(cond, timeout: float, proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"exited {proc.returncode} before {what}:\n{(out + err)[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            return proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.communicate()


def test_the_listener_check_sees_a_wildcard_bind() -> None:
    """The detector itself: /proc addresses decode, and a 0.0.0.0 listener is reported."""
    assert str(_addr("0100007F")) == "127.0.0.1" and str(_addr("00000000")) == "0.0.0.0"
    assert _addr("0000000000000000FFFF00000100007F") == ipaddress.ip_address("::ffff:127.0.0.1")
    assert str(_addr("00000000000000000000000001000000")) == "::1"
    with socket.socket() as wild, socket.socket() as local:
        wild.bind(("0.0.0.0", 0))
        wild.listen()
        local.bind(("127.0.0.1", 0))
        local.listen()
        found = tcp_listeners({os.getpid()})
        ports = {port: host for _, _, host, port in found}
        assert ports[wild.getsockname()[1]] == "0.0.0.0" and ports[local.getsockname()[1]] == "127.0.0.1"
        assert [p for *_, p in _not_loopback(found)] == [wild.getsockname()[1]]


# ---------------------------------------------------------------- trap modules

#: Modules a process might import late; a study folder holding a file of that name must
#: not shadow them, and nothing in the folder but the named trainer may be imported.
TRAPS = ("evil", "helpers", "utils", "data", "model", "ray", "pandas", "sklearn", "torch",
         "transformers", "datasets", "tokenizers", "rich", "psycopg", "psutil", "aiohttp",
         "grpc", "setproctitle", "optuna_dashboard", "sitecustomize", "usercustomize")
MARKER = "PWNED-"


def plant_traps(folder: Path) -> None:
    for name in TRAPS:
        (folder / f"{name}.py").write_text(
            f"from pathlib import Path\nPath(__file__).with_name('{MARKER}{name}').write_text('imported')\n"
        )


def markers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(f"{MARKER}*"))


TRAINER = '''
import os, time
from pathlib import Path

def f(params, ctx):
    here = Path(__file__).parent
    (here / f"started-{ctx.trial_number}").write_text(str(os.getpid()))
    deadline = time.monotonic() + float(os.environ.get("HPS_TEST_HOLD_S", "0"))
    while time.monotonic() < deadline and not (here / "release").exists():
        time.sleep(0.1)
    return (params["x"] - 2) ** 2
'''


def _study(folder: Path, *, function: str, executor: str, n_trials: int = 2) -> Path:
    (folder / "obj.py").write_text(TRAINER)
    path = folder / "study.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: exposure
        objective: {{metric: value, direction: minimize}}
        n_trials: {n_trials}
        executor: {executor}
        max_concurrent_trials: 1
        search_space:
          x: {{type: float, low: -10, high: 10}}
        trainer: {{kind: python, function: "{function}"}}
        resources: {{cpus: 0.5}}
    """))
    return path


def _entry_point() -> list[str]:
    """The installed ``hpsearch`` script, as a user runs it (no cwd on sys.path, unlike -m)."""
    script = Path(sys.executable).with_name("hpsearch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hpsearch"]


# ---------------------------------------------------------------- (a) Ray listens on loopback


@pytest.mark.ray
def test_ray_run_listens_on_loopback_only(tmp_path: Path) -> None:
    """While a trial runs on the private local Ray, no process of the run listens beyond 127.0.0.1."""
    plant_traps(tmp_path)
    path = _study(tmp_path, function="obj.py:f", executor="ray", n_trials=1)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HPSEARCH_STORAGE")}
    env.update(HPS_TEST_HOLD_S="600", RAY_USAGE_STATS_ENABLED="0")  # held until "release": a safety net
    proc = subprocess.Popen([*_entry_point(), "run", str(path), "-q"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_for(lambda: (tmp_path / "started-0").exists(), 240, proc, "the trial to start")
        time.sleep(1.0)  # let every Ray process finish binding
        tree = _children(proc.pid)
        worker = int((tmp_path / "started-0").read_text())
        assert worker in tree, "the trial's Ray worker should descend from the driver"
        listeners = tcp_listeners(tree)
        (tmp_path / "release").write_text("1")
        out, err = proc.communicate(timeout=180)
    finally:
        _stop(proc)
    assert proc.returncode == 0, (out + err)[-3000:]
    assert len(listeners) >= 2, f"expected Ray's GCS and raylet to listen: {listeners}"
    assert not _not_loopback(listeners), "\n".join(map(str, _not_loopback(listeners)))
    assert not markers(tmp_path), markers(tmp_path)


# ---------------------------------------------------------------- (a) the dashboard


def test_dashboard_listens_on_loopback_by_default(tmp_path: Path) -> None:
    require_module("optuna_dashboard", "pip install -e '.[dashboard]'")  # skips; fails under CI
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'd.db'}"
    optuna.create_study(study_name="d", storage=url).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    help_ = run_cli("dashboard", "--help", timeout=60)
    assert help_.returncode == 0, (help_.stdout + help_.stderr)[-2000:]
    proc = subprocess.Popen([*_entry_point(), "dashboard", "--storage", url, "--port", str(port)],
                            cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _wait_for(lambda: any(p == port for *_, p in tcp_listeners(_children(proc.pid))), 120, proc,
                  f"the dashboard to listen on port {port}")
        listeners = tcp_listeners(_children(proc.pid))
    finally:
        _stop(proc)
    assert listeners and not _not_loopback(listeners), listeners


# ---------------------------------------------------------------- (b) no code from config strings


def _py_files() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    return files


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _calls() -> list[tuple[str, int, str, ast.Call]]:
    out = []
    for path in _py_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                out.append((str(path.relative_to(REPO)), node.lineno, _dotted(node.func), node))
    return out


FORBIDDEN_CALLS = {
    "eval", "exec", "compile", "builtins.eval", "builtins.exec",
    "yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all",
    "pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads", "dill.load", "dill.loads",
    "marshal.loads", "shelve.open", "os.system", "os.popen", "joblib.load",
}
#: (file, call) allowed with a reason. The sklearn_search fit cache holds fitted estimators,
#: which only exist as pickles; it is read only from the study's own local checkpoint folder
#: (hpsearch-checkpoints/STUDY/cache/, never a remote URI), written by the study's own runs:
#: whoever can write there can already write the study's database and trainer code.
ALLOWED_CALLS = {("hpsearch/trainers/sklearn/_fitcache.py", "joblib.load")}


def test_no_eval_exec_unsafe_yaml_or_unpickling_in_the_package() -> None:
    bad = []
    for where, line, name, call in _calls():
        kwargs = {k.arg: k.value for k in call.keywords}
        if name in FORBIDDEN_CALLS and (str(where), name) not in ALLOWED_CALLS:
            bad.append(f"{where}:{line}: {name}(...)")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = kwargs.get("Loader") or (call.args[1] if len(call.args) > 1 else None)
            if loader is None or "Safe" not in _dotted(loader):
                bad.append(f"{where}:{line}: {name} without a SafeLoader")
        elif name == "torch.load":
            weights_only = kwargs.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                bad.append(f"{where}:{line}: torch.load without weights_only=True (unpickles code)")
        elif any(k == "shell" and isinstance(v, ast.Constant) and v.value is True for k, v in kwargs.items()):
            bad.append(f"{where}:{line}: {name}(..., shell=True)")
    for path in _py_files():
        text = path.read_text()
        for needle in ("yaml.Loader", "yaml.UnsafeLoader", "yaml.FullLoader", "Loader=Loader"):
            if needle in text:
                bad.append(f"{path.relative_to(REPO)}: uses {needle}")
    assert not bad, "\n".join(bad)


def test_the_one_yaml_loader_is_safe() -> None:
    import yaml

    from hpsearch.config._loading import _SafeLoader

    assert issubclass(_SafeLoader, yaml.SafeLoader)
    for tag in ("tag:yaml.org,2002:python/object/apply:", "tag:yaml.org,2002:python/name:"):
        assert tag not in _SafeLoader.yaml_multi_constructors


def test_trust_remote_code_only_from_the_study() -> None:
    """Every ``trust_remote_code=`` passes the setting; none is a literal; the default is False."""
    from hpsearch.trainers._text import TextClassificationSettings

    seen = []
    for where, line, name, call in _calls():
        for k in call.keywords:
            if k.arg == "trust_remote_code":
                seen.append(where)
                assert isinstance(k.value, ast.Attribute) and k.value.attr == "trust_remote_code", (
                    f"{where}:{line}: trust_remote_code must come from the study's setting, got {ast.unparse(k.value)}"
                )
                assert _dotted(k.value) in ("self.settings.trust_remote_code", "s.trust_remote_code", "settings.trust_remote_code"), (
                    f"{where}:{line}: {ast.unparse(k.value)}"
                )
    assert "hpsearch/trainers/_text.py" in seen
    assert TextClassificationSettings().trust_remote_code is False
    assert TextClassificationSettings.model_validate({"trust_remote_code": True}).trust_remote_code is True
    for path in _py_files():
        text = path.read_text().replace(" ", "")
        assert "trust_remote_code=True" not in text, path
        assert '"trust_remote_code":True' not in text and "'trust_remote_code':True" not in text, path


# ---------------------------------------------------------------- (c) trainers load only the named file


@pytest.mark.parametrize("function", ["obj.py:f", "obj:f"])
def test_trainer_imports_only_the_named_module(function: str, tmp_path: Path) -> None:
    """Run from inside the study folder, as a user would: traps beside obj.py stay untouched."""
    plant_traps(tmp_path)
    path = _study(tmp_path, function=function, executor="local")
    env = {k: v for k, v in os.environ.items() if k not in ("HPSEARCH_STORAGE",)}
    res = subprocess.run([*_entry_point(), "run", str(path), "-q"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=180, check=False)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert (tmp_path / "started-0").exists() and (tmp_path / "started-1").exists()
    assert not markers(tmp_path), markers(tmp_path)
    # Showing the results (pandas, rich) from that folder imports none of them either.
    shown = subprocess.run([*_entry_point(), "show", str(path)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120, check=False)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert not markers(tmp_path), markers(tmp_path)


def test_trainer_named_in_another_folder_imports_nothing_beside_the_study(tmp_path: Path) -> None:
    study_dir, code_dir = tmp_path / "study", tmp_path / "code"
    study_dir.mkdir()
    code_dir.mkdir()
    plant_traps(study_dir)
    plant_traps(code_dir)
    path = _study(study_dir, function=f"{code_dir / 'obj.py'}:f", executor="local")
    (code_dir / "obj.py").write_text(TRAINER)
    (study_dir / "obj.py").write_text("raise RuntimeError('the wrong obj.py was imported')\n")
    res = subprocess.run([*_entry_point(), "run", str(path), "-q"], cwd=study_dir, capture_output=True,
                         text=True, timeout=180, check=False)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert (code_dir / "started-0").exists()
    assert not markers(tmp_path), markers(tmp_path)
