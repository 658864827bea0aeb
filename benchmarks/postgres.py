"""PostgreSQL against SQLite: per-trial overhead, and 4 concurrent studies on one Postgres.

Trivial objective and study from ``benchmarks/overhead.py`` (TPE, seed 0, ``(x - 2) ** 2``),
run by hpsearch (executor ``local`` by default, so storage and the manager are what is
measured, not Ray), each run in a fresh interpreter:

  s   one study, SQLite file (WAL, synchronous=NORMAL)
  p   one study, PostgreSQL
  p4  4 studies at once, 4 driver processes, one PostgreSQL database

Usage::

    source .ci/services.sh   # or pass --pg-url; without either a throwaway cluster is started
    .venv/bin/python benchmarks/postgres.py [--trials 150] [--executor local|ray] [--write-readme]

Figures are steady s/trial ((last end - first start) / N, from the trial records). For p4,
*per study* is each study's own steady s/trial (median of the 4) and *aggregate* is the
wall span of all 4 studies' trials divided by all their trials.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from overhead import README, _steady, machine, write_study  # noqa: E402

START, END = "<!-- postgres:start -->", "<!-- postgres:end -->"


def worker(url: str, name: str, n: int, executor: str, out: Path) -> None:
    import optuna

    import hpsearch

    with tempfile.TemporaryDirectory(prefix="hps-pgb-", dir="/tmp") as d:
        study = write_study(Path(d), n)
        study.write_text(study.read_text().replace("name: overhead", f"name: {name}"))
        t0 = time.time()
        hpsearch.run_study(str(study), storage=url, executor=executor, progress=False)
        t1 = time.time()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name=name, storage=url).trials
    first, last = _steady(trials, n)
    out.write_text(json.dumps({"t0": t0, "t1": t1, "first": first, "last": last, "trials": len(trials),
                               "complete": sum(t.state.name == "COMPLETE" for t in trials)}))


def launch(url: str, name: str, n: int, executor: str) -> tuple[subprocess.Popen, Path]:
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--_worker", name, "--_url", url, "--_out", out,
         "--trials", str(n), "--executor", executor],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return proc, Path(out)


def collect(proc: subprocess.Popen, out: Path) -> dict:
    log, _ = proc.communicate()
    try:
        if proc.returncode != 0:
            raise SystemExit(f"benchmark worker failed (rc {proc.returncode}):\n{log[-3000:]}")
        res = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    res["steady"] = (res["last"] - res["first"]) / res["trials"]
    return res


def fresh_pg_db(pg_url: str) -> str:
    import psycopg

    name = f"hps_bench_{secrets.token_hex(4)}"
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    return pg_url.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=150)
    ap.add_argument("--executor", default="local", choices=["local", "ray"])
    ap.add_argument("--pg-url", default=os.environ.get("HPSEARCH_TEST_PG_URL"),
                    help="a PostgreSQL URL whose role may CREATE DATABASE (default: $HPSEARCH_TEST_PG_URL)")
    ap.add_argument("--write-readme", action="store_true")
    ap.add_argument("--_worker")
    ap.add_argument("--_url")
    ap.add_argument("--_out")
    args = ap.parse_args()
    if args._worker:
        worker(args._url, args._worker, args.trials, args.executor, Path(args._out))
        return

    stop = None
    if not args.pg_url:
        from tests.services import _as_owner, _start_own

        server = _start_own()
        if server is None:
            raise SystemExit("no PostgreSQL: pass --pg-url, source .ci/services.sh, or install postgresql")
        args.pg_url = server.url

        def stop() -> None:
            subprocess.run(_as_owner([f"{server.bin}/pg_ctl", "-D", server.data, "-m", "fast", "stop"]),
                           capture_output=True)

    n = args.trials
    try:
        with tempfile.TemporaryDirectory(prefix="hps-pgb-", dir="/tmp") as d:
            print(f"(s) SQLite, {n} trials ...", file=sys.stderr, flush=True)
            s = collect(*launch(f"sqlite:///{d}/bench.db", "one", n, args.executor))
        print(f"(p) PostgreSQL, {n} trials ...", file=sys.stderr, flush=True)
        p = collect(*launch(fresh_pg_db(args.pg_url), "one", n, args.executor))
        print(f"(p4) 4 studies at once on one PostgreSQL, {n} trials each ...", file=sys.stderr, flush=True)
        url4 = fresh_pg_db(args.pg_url)
        # Create the schema first: 4 drivers creating it at once collide (STACK_NOTES).
        from hpsearch.storage._urls import open_storage

        open_storage(url4).engine.dispose()
        procs = [launch(url4, f"study{i}", n, args.executor) for i in range(4)]
        p4 = [collect(*pr) for pr in procs]
    finally:
        if stop is not None:
            stop()

    per_study = statistics.median(r["steady"] for r in p4)
    span = max(r["last"] for r in p4) - min(r["first"] for r in p4)
    aggregate = span / sum(r["trials"] for r in p4)
    assert all(r["complete"] == n for r in (s, p, *p4)), "a run did not complete every trial"
    rows = [
        "| run | trials | steady ms/trial | × SQLite |",
        "|---|---|---|---|",
        f"| (s) 1 study, SQLite file | {n} | {s['steady'] * 1000:.1f} | 1.0 |",
        f"| (p) 1 study, PostgreSQL | {n} | {p['steady'] * 1000:.1f} | {p['steady'] / s['steady']:.2f} |",
        f"| (p4) 4 studies at once on one PostgreSQL, per study (median) | 4 × {n} | {per_study * 1000:.1f} | "
        f"{per_study / s['steady']:.2f} |",
        f"| (p4) the same, aggregate (all trials / wall span) | {4 * n} | {aggregate * 1000:.1f} | "
        f"{aggregate / s['steady']:.2f} |",
    ]
    block = "\n".join([
        f"Command: `python benchmarks/postgres.py {' '.join(sys.argv[1:])}`".replace(" `", " `").strip()
        + f" ({time.strftime('%Y-%m-%d')}), executor `{args.executor}`  ",
        f"Machine: {machine()}",
        "",
        *rows,
        "",
        f"- PostgreSQL / SQLite, one study: {p['steady'] / s['steady']:.2f}×",
        f"- 4 concurrent studies / 1 study, both on PostgreSQL, per study: {per_study / p['steady']:.2f}× "
        f"(aggregate throughput {p['steady'] / aggregate:.2f}× one study's)",
    ])
    print(block)
    if args.write_readme:
        from _readme import replace_block

        replace_block(START, END, block, README)
        print(f"\nwrote {README}", file=sys.stderr)


if __name__ == "__main__":
    main()
