"""The bad-input corpus through the real CLI: every broken study is refused the same way.

``bad_studies/*.yaml`` holds one malformed study per failure; its first line is
``# expect: <fragment>``, the field path and message the error must name. A few
more cases (a 50 MB file, binary garbage, a directory, a pipe, ...) are made
here at test time. For every case ``hpsearch run FILE`` must exit 2 with exactly
one line on stderr, ``error: FILE: ...`` holding the fragment, no traceback, no
password, nothing written next to the study (an existing database keeps its
bytes and mtime), and no code run (trap modules that leave a ``PWNED-*`` marker
when imported sit beside every study).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import stat
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import quadratic_study, run_cli

# The first test's setup runs every selected case (about 130 interpreters; a minute on two
# idle cores, several on a loaded machine): give it more than the suite's default.
pytestmark = pytest.mark.timeout(1500)

CORPUS = Path(__file__).with_name("bad_studies")
#: Stands for every password in the corpus (``__SECRET__``); it must never be printed.
SECRET = "Hps-Sekr3t-9f2c"
#: Stands for the study's folder (``__TMP__``), for absolute paths in storage URLs.
TMP = "__TMP__"
MARKER = "PWNED-"

#: Files beside every study. Importing pwn.py or evil.py leaves a marker; nothing may.
HELPERS: dict[str, str] = {
    "obj.py": (
        "def quadratic(params):\n    return (params['x'] - 2) ** 2\n\n"
        "def three(a, b, c):\n    return 0.0\n\nCONSTANT = 3\n"
    ),
    "boom_on_import.py": "raise RuntimeError('boom at import')\n",
    "pwn.py": (
        "from pathlib import Path\nPath(__file__).with_name('PWNED-pwn-imported').write_text('1')\n"
        "x = 1\n\nclass Evil:\n    pass\n"
    ),
    "evil.py": "from pathlib import Path\nPath(__file__).with_name('PWNED-evil-imported').write_text('1')\n",
    "notes.db": "these are my notes, not a database\n",
    "small.csv": "a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n",
}
HELPER_DIRS = ("dbdir.db", "data_dir.csv")

GOOD = quadratic_study()


def corpus() -> dict[str, tuple[str, str]]:
    """name -> (expected fragment, study text) for every committed case."""
    out = {}
    for path in sorted(CORPUS.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        first, _, _ = text.partition("\n")
        assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <fragment>'"
        out[path.stem] = (first.removeprefix("# expect: ").strip(), text)
    return out


CASES = corpus()


def make_study_dir(root: Path) -> Path:
    """A study folder holding the helper files (and the garbage CSV)."""
    study = root / "study"
    study.mkdir()
    for name, content in HELPERS.items():
        (study / name).write_text(content)
    for name in HELPER_DIRS:
        (study / name).mkdir()
    rng = random.Random(7)
    (study / "garbage.csv").write_bytes(bytes(rng.randrange(256) for _ in range(4096)) + b"\x00\x00,\x00\n")
    return study


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """path -> (mode, mtime_ns, sha256) of everything under ``folder`` but bytecode caches."""
    out: dict[str, tuple[int, int, str]] = {}
    for p in sorted(folder.rglob("*")):
        if "__pycache__" in p.parts:
            continue
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
        out[str(p.relative_to(folder))] = (stat.S_IFMT(st.st_mode), st.st_mtime_ns, digest)
    return out


def cli_env(root: Path) -> dict[str, str]:
    """Offline, an empty HF cache, and none of the variables a case expects to be unset."""
    hf = root / "hf-home"
    hf.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HPS_TEST_UNSET") and k not in ("HPSEARCH_STORAGE", "RAY_ADDRESS")}
    env.update(HF_HOME=str(hf), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


@dataclass
class Outcome:
    """One CLI run on a bad study, and what it left behind."""

    root: Path
    path: Path
    expect: str
    res: subprocess.CompletedProcess[str]
    written: list[str]
    markers: list[str]


def refuse(root: Path, study: Path, path: Path, expect: str) -> Outcome:
    """Run ``hpsearch run path`` in ``study`` and record its output and any files it touched."""
    before = snapshot(study)
    res = run_cli("run", path, cwd=study, env=cli_env(root), timeout=120)
    after = snapshot(study)
    written = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    markers = sorted(str(p) for p in root.rglob(f"{MARKER}*"))
    return Outcome(root, path, expect, res, written, markers)


def check(o: Outcome) -> None:
    """Exit 2, one line ``error: FILE: ...`` naming the field, no traceback, nothing written."""
    out = o.res.stdout + o.res.stderr
    assert o.res.returncode == 2, f"exit {o.res.returncode}, want 2:\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    lines = o.res.stderr.splitlines()
    assert len(lines) == 1, f"want exactly one line on stderr, got {len(lines)}:\n{o.res.stderr[-3000:]}"
    assert o.res.stdout == "", o.res.stdout[-2000:]
    line = lines[0]
    assert line.startswith(f"error: {o.path}: "), line
    assert o.expect in line, f"want {o.expect!r} in:\n{line}"
    assert SECRET not in out, line
    assert not o.written, f"files created or changed: {o.written}"
    assert not o.markers, f"code from the study file or its folder ran: {o.markers}"


# Each run is a fresh interpreter (0.4-8 s, mostly imports); the selected cases run
# concurrently once per module, and each test checks its own outcome.
Setup = Callable[[Path], tuple[Path, Path, str]]  # root -> (study folder, study file, fragment)
SETUPS: dict[str, Setup] = {}


def _corpus_setup(name: str) -> Setup:
    def setup(root: Path) -> tuple[Path, Path, str]:
        expect, text = CASES[name]
        study = make_study_dir(root)
        path = study / f"{name}.yaml"
        path.write_text(text.replace(TMP, str(study)).replace("__SECRET__", SECRET))
        return study, path, expect.replace(TMP, str(study))

    return setup


#: Every case's outcome, computed once per process: under pytest-xdist a worker may run this
#: module's tests between other modules' tests, and pytest then sets a module fixture up again.
_OUTCOMES: dict[str, Outcome] = {}


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    if not _OUTCOMES:
        _OUTCOMES.update(_run_cases(request, tmp_path_factory))
    return _OUTCOMES


def _run_cases(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    ids = [item.callspec.params["case"] for item in request.session.items
           if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params]
    needs_db = any(i.startswith("existing/") for i in ids)
    db = _make_existing_db(tmp_path_factory) if needs_db else None

    def one(case_id: str) -> tuple[str, Outcome]:
        root = tmp_path_factory.mktemp(case_id.replace("/", "-"))
        study, path, expect = SETUPS[case_id](root)
        if case_id.startswith("existing/"):
            assert db is not None
            for src in db.parent.glob("hpsearch.db*"):
                shutil.copy2(src, study / src.name)
        return case_id, refuse(root, study, path, expect)

    workers = min(8, (os.cpu_count() or 2) + 1)
    with ThreadPoolExecutor(workers) as pool:
        return dict(pool.map(one, dict.fromkeys(ids)))


for _name in CASES:
    SETUPS[f"corpus/{_name}"] = _corpus_setup(_name)


@pytest.mark.parametrize("case", [f"corpus/{n}" for n in sorted(CASES)])
def test_corpus_case_is_refused(case: str, outcomes: dict[str, Outcome]) -> None:
    check(outcomes[case])


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert all(expect for expect, _ in CASES.values())


# ---------------------------------------------------------------- made at test time


def _big(study: Path) -> tuple[Path, str]:
    path = study / "big.yaml"
    with open(path, "w") as fh:
        fh.write(GOOD)
        fh.writelines(["# " + "x" * 1021 + "\n"] * (50 * 1024))
    assert path.stat().st_size >= 50 * 1024 * 1024
    return path, "a study file must be under"


def _garbage(study: Path) -> tuple[Path, str]:
    path = study / "garbage.yaml"
    path.write_bytes(bytes(random.Random(3).randrange(256) for _ in range(8192)) + b"\x00\xff\xfe")
    return path, "not UTF-8 text"


def _nul(study: Path) -> tuple[Path, str]:
    path = study / "nul.yaml"
    path.write_bytes(GOOD.encode() + b"\x00\x00\x00description: x\n")
    return path, "holds binary data"


def _latin1(study: Path) -> tuple[Path, str]:
    path = study / "latin1.yaml"
    path.write_bytes(GOOD.encode() + "description: caf\xe9 cr\xe8me\n".encode("latin-1"))
    return path, "not UTF-8 text"


def _directory(study: Path) -> tuple[Path, str]:
    path = study / "folder.yaml"
    path.mkdir()
    (path / "study.yaml").write_text(GOOD)
    return path, "is a directory"


def _missing(study: Path) -> tuple[Path, str]:
    return study / "no_such_study.yaml", "no such file"


def _fifo(study: Path) -> tuple[Path, str]:
    path = study / "pipe.yaml"
    os.mkfifo(path)  # reading it would block forever
    return path, "not a regular file"


def _dev_zero(study: Path) -> tuple[Path, str]:
    return Path("/dev/zero"), "not a regular file"  # reading it would never end


def _broken_symlink(study: Path) -> tuple[Path, str]:
    path = study / "link.yaml"
    path.symlink_to(study / "gone.yaml")
    return path, "no such file"


GENERATED: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "file_50mb": _big,
    "binary_garbage": _garbage,
    "nul_bytes": _nul,
    "not_utf8": _latin1,
    "directory": _directory,
    "missing": _missing,
    "fifo": _fifo,
    "dev_zero": _dev_zero,
    "broken_symlink": _broken_symlink,
}


def _generated_setup(make: Callable[[Path], tuple[Path, str]]) -> Setup:
    def setup(root: Path) -> tuple[Path, Path, str]:
        study = make_study_dir(root)
        path, expect = make(study)
        return study, path, expect

    return setup


for _name, _make in GENERATED.items():
    SETUPS[f"generated/{_name}"] = _generated_setup(_make)


@pytest.mark.parametrize("case", [f"generated/{n}" for n in sorted(GENERATED)])
def test_generated_case_is_refused(case: str, outcomes: dict[str, Outcome]) -> None:
    check(outcomes[case])


# ---------------------------------------------------------------- an existing database


def _make_existing_db(factory: pytest.TempPathFactory) -> Path:
    """A real database from a good run of study ``s``."""
    root = factory.mktemp("existing-db")
    study = make_study_dir(root)
    (study / "good.yaml").write_text(GOOD)
    res = run_cli("run", study / "good.yaml", "-q", cwd=study, env=cli_env(root), timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    return study / "hpsearch.db"


#: One case per kind of failure, run again beside a database that already holds study ``s``
#: (each would use ``hpsearch.db`` beside the study file): its bytes and mtime must not change.
EXISTING = [
    "yaml_duplicate_key",
    "tag_python_object_apply",
    "range_low_gt_high",
    "unknown_pruner",
    "grid_float_without_step",
    "trainer_module_raises_on_import",
    "sklearn_csv_binary_garbage",
    "range_workers_local_executor",
]
for _name in EXISTING:
    assert "storage:" not in CASES[_name][1], _name
    SETUPS[f"existing/{_name}"] = _corpus_setup(_name)


@pytest.mark.parametrize("case", [f"existing/{n}" for n in EXISTING])
def test_existing_database_is_untouched(case: str, outcomes: dict[str, Outcome]) -> None:
    o = outcomes[case]
    assert (o.path.parent / "hpsearch.db").stat().st_size > 0
    check(o)  # the snapshot covers hpsearch.db: same bytes, same mtime, no -wal/-shm created
