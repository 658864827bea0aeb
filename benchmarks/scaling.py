"""How hpsearch's cost grows, each figure against a named peer measured in the same run.

1. Per-trial overhead at N trials (``--counts``, default 200 and 2000), random
   sampler, trivial objective ``(x - 2) ** 2``:
     optuna  plain Optuna ``study.optimize`` on a fresh SQLite file (the peer;
             optuna#3053 reports seconds per completion at 80k trials)
     ray     ``hpsearch.run_study``, executor ``ray`` (private Ray), SQLite
     local   ``hpsearch.run_study``, executor ``local``, SQLite
   Steady ms/trial is read from the stored trials (first start to last
   completion, / N), as in benchmarks/overhead.py, whose helpers this reuses.
2. The driver's throughput with many trials in flight: a private Ray declared
   with ``--cpus`` CPUs (default 64; ``RayExecutor(num_cpus=...)``), trials that
   sleep 1 s (1 CPU each), ``--rounds`` trials per CPU. Finished trials per
   second, counted between the first and the last completion, against the
   ideal (one per declared CPU per second).

Every path runs in its own interpreter, killed after ``--timeout`` seconds
(the whole benchmark stays bounded). Usage::

    .venv/bin/python benchmarks/scaling.py [--counts 200,2000] [--cpus 64] [--write-readme]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from overhead import _steady, fmt_ms, machine  # noqa: E402 - benchmarks/ is not a package

START, END = "<!-- scaling:start -->", "<!-- scaling:end -->"
PATHS = {
    "optuna": "Optuna `study.optimize`, SQLite (peer)",
    "ray": "hpsearch, executor `ray`",
    "local": "hpsearch, executor `local`",
}


def _study(tmp: Path, n: int, *, sleep: float = 0.0) -> Path:
    body = f"import time\n    time.sleep({sleep})\n    " if sleep else ""
    (tmp / "objective.py").write_text(f'def objective(params):\n    {body}return (params["x"] - 2) ** 2\n')
    path = tmp / "study.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: scaling
        trainer: {{kind: python, function: "objective.py:objective"}}
        objective: {{metric: value, direction: minimize}}
        sampler: {{name: random, seed: 0}}
        n_trials: {n}
        max_failures: {n}
        search_space:
          x: {{type: float, low: -10, high: 10}}
        resources: {{cpus: 1}}
        storage: sqlite:///{tmp / "hpsearch.db"}
        """)
    )
    return path


def _trials(tmp: Path) -> list:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name="scaling", storage=f"sqlite:///{tmp / 'hpsearch.db'}").trials


def run_optuna(n: int, tmp: Path) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="scaling", storage=f"sqlite:///{tmp / 'hpsearch.db'}", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    t0 = time.time()
    study.optimize(lambda t: (t.suggest_float("x", -10, 10) - 2) ** 2, n_trials=n)
    return {"t0": t0, "t1": time.time()}


def run_hpsearch(n: int, tmp: Path, executor: str) -> dict:
    import hpsearch

    path = _study(tmp, n)
    t0 = time.time()
    hpsearch.run_study(str(path), executor=executor)
    return {"t0": t0, "t1": time.time()}


def run_inflight(cpus: int, rounds: int, tmp: Path) -> dict:
    """Trials sleeping 1 s on a private Ray declared with ``cpus`` CPUs."""
    from hpsearch.config import load_config
    from hpsearch.executors._ray import RayExecutor
    from hpsearch.study import StudyManager

    path = _study(tmp, cpus * rounds, sleep=1.0)
    t0 = time.time()
    StudyManager(load_config(str(path), {}), executor=RayExecutor(num_cpus=cpus)).run()
    trials = _trials(tmp)
    ends = sorted(t.datetime_complete.timestamp() for t in trials if t.datetime_complete)
    return {"t0": t0, "t1": time.time(), "ends": ends}


def worker(kind: str, n: int, out: Path, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix=f"hps-scale-{kind}-", dir="/tmp") as d:
        tmp = Path(d)
        if kind == "inflight":
            res = run_inflight(n, rounds, tmp)
        else:
            res = run_optuna(n, tmp) if kind == "optuna" else run_hpsearch(n, tmp, kind)
            trials = _trials(tmp)
            res["first"], res["last"] = _steady(trials, n)
            res["trials"] = len(trials)
    out.write_text(json.dumps(res))


def run(kind: str, n: int, timeout: float, rounds: int = 0) -> dict | None:
    """One path in a fresh interpreter; None when it ran past ``timeout``."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    argv = [sys.executable, __file__, "--_worker", kind, "--_n", str(n), "--_out", str(out), "--rounds", str(rounds)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        out.unlink(missing_ok=True)
        return None
    try:
        if proc.returncode != 0:
            raise SystemExit(f"{kind} {n} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def overhead_table(counts: list[int], timeout: float) -> str:
    rows = ["| trials | path | total s | ms/trial | steady ms/trial | × peer (steady) |", "|---|---|---|---|---|---|"]
    for n in counts:
        peer: float | None = None
        for kind, label in PATHS.items():
            print(f"{kind} {n} (load {os.getloadavg()[0]:.1f}) ...", file=sys.stderr, flush=True)
            r = run(kind, n, timeout)
            if r is None:
                rows.append(f"| {n} | {label} | over {timeout:.0f} s: not measured | | | |")
                continue
            total = r["t1"] - r["t0"]
            steady = (r["last"] - r["first"]) / n if r.get("first") else None
            peer = steady if kind == "optuna" else peer
            ratio = f"{steady / peer:.1f}" if steady and peer else "–"
            rows.append(f"| {n} | {label} | {total:.1f} | {fmt_ms(total / n)} | {fmt_ms(steady)} | {ratio} |")
    return "\n".join(rows)


def inflight_table(cpus: list[int], rounds: int, timeout: float) -> str:
    rows = [
        "| declared CPUs | trials (1 s each) | total s | finished/s (steady) | ideal /s | × ideal |",
        "|---|---|---|---|---|---|",
    ]
    for c in cpus:
        print(f"inflight {c} (load {os.getloadavg()[0]:.1f}) ...", file=sys.stderr, flush=True)
        r = run("inflight", c, timeout, rounds)
        if r is None:
            rows.append(f"| {c} | {c * rounds} | over {timeout:.0f} s: not measured | | {c} | |")
            continue
        ends = r["ends"]
        rate = (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 and ends[-1] > ends[0] else 0.0
        rows.append(f"| {c} | {len(ends)} | {r['t1'] - r['t0']:.1f} | {rate:.1f} | {c} | {rate / c:.2f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="200,2000")
    ap.add_argument("--cpus", default="64", help="declared CPUs of the in-flight runs, e.g. 64,256")
    ap.add_argument("--rounds", type=int, default=4, help="trials per declared CPU in the in-flight runs")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per path before it is killed")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--skip-inflight", action="store_true")
    ap.add_argument("--write-readme", action="store_true")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    ap.add_argument("--_n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._worker:
        worker(args._worker, args._n, Path(args._out), args.rounds)
        return
    parts = [
        f"Command: `python benchmarks/scaling.py {' '.join(sys.argv[1:])}` ({time.strftime('%Y-%m-%d')})  ",
        f"Machine: {machine()}; load average (1 min) at start {os.getloadavg()[0]:.1f}",
        "",
    ]
    if not args.skip_overhead:
        parts += [overhead_table([int(c) for c in args.counts.split(",")], args.timeout), ""]
    if not args.skip_inflight:
        parts += [inflight_table([int(c) for c in args.cpus.split(",")], args.rounds, args.timeout), ""]
    parts.append(f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f}")
    block = "\n".join(parts)
    print(block)
    if args.write_readme:
        from _readme import replace_block

        replace_block(START, END, block)


if __name__ == "__main__":
    main()
