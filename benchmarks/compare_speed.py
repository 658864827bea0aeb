"""compare speed: a 10,000-trial study on SQLite, compared in one call.

The study is built in a second or two by bulk-inserting rows into Optuna's own
tables (an Optuna-created study and schema; ``optuna.load_study`` reads it back
and the script checks that Optuna sees the same best trial and counts). Each
trial has 3 params, a value and 3 user attributes (``metrics``, ``placement``,
``std_test_accuracy``); 80% COMPLETE, 15% PRUNED, 5% FAIL.

Timed (median of --repeat runs, each in this process, warm file cache):
  (a) ``hpsearch.compare([study file])``: SQLAlchemy Core over Optuna's tables
  (b) the peer: Optuna's API, materialising every FrozenTrial
      (``load_study`` + ``get_trials`` + ``best_trial``), what a compare built on
      ``study.trials`` would do
  (c) ``hpsearch compare STUDY --format json`` as a fresh process (CLI start-up included)

Target: (a) and (c) <= 2 s for the 10,000-trial study.

    .venv/bin/python benchmarks/compare_speed.py [--trials 10000] [--write-readme]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

README = Path(__file__).with_name("README.md")
START, END = "<!-- compare_speed:start -->", "<!-- compare_speed:end -->"


def build(path: Path, n: int) -> tuple[str, Path]:
    """A study of ``n`` trials in a new SQLite file; returns (url, study file)."""
    import optuna
    import sqlalchemy
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution, distribution_to_json

    url = f"sqlite:///{path}"
    study = optuna.create_study(study_name="big", storage=url, direction="maximize")
    study.set_user_attr("hpsearch.trainer", "sklearn_cv")
    study.set_user_attr("hpsearch.objective", "accuracy")
    study.set_user_attr("hpsearch.config", "sampler: {name: tpe}\nresources: {cpus: 1, gpus: 0}\n")
    sid = study._study_id
    dists = {
        "lr": (FloatDistribution(1e-5, 1e-1, log=True), lambda r: 10 ** r.uniform(-5, -1)),
        "depth": (IntDistribution(2, 16), lambda r: r.randint(2, 16)),
        "criterion": (CategoricalDistribution(["gini", "entropy"]), lambda r: r.randint(0, 1)),
    }
    rng = random.Random(0)
    t0 = dt.datetime(2026, 1, 1)
    trials, values, params, attrs = [], [], [], []
    for i in range(n):
        tid = i + 1
        u = rng.random()
        state = "COMPLETE" if u < 0.80 else "PRUNED" if u < 0.95 else "FAIL"
        start = t0 + dt.timedelta(seconds=3 * i)
        trials.append({"trial_id": tid, "number": i, "study_id": sid, "state": state,
                       "datetime_start": start, "datetime_complete": start + dt.timedelta(seconds=2.5)})
        if state == "COMPLETE":
            values.append({"trial_id": tid, "objective": 0, "value": rng.random(), "value_type": "FINITE"})
        for name, (dist, draw) in dists.items():
            params.append({"trial_id": tid, "param_name": name, "param_value": float(draw(rng)),
                           "distribution_json": distribution_to_json(dist)})
        attrs += [
            {"trial_id": tid, "key": "metrics", "value_json": json.dumps({"accuracy": rng.random()})},
            {"trial_id": tid, "key": "placement", "value_json": json.dumps({"host": "h", "device": "cpu"})},
            {"trial_id": tid, "key": "std_test_accuracy", "value_json": json.dumps(rng.random() / 10)},
        ]
    md = sqlalchemy.MetaData()
    md.reflect(sqlalchemy.create_engine(url), only=["trials", "trial_values", "trial_params", "trial_user_attributes"])
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as con:
        con.execute(md.tables["trials"].insert(), trials)
        con.execute(md.tables["trial_values"].insert(), values)
        con.execute(md.tables["trial_params"].insert(), params)
        con.execute(md.tables["trial_user_attributes"].insert(), attrs)
    engine.dispose()
    study_file = path.with_name("big.yaml")
    study_file.write_text(
        "name: big\nstorage: " + url + "\nobjective: {metric: accuracy, direction: maximize}\n"
        "search_space: {depth: {type: int, low: 2, high: 16}}\n"
        "trainer: {kind: sklearn_cv, estimator: sklearn.tree.DecisionTreeClassifier}\n"
    )
    return url, study_file


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args(argv)

    import optuna

    import hpsearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="hps-cmp-") as tmp:
        t = time.perf_counter()
        url, study_file = build(Path(tmp) / "big.db", args.trials)
        build_s = time.perf_counter() - t

        api_s, frame = timed(lambda: hpsearch.compare([str(study_file)]), args.repeat)

        def peer():
            study = optuna.load_study(study_name="big", storage=url)
            trials = study.get_trials(deepcopy=False)
            return study.best_trial, trials

        peer_s, (best, trials) = timed(peer, args.repeat)
        row = frame.iloc[0]
        states = [t.state.name for t in trials]
        assert len(trials) == args.trials
        assert row["best_value"] == best.value and row["best_trial"] == best.number
        assert row["best_params"] == best.params
        assert (row["complete"], row["pruned"], row["failed"]) == (
            states.count("COMPLETE"), states.count("PRUNED"), states.count("FAIL")
        )

        def cli():
            res = subprocess.run([sys.executable, "-m", "hpsearch", "compare", str(study_file), "-f", "json"],
                                 capture_output=True, text=True, env={**os.environ})
            assert res.returncode == 0, res.stderr
            return json.loads(res.stdout)

        cli_s, out = timed(cli, args.repeat)
        assert out[0]["best_value"] == best.value

    rows = [
        ("(a) `hpsearch.compare([file])` (SQL over Optuna's tables)", api_s),
        ("(b) peer: Optuna `load_study` + `get_trials` + `best_trial` (FrozenTrials)", peer_s),
        ("(c) `hpsearch compare FILE -f json` (fresh process)", cli_s),
    ]
    lines = [f"| path | {args.trials:,}-trial study, median s | × (a) |", "|---|---|---|"]
    lines += [f"| {name} | {s:.3f} | {s / api_s:.1f} |" for name, s in rows]
    lines += [
        "",
        f"- built the study in {build_s:.1f} s (bulk insert); Optuna reads back the same best trial and counts",
        f"- (b)/(a): {peer_s / api_s:.1f}× ; target (a) ≤ 2 s: {'met' if api_s <= 2 else 'NOT met'} ({api_s:.3f} s); "
        f"(c) ≤ 2 s: {'met' if cli_s <= 2 else 'NOT met'} ({cli_s:.3f} s)",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write_readme:
        block = (
            f"Command: `python benchmarks/compare_speed.py {' '.join(argv or sys.argv[1:])}` "
            f"({dt.date.today()})  \nMachine: {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, optuna {optuna.__version__}\n\n{text}"
        )
        from _readme import replace_block

        replace_block(START, END, block, README)


if __name__ == "__main__":
    main()
