"""PBT against random search and TPE with ASHA at the same total epoch budget (issue 13).

On ``studies/digits_pbt.yaml`` (the digits CNN, CPU): for each seed,

* ``pbt``      the study as it is: 8 members x 12 epochs = 96 epochs;
* ``random``   the same space, random sampler, 8 trials x 12 epochs = 96 epochs;
* ``tpe+asha`` TPE with the successive-halving pruner (ASHA: min 1 epoch, reduction
  factor 3), trials added one by one until their reported epochs reach 96.

All on the local executor, one trial at a time (so compute is comparable), each
in a fresh folder. Reports, per method, the best validation accuracy (the
objective), the held-out test accuracy of that same trial, the epochs used and
the compute (summed trial wall time), as mean ± spread over the seeds. Usage::

    .venv/bin/python benchmarks/pbt.py [--seeds 0,1,2] [--write-readme]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- pbt:start -->", "<!-- pbt:end -->"
BUDGET_EPOCHS = 96


def _config(method: str, seed: int) -> dict[str, Any]:
    cfg = yaml.safe_load((ROOT / "studies" / "digits_pbt.yaml").read_text())
    cfg.update(executor="local", max_concurrent_trials=1, name=f"{method.replace('+', '-')}-{seed}")
    cfg["sampler"] = {"name": "random" if method != "tpe+asha" else "tpe", "seed": seed}
    if method != "pbt":
        cfg.pop("scheduler")
        cfg["n_trials"] = 8
    if method == "tpe+asha":
        cfg["pruner"] = {"name": "successive_halving", "options": {"min_resource": 1, "reduction_factor": 3}}
        cfg["n_trials"] = 1
    return cfg


def _epochs(study: Any) -> int:
    return sum(len(t.intermediate_values) - _carried(t) for t in study.trials)


def _carried(t: Any) -> int:
    resumed = t.user_attrs.get("resumed_from")
    return int(resumed["step"]) if resumed else 0


def run(method: str, seed: int) -> dict[str, float]:
    import optuna

    import hpsearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix=f"hps-pbt-{method}-") as d:
        path = Path(d) / "study.yaml"
        path.write_text(yaml.safe_dump(_config(method, seed), sort_keys=False))
        storage = f"sqlite:///{Path(d) / 'hpsearch.db'}"
        hpsearch.run_study(str(path))
        study = optuna.load_study(study_name=f"{method.replace('+', '-')}-{seed}", storage=storage)
        while method == "tpe+asha" and _epochs(study) < BUDGET_EPOCHS:
            hpsearch.run_study(str(path), more=1)
            study = optuna.load_study(study_name=f"{method.replace('+', '-')}-{seed}", storage=storage)
        best = study.best_trial
        compute = sum((t.datetime_complete - t.datetime_start).total_seconds()
                      for t in study.trials if t.datetime_complete and t.datetime_start)
        return {
            "val": float(best.value),
            "test": float(best.user_attrs.get("metrics", {}).get("test_accuracy", float("nan"))),
            "epochs": float(_epochs(study)),
            "compute": compute,
            "trials": float(len(study.trials)),
        }


def _fmt(values: list[float], digits: int = 4) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default="pbt,random,tpe+asha")
    ap.add_argument("--write-readme", action="store_true")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for method in args.methods.split(","):
        results = []
        for seed in seeds:
            print(f"{method} seed {seed} (load {os.getloadavg()[0]:.1f}) ...", file=sys.stderr, flush=True)
            results.append(run(method, seed))
        rows.append(
            f"| {method} | {_fmt([r['val'] for r in results])} | {_fmt([r['test'] for r in results])} | "
            f"{_fmt([r['epochs'] for r in results], 0)} | {_fmt([r['trials'] for r in results], 0)} | "
            f"{_fmt([r['compute'] for r in results], 1)} |"
        )
    block = "\n".join([
        f"Command: `python benchmarks/pbt.py {' '.join(sys.argv[1:])}` ({time.strftime('%Y-%m-%d')}); seeds "
        f"{args.seeds}; mean ± sd over seeds; load average {os.getloadavg()[0]:.1f} at the end",
        "",
        "| method | best validation accuracy | its test accuracy | epochs trained | trials | compute s |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    print(block)
    if args.write_readme:
        sys.path.insert(0, str(HERE))
        from _readme import replace_block

        replace_block(START, END, block)


if __name__ == "__main__":
    main()
