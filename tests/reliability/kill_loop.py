"""kill -9 the driver at random points, re-run, check the study.

Used by tests/reliability/test_kill_driver.py and runnable for the README's
reliability table::

    python -m tests.reliability.kill_loop --kind grid --kills 10
    python -m tests.reliability.kill_loop --kind tpe --kills 10
    python -m tests.reliability.kill_loop --kind ddp --kills 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

OBJ = '''
import os, time
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
}


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


def check(db: Path, kind: str, n_trials: int) -> dict[str, object]:
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
            points = [
                tuple(r) for r in con.execute(
                    "SELECT group_concat(p.param_value, ',') FROM trials t JOIN trial_params p USING (trial_id) "
                    "WHERE t.state = 'COMPLETE' GROUP BY t.trial_id"
                )
            ]
            dup = [p for p, c in Counter(points).items() if c > 1]
            assert not dup, f"grid points run twice: {dup}"
        # Every orphan's params were run again later.
        orphans = con.execute(
            "SELECT t.number, t.trial_id FROM trials t JOIN trial_user_attributes a USING (trial_id) "
            "WHERE a.key = 'fail_reason' AND a.value_json = '\"orphaned\"'"
        ).fetchall()
        for number, trial_id in orphans:
            params = set(con.execute(
                "SELECT param_name, param_value FROM trial_params WHERE trial_id = ?", (trial_id,)
            ).fetchall())
            later = con.execute(
                "SELECT t.trial_id FROM trials t WHERE t.number > ? AND t.state IN ('COMPLETE','PRUNED')", (number,)
            ).fetchall()
            # A trial killed while its params were being written has only some of
            # them: its re-run holds those (for a grid, the same point).
            assert any(
                params <= set(con.execute(
                    "SELECT param_name, param_value FROM trial_params WHERE trial_id = ?", (tid,)
                ).fetchall())
                for (tid,) in later
            ), f"orphaned trial {number} was not retried"
        return {"states": dict(states), "orphans": len(orphans)}
    finally:
        con.close()


def kill_loop(kind: str, kills: int, workdir: Path, seed: int = 0) -> dict[str, object]:
    text, n_trials, (lo, hi) = STUDIES[kind]
    (workdir / "obj.py").write_text(textwrap.dedent(OBJ))
    path = workdir / f"{kind}.yaml"
    path.write_text(textwrap.dedent(text))
    rng = random.Random(seed)
    killed = 0
    db = workdir / "hpsearch.db"
    for _ in range(kills):
        before = _n_trials(db)
        proc = _start(path)
        # Kill at a random point after this run started working on trials
        # (ask, a running trial, tell), not while Python is still importing.
        deadline = time.monotonic() + 120
        while proc.poll() is None and _n_trials(db) <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(lo, hi))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
    proc = _start(path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    summary = check(workdir / "hpsearch.db", kind, n_trials)
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
                print(f"run {run}: ok {summary}")
            except AssertionError as e:
                print(f"run {run}: FAILED {e}")
    print(f"{args.kind}: {passed}/{args.runs} runs passed, {args.kills} kills each")
    sys.exit(0 if passed == args.runs else 1)


if __name__ == "__main__":
    main()
