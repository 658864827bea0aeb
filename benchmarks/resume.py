"""Work lost to interruptions, with and without checkpoints (issue 13).

One study, run twice from scratch: once with checkpoints (the default) and once with
``checkpoints: {enabled: false}`` (every re-run starts at epoch 0, as before issue 13).
Each time the driver's whole process group is killed (SIGKILL) ``--kills`` times at
random points while a trial runs (the same seeded points for both), then the study is
re-run to its end. From the stored trials it reports:

* what it cost: the wall time of every ``hpsearch run`` (the killed ones included, start-up
  and checkpoint writes too), and the summed durations of the COMPLETE trials (a resumed
  trial counts only its own part);
* the work lost per interruption: the epochs the killed trial had stored that its
  re-run did again (its last stored epoch less the step its re-run resumed from).

The study (``digits-cnn`` from studies/digits_cnn.yaml cut to 3 trials of 4 epochs,
batch 16, on the local executor, no pruner) is rewritten into a temp folder. Each kill
lands 20 to 80% into an epoch of a running trial (an uninterrupted trial first measures
the epoch time). Usage::

    .venv/bin/python benchmarks/resume.py [--kills 3] [--trials 3] [--epochs 4] [--write-readme]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- resume:start -->", "<!-- resume:end -->"


def _study(folder: Path, trials: int, epochs: int, checkpoints: bool) -> Path:
    cfg = yaml.safe_load((ROOT / "studies" / "digits_cnn.yaml").read_text())
    cfg.update(n_trials=trials, executor="local", max_concurrent_trials=1, pruner={"name": "none"})
    cfg["sampler"] = {"name": "random", "seed": 0}
    cfg["trainer"]["epochs"] = epochs
    cfg["trainer"]["batch_size"] = 16  # more steps per epoch: an epoch long enough to land a kill inside
    if not checkpoints:
        cfg["checkpoints"] = {"enabled": False}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _reports(db: Path) -> int:
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute("SELECT COUNT(*) FROM trial_intermediate_values").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


#: Wall seconds of every `hpsearch run` of the current measurement, killed ones included.
WALL: list[float] = []


def _run(path: Path, kill_after_reports: int | None, delay: float = 0.0) -> bool:
    """Run the study; with ``kill_after_reports``, SIGKILL its process group ``delay`` s after
    that many intermediate values are stored (inside the next epoch). True if it was killed."""
    t0 = time.monotonic()
    try:
        return _run_once(path, kill_after_reports, delay)
    finally:
        WALL.append(time.monotonic() - t0)


def _run_once(path: Path, kill_after_reports: int | None, delay: float) -> bool:
    proc = subprocess.Popen([sys.executable, "-m", "hpsearch", "run", str(path), "-q"], cwd=path.parent,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after_reports is None:
        _, err = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            raise SystemExit(f"run failed: {err.decode()[-2000:]}")
        return False
    while proc.poll() is None and _reports(path.parent / "hpsearch.db") < kill_after_reports:
        time.sleep(0.05)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def epoch_seconds(folder: Path, epochs: int) -> float:
    """The median seconds per epoch of one uninterrupted trial (to aim the kills inside an epoch)."""
    import optuna

    path = _study(folder, 1, epochs, True)
    _run(path, None)
    (t,) = optuna.load_study(study_name="digits-cnn", storage=f"sqlite:///{folder / 'hpsearch.db'}").trials
    return _seconds(t) / epochs


def measure(
    folder: Path, trials: int, epochs: int, kills: list[tuple[int, float]], checkpoints: bool
) -> dict[str, Any]:
    import optuna

    path = _study(folder, trials, epochs, checkpoints)
    WALL.clear()
    kills_done = sum(_run(path, point, delay) for point, delay in kills)
    _run(path, None)
    wall = sum(WALL)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="digits-cnn", storage=f"sqlite:///{folder / 'hpsearch.db'}")
    ts = study.get_trials(deepcopy=False)
    compute = sum(_seconds(t) for t in ts if t.state.name == "COMPLETE")
    lost, epoch_s = [], []
    for t in ts:
        source = t.user_attrs.get("hpsearch.retry_of")
        if source is None:
            continue
        stored = max(ts[source].intermediate_values, default=0)
        resumed = t.user_attrs.get("resumed_from")
        lost.append(stored - (resumed["step"] if resumed else 0))
    for t in ts:
        if t.state.name == "COMPLETE" and "resumed_from" not in t.user_attrs:
            epoch_s.append(_seconds(t) / epochs)
    best = study.best_value
    return {
        "kills": kills_done, "wall_s": wall, "compute_s": compute, "lost": lost,
        "epoch_s": statistics.median(epoch_s or [0.0]), "best": best,
        "complete": sum(t.state.name == "COMPLETE" for t in ts),
    }


def _seconds(t: object) -> float:
    start = getattr(t, "datetime_start", None)
    end = getattr(t, "datetime_complete", None)
    return (end - start).total_seconds() if start and end else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-readme", action="store_true")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    total = args.trials * args.epochs
    with tempfile.TemporaryDirectory(prefix="hps-resume-cal-") as d:
        epoch_s = epoch_seconds(Path(d), args.epochs)
    # Kill points: after k stored epochs, where k is not a trial's last (so a trial is still
    # running), then 20 to 80% into the next epoch; the same points for both modes.
    inside = [k for k in range(1, total) if k % args.epochs]
    points = sorted(rng.sample(inside, min(args.kills, len(inside))))
    kills = [(k, rng.uniform(0.2, 0.8) * epoch_s) for k in points]
    rows = []
    for checkpoints in (True, False):
        with tempfile.TemporaryDirectory(prefix="hps-resume-") as d:
            r = measure(Path(d), args.trials, args.epochs, kills, checkpoints)
        lost = r["lost"]
        rows.append(
            f"| {'on (default)' if checkpoints else 'off'} | {r['kills']} | {r['wall_s']:.1f} | {r['compute_s']:.1f} | "
            f"{', '.join(map(str, lost)) or '-'} | {max(lost, default=0)} | "
            f"{sum(lost) * r['epoch_s']:.1f} | {r['complete']} | {r['best']:.4f} |"
        )
    block = "\n".join([
        f"Command: `python benchmarks/resume.py {' '.join(sys.argv[1:])}` ({time.strftime('%Y-%m-%d')}); "
        f"{args.trials} trials × {args.epochs} epochs of digits-cnn, local executor, kills after "
        f"{', '.join(map(str, points))} stored epochs, 20 to 80% into the next epoch ({epoch_s:.2f} s each); "
        f"load average {os.getloadavg()[0]:.1f} at the end",
        "",
        "| checkpoints | kills | wall s, all runs | COMPLETE trials' own s | epochs repeated per re-run | most "
        "| repeated s (≈ epochs × median epoch) | COMPLETE trials | best accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    print(block)
    if args.write_readme:
        sys.path.insert(0, str(HERE))
        from _readme import replace_block

        replace_block(START, END, block)


if __name__ == "__main__":
    main()
