"""kill -9 the driver, re-run, check the study.

Used by tests/reliability/test_kill_driver.py and runnable for the README's
reliability table::

    python -m tests.reliability.kill_loop --kind grid --kills 10
    python -m tests.reliability.kill_loop --kind tpe --kills 10
    python -m tests.reliability.kill_loop --kind ddp --kills 10
    python -m tests.reliability.kill_loop --kind ray --kills 2
    python -m tests.reliability.kill_loop --kind ckpt --kills 5

``grid`` and ``tpe`` run on the local executor and are killed at a random
point after a run has created its first trial; ``ddp`` runs 2 Ray Train ranks
per trial. ``ray`` is TPE on the default executor (a private local Ray), killed
at a fixed point: the third trial a run starts blocks (its trainer waits while
the file ``hold`` asks it to) and the driver is killed once that trial has
started, so every kill lands while trials run on Ray, whatever the machine's load.
``ckpt`` is TPE on the local executor with a trainer that checkpoints after each
of its 6 epochs: every re-run of an orphan must resume from its last checkpoint.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

OBJ = '''
import json, os, time
from pathlib import Path
from hpsearch.trainers import TrialPruned

def grid(params):
    time.sleep(0.15)
    return params["a"] * 10 + params["b"]

def tpe(params, ctx):
    for step in range(1, 4):
        time.sleep(0.05)
        ctx.report(params["x"] * step, step)
        if ctx.should_prune():
            raise TrialPruned()
    return params["x"]

def held(params, ctx):
    # Log the start; then, if this is the Nth start or later (N in the file "hold"),
    # wait until the test removes "hold" (it kills the driver first).
    here = Path(__file__).parent
    with open(here / "started.txt", "a") as fh:
        fh.write(json.dumps(params, sort_keys=True) + "\\n")
    n = len((here / "started.txt").read_text().splitlines())
    deadline = time.monotonic() + 300  # never outlive a crashed test by long
    while time.monotonic() < deadline:
        try:
            if n < int((here / "hold").read_text()):
                break
        except (OSError, ValueError):
            break
        time.sleep(0.05)
    return tpe(params, ctx)

def epochs(params, ctx):
    # 6 epochs of 0.1 s, a checkpoint after each report: a kill loses at most the epoch in progress.
    state = ctx.load_checkpoint() or {"epoch": 0, "score": 0.0}
    for epoch in range(state["epoch"] + 1, 7):
        time.sleep(0.1)
        state = {"epoch": epoch, "score": state["score"] + params["x"]}
        ctx.report(state["score"], epoch)
        ctx.save_checkpoint(state, epoch)
        if ctx.should_prune():
            raise TrialPruned()
    return state["score"]

def ddp(params, ctx):
    import torch, torch.distributed as dist
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
    opt = torch.optim.Adam(model.parameters(), lr=params["lr"])
    x = torch.randn(32, 4)
    for epoch in range(1, 3):
        loss = model(x).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        ctx.report(-float(loss), epoch)
        if ctx.should_prune():
            raise TrialPruned()
    return -float(loss)
'''

STUDIES = {
    "grid": (
        """
name: kill-grid
objective: {metric: value, direction: maximize}
sampler: {name: grid, seed: 0}
executor: local
max_concurrent_trials: 2
search_space: {a: [0, 1, 2, 3], b: [0, 1, 2]}
trainer: {kind: python, function: "obj.py:grid"}
""",
        12,
        (0.0, 1.0),
    ),
    "tpe": (
        """
name: kill-tpe
objective: {metric: value, direction: maximize}
sampler: {name: tpe, seed: 0, options: {n_startup_trials: 3}}
pruner: {name: median, options: {n_startup_trials: 3}}
n_trials: 15
executor: local
max_concurrent_trials: 2
search_space: {x: {type: float, low: 0, high: 1}}
trainer: {kind: python, function: "obj.py:tpe"}
""",
        15,
        (0.0, 1.0),
    ),
    "ddp": (
        """
name: kill-ddp
objective: {metric: value, direction: maximize}
sampler: {name: random, seed: 0}
n_trials: 2
resources: {cpus: 0.9, workers: 2}
search_space: {lr: {type: float, low: 0.001, high: 0.1, log: true}}
trainer: {kind: python, function: "obj.py:ddp"}
""",
        2,
        (0.0, 20.0),
    ),
    "ckpt": (
        """
name: kill-ckpt
objective: {metric: value, direction: maximize}
sampler: {name: tpe, seed: 0, options: {n_startup_trials: 3}}
n_trials: 8
executor: local
max_concurrent_trials: 2
search_space: {x: {type: float, low: 0, high: 1}}
trainer: {kind: python, function: "obj.py:epochs"}
""",
        8,
        (0.0, 2.0),
    ),
    "ray": (
        """
name: kill-ray
objective: {metric: value, direction: maximize}
sampler: {name: tpe, seed: 0, options: {n_startup_trials: 3}}
pruner: {name: median, options: {n_startup_trials: 3}}
n_trials: 6
max_concurrent_trials: 2
search_space: {x: {type: float, low: 0, high: 1}}
trainer: {kind: python, function: "obj.py:held"}
""",
        6,
        None,  # killed at a fixed point, not after a random delay
    ),
}
#: In the ``ray`` kind, the start (counted within one run) that blocks until the kill.
HELD_START = 3
#: How long to wait for a run to reach its kill point (Ray's cold start included).
START_TIMEOUT_S = 180.0


def _start(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "-q"], cwd=path.parent,
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _n_trials(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


def _session(sid: int) -> dict[int, str]:
    """Live (not zombie) processes of session ``sid``: pid -> command line."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[3]) == sid:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    found[int(entry)] = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    return found


def _kill(proc: subprocess.Popen[bytes]) -> set[str]:
    """SIGKILL the driver's process group; the private Ray folders it used."""
    ray_dirs = {m for cmd in _session(proc.pid).values() for m in re.findall(r"/tmp/hps-ray-[^/\s]+", cmd)}
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return ray_dirs


def _gone(sessions: list[int], ray_dirs: set[str]) -> None:
    """Nothing of the killed drivers' sessions lives on; then remove their Ray folders.

    Ray's workers sit in process groups of their own but in the driver's
    session: they must die with the raylet, or the kill leaked a Ray.
    """
    deadline = time.monotonic() + 60
    while (left := [c for s in sessions for c in _session(s).values()]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"still running after kill -9 of the driver's group: {left[:3]}"
    for d in ray_dirs:  # the private Ray's files: nobody else uses them
        shutil.rmtree(d, ignore_errors=True)


def _params(t: Any) -> dict[str, Any]:
    """A trial's params; for a queued retry killed before writing them, the ones it was queued with."""
    return dict(t.params) or dict(t.system_attrs.get("fixed_params") or {})


def check_orphans_first(db: Path, starts: list[datetime.datetime]) -> dict[str, int]:
    """Each run began with the params of the orphans left by the runs before it, in order.

    ``starts[i]`` is when run ``i`` was started (runs never overlap). The
    orphans left by run ``i`` (trials it started, found RUNNING by a later run
    and marked FAIL "orphaned") are queued in trial-number order behind those
    still queued; each later run's first trials (by start time) must carry
    exactly the queue's head, and the queue must be empty at the end. An
    orphan without params (killed inside its ask: it never ran) is not queued:
    no trial is a retry of it and, in a grid, it holds no grid point.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{db}"
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    grid = any("grid_id" in t.system_attrs for t in trials)
    bounds = [*starts[1:], datetime.datetime.max]
    queue: list[tuple[int, dict[str, Any]]] = []
    first = 0
    for run, end in enumerate(bounds):
        mine = sorted(
            (t for t in trials if t.datetime_start is not None and starts[run] <= t.datetime_start < end),
            key=lambda t: (t.datetime_start, t.number),
        )
        ran = [(t.number, _params(t)) for t in mine if _params(t)]
        k = min(len(queue), len(ran))
        assert [p for _, p in ran[:k]] == [p for _, p in queue[:k]], (
            f"run {run} started {ran[:k]} first, but the orphans queued were {queue[:k]}"
        )
        first += k
        queue = queue[k:]
        orphans = sorted((t for t in mine if t.user_attrs.get("fail_reason") == "orphaned"), key=lambda t: t.number)
        queue += [(t.number, _params(t)) for t in orphans if _params(t)]
    assert not queue, f"orphans never run again: {queue}"
    bare = [t for t in trials if t.user_attrs.get("fail_reason") == "orphaned" and not _params(t)]
    for t in bare:
        assert "grid_id" not in t.system_attrs, f"orphan {t.number} without params holds a grid point"
        again = [r.number for r in trials if r.user_attrs.get("hpsearch.retry_of") == t.number]
        assert not again, f"orphan {t.number} without params was queued again as {again}"
    if not grid:
        for t in trials:
            if t.user_attrs.get("fail_reason") == "orphaned" and _params(t):
                retries = [r for r in trials if r.user_attrs.get("hpsearch.retry_of") == t.number]
                assert [_params(r) for r in retries] == [_params(t)], (
                    f"orphan {t.number} {_params(t)} was queued as {[(r.number, _params(r)) for r in retries]}"
                )
    return {"retried_first": first, "orphans_without_params": len(bare)}


def check_resumed(db: Path) -> dict[str, object]:
    """Each re-run of an orphan resumed from its last checkpoint: at most one epoch's work was repeated.

    The lost work of an orphan is its last stored epoch (carried-over ones count) less the
    step its re-run resumed from (a re-run without ``resumed_from`` lost every epoch the
    orphan had stored). Each
    COMPLETE trial holds the whole curve, epochs 1 to 6, carried-over epochs included.
    """
    import optuna

    storage = f"sqlite:///{db}"
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    lost = []
    for t in trials:
        source = t.user_attrs.get("hpsearch.retry_of")
        if source is None:
            continue
        before = max(trials[source].intermediate_values, default=0)
        resumed = t.user_attrs.get("resumed_from")
        if resumed is not None:
            assert resumed["trial"] in _chain(trials, source), f"trial {t.number} resumed from {resumed}"
        lost.append(before - (resumed["step"] if resumed else 0))
    assert all(n <= 1 for n in lost), f"epochs repeated per re-run: {lost}"
    for t in trials:
        if t.state.name == "COMPLETE":
            assert sorted(t.intermediate_values) == list(range(1, 7)), f"trial {t.number}: {t.intermediate_values}"
    return {"reruns": len(lost), "max_epochs_repeated": max(lost, default=0)}


def _chain(trials: list[Any], n: int) -> set[int]:
    """Trial ``n`` and the trials it re-ran, back to the first."""
    out = set()
    while n is not None and n not in out:
        out.add(n)
        n = trials[n].user_attrs.get("hpsearch.retry_of")
    return out


def check(db: Path, kind: str, n_trials: int, starts: list[datetime.datetime]) -> dict[str, object]:
    """The study's invariants; raises AssertionError with what broke."""
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", "integrity_check failed"
        fk = con.execute("PRAGMA foreign_key_check").fetchall()
        assert not fk, f"foreign keys: {fk[:3]}"
        states = Counter(s for (s,) in con.execute("SELECT state FROM trials"))
        assert states.get("RUNNING", 0) == 0 and states.get("WAITING", 0) == 0, f"left over: {states}"
        done = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
        assert done == n_trials, f"{done} finished trials, wanted {n_trials}: {dict(states)}"
        reasons = Counter(
            json.loads(v) for (v,) in con.execute(
                "SELECT a.value_json FROM trial_user_attributes a JOIN trials t USING (trial_id) "
                "WHERE t.state = 'FAIL' AND a.key = 'fail_reason'"
            )
        )
        assert sum(reasons.values()) == states.get("FAIL", 0), "a FAIL trial without its reason"
        assert set(reasons) <= {"orphaned"}, f"unexpected failures: {reasons}"
        no_value = con.execute(
            "SELECT COUNT(*) FROM trials t LEFT JOIN trial_values v USING (trial_id) "
            "WHERE t.state = 'COMPLETE' AND v.value IS NULL"
        ).fetchone()[0]
        assert no_value == 0, "a COMPLETE trial without its value"
        if kind == "grid":
            # group_concat's order is undefined without the ordered subquery.
            points = [
                p for (p,) in con.execute(
                    "SELECT group_concat(param_name || '=' || param_value, ',') FROM ("
                    " SELECT p.trial_id, p.param_name, p.param_value FROM trials t"
                    " JOIN trial_params p USING (trial_id) WHERE t.state = 'COMPLETE'"
                    " ORDER BY p.trial_id, p.param_name) GROUP BY trial_id"
                )
            ]
            dup = [p for p, c in Counter(points).items() if c > 1]
            assert not dup, f"grid points run twice: {dup}"
            assert len(points) == n_trials, f"{len(points)} grid points, wanted {n_trials}"
        summary: dict[str, object] = {"states": dict(states), "orphans": reasons.get("orphaned", 0)}
        summary.update(check_orphans_first(db, starts))
        if kind == "ckpt":
            summary.update(check_resumed(db))
        return summary
    finally:
        con.close()


def kill_loop(kind: str, kills: int, workdir: Path, seed: int = 0) -> dict[str, object]:
    """Start and kill -9 ``kills`` runs of one study, run it to the end, :func:`check` it."""
    text, n_trials, delay = STUDIES[kind]
    (workdir / "obj.py").write_text(textwrap.dedent(OBJ))
    path = workdir / f"{kind}.yaml"
    path.write_text(textwrap.dedent(text))
    rng = random.Random(seed)
    killed = 0
    db = workdir / "hpsearch.db"
    started, hold = workdir / "started.txt", workdir / "hold"
    starts: list[datetime.datetime] = []
    sessions: list[int] = []
    ray_dirs: set[str] = set()
    for _ in range(kills):
        before = _n_trials(db)
        target = _lines(started) + HELD_START
        if delay is None:
            tmp = workdir / "hold.tmp"
            tmp.write_text(str(target))
            tmp.replace(hold)  # atomic: a trainer never reads half a number
        starts.append(datetime.datetime.now())
        proc = _start(path)
        deadline = time.monotonic() + START_TIMEOUT_S
        if delay is None:
            # The held trial has started: it is running on Ray right now.
            while proc.poll() is None and _lines(started) < target and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            # A random point after this run started working on trials
            # (ask, a running trial, tell), not while Python is still importing.
            while proc.poll() is None and _n_trials(db) <= before and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(*delay))
        if proc.poll() is None:
            ray_dirs |= _kill(proc)
            sessions.append(proc.pid)
            killed += 1
        else:
            proc.wait(timeout=60)
    hold.unlink(missing_ok=True)
    starts.append(datetime.datetime.now())
    proc = _start(path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    _gone(sessions, ray_dirs)
    summary = check(db, kind, n_trials, starts)
    summary["kills"] = killed
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", choices=sorted(STUDIES), required=True)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--runs", type=int, default=1, help="independent loops, each on a fresh study")
    args = ap.parse_args()
    passed = 0
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix=f"hps-kill-{args.kind}-") as tmp:
            try:
                summary = kill_loop(args.kind, args.kills, Path(tmp), seed=run)
                passed += 1
                print(f"run {run}: ok {summary}", flush=True)
            except AssertionError as e:
                print(f"run {run}: FAILED {e}", flush=True)
    print(f"{args.kind}: {passed}/{args.runs} runs passed, {args.kills} kills each")
    sys.exit(0 if passed == args.runs else 1)


if __name__ == "__main__":
    main()
