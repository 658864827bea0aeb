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
    t0, cpu0 = time.time(), time.process_time()
    rss = _PeakRSS()
    try:
        StudyManager(load_config(str(path), {}), executor=RayExecutor(num_cpus=cpus)).run()
    finally:
        rss.stop()
    trials = _trials(tmp)
    ends = sorted(t.datetime_complete.timestamp() for t in trials if t.datetime_complete)
    cpu_ms = (time.process_time() - cpu0) * 1000 / max(1, len(ends))  # the driver's CPU (all its threads)
    return {"t0": t0, "t1": time.time(), "ends": ends, "peak_rss": rss.peak, "peak_procs": rss.procs, "cpu_ms": cpu_ms}


def worker(kind: str, n: int, tmp: Path, rounds: int) -> None:
    if kind == "inflight":
        res = run_inflight(n, rounds, tmp)
    else:
        res = run_optuna(n, tmp) if kind == "optuna" else run_hpsearch(n, tmp, kind)
        trials = _trials(tmp)
        res["first"], res["last"] = _steady(trials, n)
        res["trials"] = len(trials)
    (tmp / "result.json").write_text(json.dumps(res))


def _partial(tmp: Path) -> dict | None:
    """What a path killed at its timeout had finished: trials done and their steady ms/trial."""
    try:
        trials = [t for t in _trials(tmp) if t.datetime_complete is not None]
    except Exception:  # noqa: BLE001 - killed before its study existed
        return None
    if len(trials) < 2:
        return None
    first, last = _steady(trials, len(trials))
    return {"done": len(trials), "first": first, "last": last}


def run(kind: str, n: int, timeout: float, rounds: int = 0) -> dict:
    """One path in a fresh interpreter; ``{"timeout": True, "partial": ...}`` when it ran past ``timeout``."""
    with tempfile.TemporaryDirectory(prefix=f"hps-scale-{kind}-", dir="/tmp") as d:
        tmp = Path(d)
        argv = [sys.executable, __file__, "--_worker", kind, "--_n", str(n), "--_out", d, "--rounds", str(rounds)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the worker and any Ray it started
            proc.communicate()
            return {"timeout": True, "partial": _partial(tmp)}
        if proc.returncode != 0:
            raise SystemExit(f"{kind} {n} failed:\n{out[-2000:]}")
        return json.loads((tmp / "result.json").read_text())


def overhead_table(counts: list[int], timeout: float) -> str:
    rows = ["| trials | path | total s | ms/trial | steady ms/trial | × peer (steady) |", "|---|---|---|---|---|---|"]
    for n in counts:
        peer: float | None = None
        for kind, label in PATHS.items():
            print(f"{kind} {n} (load {os.getloadavg()[0]:.1f}) ...", file=sys.stderr, flush=True)
            r = run(kind, n, timeout)
            if r.get("timeout"):
                part = r["partial"]
                if part is None:
                    rows.append(f"| {n} | {label} | over {timeout:.0f} s: not measured | | | |")
                    continue
                steady = (part["last"] - part["first"]) / part["done"]
                peer = steady if kind == "optuna" else peer
                ratio = f"{steady / peer:.2f}" if peer and kind != "optuna" else ("1.0" if kind == "optuna" else "–")
                rows.append(
                    f"| {n} | {label} | killed at {timeout:.0f} s after {part['done']} trials | "
                    f"| {fmt_ms(steady)} (of those) | {ratio} |"
                )
                continue
            total = r["t1"] - r["t0"]
            steady = (r["last"] - r["first"]) / n if r.get("first") else None
            peer = steady if kind == "optuna" else peer
            ratio = f"{steady / peer:.2f}" if steady and peer else "–"
            rows.append(f"| {n} | {label} | {total:.1f} | {fmt_ms(total / n)} | {fmt_ms(steady)} | {ratio} |")
    return "\n".join(rows)


def inflight_table(cpus: list[int], rounds: int, timeout: float) -> str:
    rows = [
        "| declared CPUs | trials (1 s each) | total s | finished/s (steady) | ideal /s | × ideal "
        "| peak memory (PSS) of Ray's processes | driver CPU ms/trial (its ceiling /s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    per_process = 0.0
    for c in cpus:
        print(f"inflight {c} (load {os.getloadavg()[0]:.1f}) ...", file=sys.stderr, flush=True)
        need = per_process * (c + 8) if per_process else 0.0  # a worker per trial in flight, plus Ray's own
        free = _available_bytes()
        if need > 0.8 * free:
            rows.append(
                f"| {c} | {c * rounds} | not run: {c} workers at {per_process / 2**20:.0f} MiB each (measured at "
                f"{cpus[0]}) need {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB available | | {c} | | | |"
            )
            continue
        r = run("inflight", c, timeout, rounds)
        if r.get("timeout"):
            rows.append(f"| {c} | {c * rounds} | over {timeout:.0f} s: not measured | | {c} | | | |")
            continue
        ends = r["ends"]
        rate = (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 and ends[-1] > ends[0] else 0.0
        per_process = per_process or r["peak_rss"] / max(1, r["peak_procs"])
        rows.append(
            f"| {c} | {len(ends)} | {r['t1'] - r['t0']:.1f} | {rate:.1f} | {c} | {rate / c:.2f} | "
            f"{r['peak_rss'] / 2**30:.1f} GiB, {r['peak_procs']} processes | "
            f"{r['cpu_ms']:.1f} ({1000 / r['cpu_ms']:.0f}) |"
        )
    return "\n".join(rows)


def _available_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


class _PeakRSS:
    """Samples the summed PSS (shared pages split between sharers) of this process's descendants every 0.5 s."""

    def __init__(self) -> None:
        import threading

        self.peak, self.procs = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(0.5):
            total, n = 0, 0
            for p in me.children(recursive=True):
                try:
                    total += p.memory_full_info().pss
                    n += 1
                except psutil.Error:
                    continue
            if total > self.peak:
                self.peak, self.procs = total, n

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


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
