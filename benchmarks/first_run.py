"""A first run: ``hpsearch run studies/quickstart.yaml`` against the same search as a plain Optuna script.

Three commands, each a fresh process timed from outside (interpreter start,
imports, storage, trials, shut-down: what a user waits for), run in turns
(plain, ray, local, plain, ray, local, ...) so that a burst of load on a
shared machine falls on all three:

  plain  the quickstart written as a plain Optuna script: TPE (seed 0) and the
         median pruner (5 start-up trials, 2 warm-up steps), a decision tree
         on digits with 5-fold CV reported fold by fold, a fresh SQLite file
  ray    ``hpsearch run quickstart.yaml`` (the default executor: a private Ray)
  local  ``hpsearch run quickstart.yaml --executor local``
  ray_now  the default with ``ray: {driver_first_s: 0}``: Ray starts at once and
         runs every trial (what the default did before driver-first)

Prints the median and range of each and the ratio of medians to ``plain``
(target for ``ray``: under 1.5), and the load average before and after.
Usage::

    .venv/bin/python benchmarks/first_run.py [--runs 3] [--write-readme]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- first_run:start -->", "<!-- first_run:end -->"
TARGET = 1.5
#: Each command is killed after this many seconds (the whole benchmark stays bounded).
TIMEOUT_S = 300

PLAIN = """\
import optuna
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold
from sklearn.tree import DecisionTreeClassifier

optuna.logging.set_verbosity(optuna.logging.WARNING)
X, y = load_digits(return_X_y=True)
folds = list(StratifiedKFold(n_splits=5).split(X, y))


def objective(trial):
    model = DecisionTreeClassifier(
        random_state=0,
        max_depth=trial.suggest_int("max_depth", 2, 16),
        min_samples_split=trial.suggest_int("min_samples_split", 2, 20),
        criterion=trial.suggest_categorical("criterion", ["gini", "entropy"]),
        max_features=trial.suggest_float("max_features", 0.2, 1.0),
    )
    scores = []
    for step, (train, test) in enumerate(folds):
        scores.append(model.fit(X[train], y[train]).score(X[test], y[test]))
        trial.report(float(np.mean(scores)), step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return float(np.mean(scores))


study = optuna.create_study(
    study_name="quickstart", storage="sqlite:///plain.db", direction="maximize",
    sampler=optuna.samplers.TPESampler(seed=0),
    pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
)
study.optimize(objective, n_trials=20)
print(len(study.trials), study.best_value)
"""

COMMANDS = {
    "plain": "plain Optuna script, SQLite (the peer)",
    "ray": "`hpsearch run studies/quickstart.yaml` (default: private Ray)",
    "local": "`hpsearch run studies/quickstart.yaml --executor local`",
    "ray_now": "the same with `ray: {driver_first_s: 0}` (every trial on Ray, as before driver-first)",
}


def load() -> str:
    """The 1-minute load average (other processes on a shared machine)."""
    return f"{os.getloadavg()[0]:.1f}"


def _argv(name: str, work: Path) -> list[str]:
    bin_dir = Path(sys.executable).parent
    if name == "plain":
        (work / "plain.py").write_text(PLAIN)
        return [sys.executable, "plain.py"]
    text = (ROOT / "studies" / "quickstart.yaml").read_text()
    if name == "ray_now":
        text += "ray: {driver_first_s: 0}\n"
    (work / "quickstart.yaml").write_text(text)
    argv = [str(bin_dir / "hpsearch"), "run", "quickstart.yaml", "-q", "--storage", "sqlite:///hpsearch.db"]
    return argv + (["--executor", "local"] if name == "local" else [])


def time_one(name: str) -> float:
    """Wall seconds of one run of ``name`` in a fresh folder (raises if it fails)."""
    with tempfile.TemporaryDirectory(prefix=f"hps-first-{name}-") as d:
        work = Path(d)
        argv = _argv(name, work)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (rc {proc.returncode}):\n{(proc.stdout + proc.stderr)[-2000:]}")
    return elapsed


def table(times: dict[str, list[float]], before: str, after: str, runs: int) -> str:
    base = statistics.median(times["plain"])
    rows = [
        f"{runs} runs each, in turns; load average (1 min) {before} before, {after} after, on {os.cpu_count()} cores.",
        "",
        "| command | median s | range s | × plain (medians) |",
        "|---|---|---|---|",
    ]
    for name, label in COMMANDS.items():
        t = times[name]
        rows.append(
            f"| {label} | {statistics.median(t):.2f} | {min(t):.2f} to {max(t):.2f} | "
            f"{statistics.median(t) / base:.2f} |"
        )
    ratio = statistics.median(times["ray"]) / base
    rows += [
        "",
        f"Target: the default (`ray`) under {TARGET}× plain: {'met' if ratio < TARGET else 'NOT met'} ({ratio:.2f}×).",
    ]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--write-readme", action="store_true")
    args = ap.parse_args()
    before = load()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for i in range(args.runs):
        for name in COMMANDS:
            times[name].append(time_one(name))
            print(f"run {i + 1} {name}: {times[name][-1]:.2f} s (load {load()})", file=sys.stderr, flush=True)
    block = f"Command: `python benchmarks/first_run.py --runs {args.runs}` ({time.strftime('%Y-%m-%d')})\n\n"
    block += table(times, before, load(), args.runs)
    print(block)
    if args.write_readme:
        sys.path.insert(0, str(HERE))
        from _readme import replace_block

        replace_block(START, END, block)


if __name__ == "__main__":
    main()
