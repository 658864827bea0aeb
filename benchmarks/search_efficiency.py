"""Search efficiency: GridSearchCV's best against TPE on the same space, in one run.

For each space, scikit-learn's GridSearchCV runs through the ``sklearn_search``
trainer (the peer: every grid point, every fold), then our TPE sampler searches
the same points through the ``sklearn_cv`` trainer, on the same folds, so a
point scores exactly what GridSearchCV gave it. For each TPE seed we report the
number of fits (folds fitted, pruned trials included) and the wall time TPE
needed to first reach GridSearchCV's best CV score. TPE gets at most half the
grid's trials; "not reached" means it did not get there within that budget.
TPE runs with ``sampler.dedupe`` on (the default for tpe): no point is run twice,
so "repeats" (trials that re-ran an earlier trial's point) should read 0.

Spaces:
  tree  the seed article's grid: DecisionTreeClassifier on digits,
        max_depth [3, 5, 10] x min_samples_split [2, 5, 10], cv=5 (45 fits).
  hgb   HistGradientBoostingClassifier on digits (15 iterations, 32 bins):
        learning_rate 0.1..0.4 step 0.1 x max_leaf_nodes 8..32 step 8 x
        min_samples_leaf 5..25 step 10 x l2_regularization 0..1 step 0.5,
        144 points, cv=3 (432 fits). TPE gets the numeric ranges, GridSearchCV
        the points they enumerate.

Target: TPE reaches GridSearchCV's best CV score with <= 40% of its fits.

    .venv/bin/python benchmarks/search_efficiency.py                 # both spaces, seeds 0-4
    .venv/bin/python benchmarks/search_efficiency.py --seeds 3 --write-readme
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

# One thread per fit for both contenders (HistGradientBoosting would use every core).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import yaml  # noqa: E402

README = Path(__file__).with_name("README.md")
START, END = "<!-- search_efficiency:start -->", "<!-- search_efficiency:end -->"

SPACES = {
    "tree": {
        "estimator": "sklearn.tree.DecisionTreeClassifier",
        "estimator_params": {"random_state": 0},
        "cv": 5,
        # The seed article's grid, as it gives it: unevenly spaced, so categorical.
        "space": {"max_depth": [3, 5, 10], "min_samples_split": [2, 5, 10]},
    },
    "hgb": {
        "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
        "estimator_params": {"max_iter": 15, "max_bins": 32, "early_stopping": False, "random_state": 0},
        "cv": 3,
        # Numeric hyperparameters as numeric ranges with a step: the grid is exactly
        # the points these ranges enumerate (hpsearch.search._space.grid_values).
        "space": {
            "learning_rate": {"type": "float", "low": 0.1, "high": 0.4, "step": 0.1},
            "max_leaf_nodes": {"type": "int", "low": 8, "high": 32, "step": 8},
            "min_samples_leaf": {"type": "int", "low": 5, "high": 25, "step": 10},
            "l2_regularization": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.5},
        },
    },
}


def grid_of(space: dict) -> dict[str, list]:
    """The GridSearchCV ``param_grid`` holding exactly the points of a search space."""
    from pydantic import TypeAdapter

    from hpsearch.config import ParamSpec
    from hpsearch.search._space import grid_values

    adapter = TypeAdapter(ParamSpec)
    grid = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            grid[name] = list(spec)
        else:
            grid[name] = grid_values(name, adapter.validate_python(spec), "search_efficiency")
    return grid


def _study(tmp: Path, name: str, body: dict) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "executor": "local",
                                    "objective": {"metric": "accuracy", "direction": "maximize"}, **body}))
    return path


def _trainer(space: dict, kind: str) -> dict:
    return {"kind": kind, "estimator": space["estimator"], "estimator_params": space["estimator_params"],
            "dataset": "digits", "cv": space["cv"], "data_seed": 0, "scoring": "accuracy"}


def run_space(name: str, space: dict, seeds: list[int], tmp: Path) -> dict:
    import optuna

    import hpsearch

    param_grid = grid_of(space["space"])
    points = math.prod(len(v) for v in param_grid.values())
    grid_fits = points * space["cv"]
    path = _study(tmp, f"{name}-grid", {"trainer": {**_trainer(space, "sklearn_search"), "param_grid": param_grid}})
    t0 = time.perf_counter()
    grid = hpsearch.run_study(str(path))
    grid_wall = time.perf_counter() - t0
    best = grid.best_value
    budget = math.ceil(points / 2)
    runs = []
    for seed in seeds:
        path = _study(tmp, f"{name}-tpe-{seed}", {
            "sampler": {"name": "tpe", "seed": seed, "options": {"n_startup_trials": 3}},
            "pruner": {"name": "median", "options": {"n_startup_trials": 3, "n_warmup_steps": 1}},
            "n_trials": budget,
            "search_space": space["space"],
            "trainer": _trainer(space, "sklearn_cv"),
        })
        hpsearch.run_study(str(path))
        study = optuna.load_study(study_name=f"{name}-tpe-{seed}", storage=f"sqlite:///{tmp / 'hpsearch.db'}")
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        start = trials[0].datetime_start
        fits = 0
        reached = None
        for t in trials:
            fits += len(t.intermediate_values)
            # Same folds, same estimator: equal points score equal (up to the mean's last bit).
            if t.value is not None and t.value >= best - 1e-12:
                reached = {"fits": fits, "trials": t.number + 1,
                           "wall_s": (t.datetime_complete - start).total_seconds()}
                break
        points_run = [tuple(sorted(t.params.items())) for t in trials]
        runs.append({"seed": seed, "reached": reached, "trials_run": len(trials),
                     "repeats": len(points_run) - len(set(points_run)), "best": study.best_value})
    return {"space": name, "points": points, "cv": space["cv"], "grid_fits": grid_fits, "grid_best": best,
            "grid_wall_s": grid_wall, "budget": budget, "runs": runs}


def table(results: list[dict]) -> str:
    lines = [
        "| space | GridSearchCV: points × folds = fits | its best CV accuracy | its wall s | TPE seed | "
        "TPE fits to reach it | % of grid fits | TPE trials | TPE wall s to reach | × grid wall | TPE repeats |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for r in results:
        pct = []
        for run in r["runs"]:
            got = run["reached"]
            if got:
                pct.append(100 * got["fits"] / r["grid_fits"])
                cells = [str(got["fits"]), f"{pct[-1]:.0f}%", str(got["trials"]), f"{got['wall_s']:.1f}",
                         f"{got['wall_s'] / r['grid_wall_s']:.2f}"]
            else:
                pct.append(math.inf)
                cells = [f"not reached in {r['budget']} trials (best {run['best']:.4f})", "-", "-", "-", "-"]
            cells.append(f"{run['repeats']} of {run['trials_run']}")
            lines.append(
                f"| {r['space']} | {r['points']} × {r['cv']} = {r['grid_fits']} | {r['grid_best']:.4f} | "
                f"{r['grid_wall_s']:.1f} | {run['seed']} | " + " | ".join(cells) + " |"
            )
        med = statistics.median(pct)
        hit = sum(p <= 40 for p in pct)
        summary.append(
            f"- {r['space']}: median TPE fits to reach GridSearchCV's best = "
            + (f"{med:.0f}% of the grid's fits" if math.isfinite(med) else "not reached")
            + f"; target ≤ 40% met in {hit} of {len(pct)} seeds"
            + (" (median: met)" if med <= 40 else " (median: NOT met)")
        )
    return "\n".join(lines + [""] + summary)


def write_readme(text: str, command: str) -> None:
    import datetime

    import sklearn

    block = (
        f"Command: `{command}` ({datetime.date.today()})  \n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"scikit-learn {sklearn.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}\n\n{text}"
    )
    from _readme import replace_block

    replace_block(START, END, block, README)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="TPE seeds per space (0..N-1)")
    parser.add_argument("--spaces", nargs="+", default=list(SPACES), choices=list(SPACES))
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="hps-eff-") as tmp:
        for name in args.spaces:
            results.append(run_space(name, SPACES[name], list(range(args.seeds)), Path(tmp)))
            print(f"{name}: done", file=sys.stderr)
    text = table(results)
    print(text)
    if args.write_readme:
        write_readme(text, "python benchmarks/search_efficiency.py " + " ".join(argv or sys.argv[1:]))


if __name__ == "__main__":
    main()
