"""Per-trial overhead of a trivial objective (issue 2).

Runs N trivial TPE trials (seed 0) of ``(x - 2) ** 2``, x in [-10, 10], through

  a  plain Optuna, in-memory storage (``study.optimize``)
  b  plain Optuna, fresh SQLite file, Optuna's default engine (``study.optimize``)
  c  Ray Tune ``Tuner`` + ``OptunaSearch``, Ray Tune defaults (the peer)
  d  hpsearch, executor ray (private local Ray on 127.0.0.1), SQLite
  e  hpsearch, executor local (threads in the driver), SQLite

and prints a table. Every path runs in its own subprocess (fresh interpreter,
fresh Ray), so one path's imports, Ray state or environment cannot touch
another. Usage::

    .venv/bin/python benchmarks/overhead.py [--trials 200] [--peer-trials 200]
                                            [--skip-peer] [--write-readme]

Figures per path:

* ``total s``: wall time of the call that runs the trials (``study.optimize``,
  ``tuner.fit()``, ``hpsearch.run_study``). For (d) that includes starting and
  stopping the private Ray; for (c) Ray is started before ``fit()`` (not counted).
* ``s/trial``: total / trials.
* ``steady s/trial``: (last ``datetime_complete`` - first ``datetime_start``)
  / trials, read from the study's own trial records: start-up (Ray, storage
  schema, study creation) and shut-down excluded. For (c) it is read from the
  Optuna study inside ``OptunaSearch``.

Ratios use steady s/trial where it exists. Target (README): (d) <= 30 ms/trial,
>= 50x faster than (c), and faster than (b).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
START, END = "<!-- overhead:start -->", "<!-- overhead:end -->"
TARGET_S = 0.030
PATHS = {
    "a": "Optuna, in-memory (`study.optimize`)",
    "b": "Optuna, SQLite file (`study.optimize`)",
    "c": "Ray Tune `Tuner` + `OptunaSearch` (defaults)",
    "d": "hpsearch, executor `ray`, SQLite",
    "e": "hpsearch, executor `local`, SQLite",
}


def objective_value(x: float) -> float:
    return (x - 2) ** 2


def _steady(trials: list, n: int) -> tuple[float | None, float | None]:
    """(first start, last complete) as epoch seconds, from finished trials."""
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    if not starts or not ends:
        return None, None
    return min(starts).timestamp(), max(ends).timestamp()


# ------------------------------------------------------------------ workers
# Each runs in a fresh interpreter and returns a dict.


def run_optuna(n: int, tmp: Path, sqlite: bool) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp / 'b.db'}" if sqlite else None
    sampler = optuna.samplers.TPESampler(seed=0)
    t0 = time.time()
    study = optuna.create_study(storage=storage, sampler=sampler, direction="minimize", study_name="b")
    study.optimize(lambda trial: objective_value(trial.suggest_float("x", -10, 10)), n_trials=n)
    t1 = time.time()
    first, last = _steady(study.trials, n)
    return {"trials": len(study.trials), "t0": t0, "t1": t1, "first": first, "last": last,
            "best": study.best_value}


def _tune_trainable(config: dict) -> dict:
    return {"value": objective_value(config["x"])}


def run_tune(n: int, tmp: Path) -> dict:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_TMPDIR"] = str(tmp / "ray")
    # Token auth without writing ~/.ray/auth_token (as hpsearch's local Ray does).
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", os.urandom(32).hex())
    (tmp / "ray").mkdir()
    import optuna
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    r0 = time.time()
    ray.init(
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        _temp_dir=str(tmp / "ray"),
        configure_logging=False,
        log_to_driver=False,
    )
    r1 = time.time()
    searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=0), metric="value", mode="min")
    tuner = tune.Tuner(
        _tune_trainable,
        param_space={"x": tune.uniform(-10, 10)},
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=n),
        run_config=tune.RunConfig(storage_path=str(tmp / "tune"), name="peer", verbose=0),
    )
    t0 = time.time()
    grid = tuner.fit()
    t1 = time.time()
    ot = getattr(searcher, "_ot_study", None)
    first = last = None
    if ot is not None:
        first, last = _steady(ot.trials, n)
    best = grid.get_best_result(metric="value", mode="min").metrics["value"]
    ray.shutdown()
    return {"trials": len(grid), "t0": t0, "t1": t1, "first": first, "last": last,
            "ray_start_s": r1 - r0, "best": best, "errors": len(grid.errors)}


def write_study(tmp: Path, n: int) -> Path:
    (tmp / "objective.py").write_text('def objective(params):\n    return (params["x"] - 2) ** 2\n')
    study = tmp / "study.yaml"
    study.write_text(textwrap.dedent(f"""\
        name: overhead
        trainer: {{kind: python, function: "objective.py:objective"}}
        objective: {{metric: value, direction: minimize}}
        sampler: {{name: tpe, seed: 0}}
        n_trials: {n}
        search_space:
          x: {{type: float, low: -10, high: 10}}
        resources: {{cpus: 1}}
        """))
    return study


def run_hpsearch(n: int, tmp: Path, executor: str) -> dict:
    study = write_study(tmp, n)
    import hpsearch
    import optuna

    t0 = time.time()
    result = hpsearch.run_study(str(study), executor=executor, progress=False)
    t1 = time.time()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name="overhead", storage=f"sqlite:///{tmp / 'hpsearch.db'}").trials
    first, last = _steady(trials, n)
    return {"trials": len(trials), "t0": t0, "t1": t1, "first": first, "last": last,
            "best": result.best_value,
            "complete": sum(t.state.name == "COMPLETE" for t in trials)}


def worker(path: str, n: int, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=f"hps-ovh-{path}-", dir="/tmp") as d:
        tmp = Path(d)
        if path == "a":
            res = run_optuna(n, tmp, sqlite=False)
        elif path == "b":
            res = run_optuna(n, tmp, sqlite=True)
        elif path == "c":
            res = run_tune(n, tmp)
        elif path == "d":
            res = run_hpsearch(n, tmp, "ray")
        elif path == "e":
            res = run_hpsearch(n, tmp, "local")
        else:
            raise SystemExit(f"unknown path {path!r}")
    out.write_text(json.dumps(res))


# ------------------------------------------------------------------ driver


def run_path(path: str, n: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--_worker", path, "--trials", str(n), "--_out", str(out)],
            capture_output=True, text=True,
        )
        if proc.returncode != 0 or not out.read_text().strip():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
            raise SystemExit(f"path {path} failed (rc {proc.returncode}):\n{tail}")
        res = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    res["total"] = res["t1"] - res["t0"]
    res["per"] = res["total"] / n
    if res.get("first") is not None:
        res["steady"] = (res["last"] - res["first"]) / n
        res["startup"] = res["first"] - res["t0"]
        res["shutdown"] = res["t1"] - res["last"]
    return res


def machine() -> str:
    cpu = ""
    try:
        m = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        cpu = m.group(1).strip() if m else ""
    except OSError:
        pass
    import optuna
    import ray

    return (f"{cpu or platform.processor()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"optuna {optuna.__version__}, ray {ray.__version__}, {platform.system()} {platform.release()}")


def fmt_ms(s: float | None) -> str:
    return "–" if s is None else f"{s * 1000:.1f}"


def table(results: dict[str, dict], n: int) -> str:
    base = results["a"].get("steady") or results["a"]["per"]
    rows = [
        "| path | trials | total s | ms/trial | steady ms/trial | start-up s | × (a), steady |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label in PATHS.items():
        r = results.get(key)
        if r is None:
            rows.append(f"| ({key}) {label} | skipped | | | | | |")
            continue
        key_s = r.get("steady") or r["per"]
        start = r.get("startup")
        if key == "c":
            start = r.get("ray_start_s")
        rows.append(
            f"| ({key}) {label} | {r['trials']} | {r['total']:.2f} | {fmt_ms(r['per'])} | "
            f"{fmt_ms(r.get('steady'))} | {'' if start is None else f'{start:.2f}'} | {key_s / base:.1f} |"
        )
    return "\n".join(rows)


def summary(results: dict[str, dict]) -> list[str]:
    d = results.get("d")
    lines = []
    if d is None:
        return lines
    d_s = d.get("steady") or d["per"]
    for key in ("c", "b"):
        r = results.get(key)
        if r is None:
            continue
        r_s = r.get("steady") or r["per"]
        lines.append(
            f"({key})/(d), steady: {r_s / d_s:.1f}× (total/N: {r['per'] / d['per']:.1f}×)"
        )
    ok_ms = d_s <= TARGET_S
    c = results.get("c")
    ok_c = c is None or (c.get("steady") or c["per"]) / d_s >= 50
    b = results.get("b")
    ok_b = b is None or d_s < (b.get("steady") or b["per"])
    lines.append(
        f"target (d) ≤ {TARGET_S * 1000:.0f} ms/trial steady: {'met' if ok_ms else 'NOT met'} "
        f"({d_s * 1000:.1f} ms); ≥ 50× better than (c): {'met' if ok_c else 'NOT met'}"
        f"{' (c skipped)' if c is None else ''}; better than (b): {'met' if ok_b else 'NOT met'}"
    )
    return lines


def write_readme(block: str) -> None:
    from _readme import replace_block

    replace_block(START, END, block, README)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--peer-trials", type=int, default=200, help="trials for (c), Ray Tune (slow)")
    ap.add_argument("--skip-peer", action="store_true", help="do not run (c)")
    ap.add_argument("--only", default="abcde", help="paths to run, e.g. 'ade'")
    ap.add_argument("--write-readme", action="store_true", help=f"rewrite the table in {README}")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._worker:
        worker(args._worker, args.trials, Path(args._out))
        return

    results: dict[str, dict] = {}
    for key in PATHS:
        if key not in args.only or (key == "c" and args.skip_peer):
            continue
        n = args.peer_trials if key == "c" else args.trials
        print(f"running ({key}) {PATHS[key]}, {n} trials ...", file=sys.stderr, flush=True)
        results[key] = run_path(key, n)
        r = results[key]
        print(f"  total {r['total']:.2f} s, {fmt_ms(r['per'])} ms/trial, steady {fmt_ms(r.get('steady'))} ms/trial",
              file=sys.stderr, flush=True)
    if "a" not in results:
        raise SystemExit("path (a) is the baseline; include it in --only")

    date = time.strftime("%Y-%m-%d")
    cmd = "python benchmarks/overhead.py " + " ".join(a for a in sys.argv[1:])
    block = "\n".join([
        f"Command: `{cmd.strip()}` ({date})  ",
        f"Machine: {machine()}",
        "",
        table(results, args.trials),
        "",
        *[f"- {line}" for line in summary(results)],
    ])
    print(block)
    if args.write_readme:
        write_readme(block)
        print(f"\nwrote {README}", file=sys.stderr)


if __name__ == "__main__":
    main()
