"""Per-trial logs (issue 15): every trial's stdout and stderr kept as a bounded ``trial.log`` artifact.

Real studies through the CLI (local threads, private Ray, Ray Train DDP), the
real ``hpsearch logs`` command, and the Ray executor driven directly where the
test must look at a trial while it runs. Trials that must still be running
when the test looks wait for a file the test writes (order, not timing).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta
from optuna.trial import TrialState

from hpsearch.executors import LOG_MB_ENV, TrialJob, live_log_path
from hpsearch.trainers import TrialResources
from hpsearch.trainers._python import PythonSettings, PythonTrainer
from tests.conftest import run_cli
from tests.gate import finish_trials, wait_until

NOISY = '''
import os, sys, time
from pathlib import Path

HERE = Path(__file__).parent


def _wait_for(path, patience=120.0):
    deadline = time.monotonic() + patience
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {path.name}")
        time.sleep(0.02)


def together(params, ctx):
    """Two trials at once: each prints, waits for the other to have printed, prints again."""
    n = ctx.trial_number
    print(f"out {n} first")
    print(f"err {n} first", file=sys.stderr)
    (HERE / f"arrived-{n}").write_text("1")
    _wait_for(HERE / f"arrived-{1 - n}")
    print(f"out {n} second")
    return params["x"]


def fails(params):
    print("working on it")
    raise ValueError("this trial fails on purpose")


def silent(params):
    return params["x"]


def chatty(params):
    for i in range(3000):
        print(f"line {i:05d} " + "x" * 40)
    return params["x"]


def held(params, ctx):
    """Prints, then waits for release-<n> before printing again and ending."""
    n = ctx.trial_number
    print(f"before the gate {n}", flush=True)
    os.write(2, f"c-level stderr {n}\\n".encode())
    (HERE / f"arrived-{n}").write_text("1")
    _wait_for(HERE / f"release-{n}", patience=900.0)  # longer than the test's own safety net
    print(f"after the gate {n}")
    return params["x"]


def paced(params, ctx):
    """Prints 30 lines of 100 bytes, each once the test has seen the one before (ack-<i>)."""
    for i in range(30):
        print(f"paced {i:02d} " + "y" * 90, flush=True)
        (HERE / "arrived-0").write_text("1")
        _wait_for(HERE / f"ack-{i}", patience=900.0)
    return params["x"]


def ranks(params, ctx):
    import torch.distributed as dist

    rank = dist.get_rank()
    print(f"hello from rank {rank}")
    print(f"stderr of rank {rank}", file=sys.stderr)
    ctx.report(float(rank), 1)
    return {"value": params["x"]}
'''


def _study(function: str, *, n_trials: int = 2, executor: str = "local", extra: str = "") -> str:
    return (
        "name: logs\n"
        "objective: {metric: value, direction: minimize}\n"
        "sampler: {name: random, seed: 0}\n"
        f"n_trials: {n_trials}\n"
        "max_concurrent_trials: 2\n"
        "max_failures: 5\n"
        f"executor: {executor}\n"
        "search_space:\n"
        "  x: {type: float, low: 0, high: 1}\n"
        f'trainer: {{kind: python, function: "obj.py:{function}"}}\n'
        f"{extra}"
    )


def _trials(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="logs", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    return sorted(study.trials, key=lambda t: t.number)


def _log(tmp_path: Path, trial: optuna.trial.FrozenTrial) -> str:
    store = FileSystemArtifactStore(str(tmp_path / "hpsearch-artifacts"))
    with store.open_reader(trial.user_attrs["artifacts"]["trial.log"]) as f:
        return f.read().decode()


def test_each_local_trial_keeps_its_own_output(write_study, tmp_path):
    path = write_study(_study("together"), **{"obj.py": NOISY})
    res = run_cli("run", path, "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    first, second = _trials(tmp_path)
    one, two = _log(tmp_path, first), _log(tmp_path, second)
    # Its own stdout and stderr, and nothing of the other trial, though both ran at once.
    assert one.splitlines() == ["out 0 first", "err 0 first", "out 0 second"]
    assert two.splitlines() == ["out 1 first", "err 1 first", "out 1 second"]
    # The dashboard's artifact pane lists what Optuna's artifact API lists.
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'hpsearch.db'}")
    assert "trial.log" in [m.filename for m in get_all_artifact_meta(second, storage=storage)]
    # The terminal still sees the trials' prints.
    assert "out 0 first" in res.stdout and "err 1 first" in res.stderr


def test_logs_command_prints_a_failed_trials_output_and_traceback(write_study, tmp_path):
    path = write_study(_study("fails", n_trials=1).replace("max_failures: 5", "max_failures: 1"), **{"obj.py": NOISY})
    assert run_cli("run", path, "-q", cwd=tmp_path).returncode == 1  # its failure budget is used up
    (trial,) = _trials(tmp_path)
    assert trial.state == TrialState.FAIL
    res = run_cli("logs", path, "--trial", "0", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[:2] == ["working on it", "[hpsearch] trial failed: ValueError: this trial fails on purpose"]
    assert "Traceback (most recent call last):" in lines and lines[-1] == "ValueError: this trial fails on purpose"
    # --follow on a trial that has ended prints its log and exits.
    followed = run_cli("logs", path, "--trial", "0", "--follow", cwd=tmp_path, timeout=60)
    assert followed.returncode == 0 and followed.stdout == res.stdout
    missing = run_cli("logs", path, "--trial", "7", cwd=tmp_path)
    assert missing.returncode == 2
    expected = "error: study 'logs' has no trial 7; see `hpsearch show` for its trials"
    assert missing.stderr.strip().splitlines() == [expected]


def test_log_keeps_the_last_part_and_says_it_was_truncated(write_study, tmp_path):
    path = write_study(_study("chatty", n_trials=1), **{"obj.py": NOISY})
    res = run_cli("run", path, "-q", cwd=tmp_path, env={LOG_MB_ENV: "0.02"})  # about 20 KB of 150 KB printed
    assert res.returncode == 0, res.stderr[-3000:]
    (trial,) = _trials(tmp_path)
    text = _log(tmp_path, trial)
    lines = text.splitlines()
    assert lines[0].startswith("[hpsearch] output truncated: the first ") and LOG_MB_ENV in lines[0]
    assert lines[-1].startswith("line 02999 ") and "line 00000 " not in text
    assert all(line.startswith("line ") and len(line) == 51 for line in lines[1:])  # whole lines only
    assert 0.02 * 2**20 - 60 <= len(text.encode()) - len(lines[0]) - 1 <= 0.02 * 2**20


def test_a_silent_trial_has_no_log(write_study, tmp_path):
    path = write_study(_study("silent", n_trials=1), **{"obj.py": NOISY})
    res = run_cli("run", path, "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (trial,) = _trials(tmp_path)
    assert "trial.log" not in (trial.user_attrs.get("artifacts") or {})
    res = run_cli("logs", path, "--trial", "0", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip() == "error: trial 0 of study 'logs' (COMPLETE) has no trial.log: it printed nothing"


def _live0(tmp_path: Path) -> Path:
    """Trial 0's live log (a local trial writes it as it prints)."""
    return live_log_path(tmp_path / "hpsearch-artifacts", "logs", 0)


NO_LIVE = "no live log while the trial runs: the manager's jobs must name TrialJob.log_path (study/_jobs.py)"


def _reader(proc: subprocess.Popen[str]) -> list[str]:
    """Lines of ``proc``'s stdout as they come (read on a thread)."""
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return lines


def _popen(*args: str | os.PathLike[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hpsearch", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def test_follow_sees_lines_while_the_trial_runs_and_exits_when_it_ends(write_study, tmp_path):
    path = write_study(_study("held", n_trials=1), **{"obj.py": NOISY})
    study = _popen("run", path, "-q", cwd=tmp_path)
    follow = None
    try:
        wait_until("the trial printed and waits", (tmp_path / "arrived-0").exists, study)
        assert _live0(tmp_path).exists(), NO_LIVE
        follow = _popen("logs", path, "--trial", "0", "--follow", cwd=tmp_path)
        lines = _reader(follow)
        wait_until("--follow printed the trial's first line", lambda: "before the gate 0" in lines, follow)
        # The trial is held until the test releases it: the line came while it ran.
        assert "after the gate 0" not in lines and follow.poll() is None
        (tmp_path / "release-0").write_text("1")
        assert follow.wait(timeout=120) == 0, follow.stderr.read() if follow.stderr else ""
        assert study.wait(timeout=120) == 0
        wait_until("the reader saw the last line", lambda: "after the gate 0" in lines)
        assert lines == ["before the gate 0", "after the gate 0"]
        assert not _live0(tmp_path).exists()  # removed at the end
    finally:
        for proc in (study, follow):
            if proc is not None and proc.poll() is None:
                proc.kill()


def test_follow_keeps_up_while_the_live_log_rotates(write_study, tmp_path):
    # A 1 KB limit: the live file is renamed and begun again every 10 lines.
    path = write_study(_study("paced", n_trials=1), **{"obj.py": NOISY})
    study = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "-q"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, LOG_MB_ENV: str(1024 / 2**20)},
    )
    follow = None
    try:
        wait_until("the trial started", (tmp_path / "arrived-0").exists, study)
        assert _live0(tmp_path).exists(), NO_LIVE
        follow = _popen("logs", path, "--trial", "0", "--follow", cwd=tmp_path)
        lines = _reader(follow)
        for i in range(30):
            wait_until(f"--follow printed line {i}", lambda i=i: len(lines) > i, follow)
            (tmp_path / f"ack-{i}").write_text("1")
        assert follow.wait(timeout=120) == 0
        assert study.wait(timeout=120) == 0
        assert lines == [f"paced {i:02d} " + "y" * 90 for i in range(30)]  # every line, once, in order
    finally:
        for proc in (study, follow):
            if proc is not None and proc.poll() is None:
                proc.kill()


@pytest.mark.ray
def test_ray_trials_ship_output_live_and_keep_c_level_output(tmp_path):
    from hpsearch.executors._ray import RayExecutor

    (tmp_path / "obj.py").write_text(NOISY)
    settings = PythonSettings.model_validate({"function": "obj.py:held"})
    trainer = PythonTrainer(settings, study_dir=tmp_path, objective="value")
    live = [live_log_path(tmp_path / "art", "ray", n) for n in (0, 1)]
    jobs = [
        TrialJob(n, {"x": 0.5}, trainer, TrialResources(cpus=0.5), "ray", "value", log_path=str(live[n]))
        for n in (0, 1)
    ]
    executor = RayExecutor(max_concurrent=2, num_cpus=2)
    executor.start()
    try:
        for job in jobs:
            executor.submit(job)
        done: dict[int, object] = {}

        def live_has(n: int) -> bool:
            finish_trials_nowait(executor, done)
            return live[n].exists() and f"before the gate {n}" in live[n].read_text()

        for n in (0, 1):  # both trials are held at the gate: their first lines came through the hub
            wait_until(f"trial {n}'s first line in its live log", lambda n=n: live_has(n))
        for n in (0, 1):
            (tmp_path / f"release-{n}").write_text("1")
        outcomes = finish_trials(executor, {0, 1}, done)
    finally:
        executor.shutdown()
    for n in (0, 1):
        log = outcomes[n].artifacts["trial.log"].decode()
        assert f"before the gate {n}" in log and f"after the gate {n}" in log
        assert f"c-level stderr {n}" in log  # written to fd 2 below Python: kept in a Ray worker
        assert f"gate {1 - n}" not in log and f"stderr {1 - n}" not in log
        assert not live[n].exists()  # the live copy is removed once the trial ended


def finish_trials_nowait(executor, done: dict[int, object]) -> None:
    """One short poll: collect finished outcomes, let reported trials go on."""
    for e in executor.poll(timeout=0.1):
        if e.kind.value == "finished":
            done[e.number] = e.outcome
        else:
            executor.decide(e.number, e.step, False)


@pytest.mark.ray
@pytest.mark.slow
def test_a_data_parallel_trial_keeps_every_ranks_lines(write_study, tmp_path):
    extra = "resources: {cpus: 0.9, workers: 2}\n"
    path = write_study(_study("ranks", n_trials=1, executor="ray", extra=extra), **{"obj.py": NOISY})
    res = run_cli("run", path, "-q", cwd=tmp_path, timeout=400)
    assert res.returncode == 0, res.stderr[-4000:]
    (trial,) = _trials(tmp_path)
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    text = _log(tmp_path, trial)
    for rank in (0, 1):
        assert f"[rank {rank}] hello from rank {rank}" in text
        assert f"[rank {rank}] stderr of rank {rank}" in text


def test_the_storage_password_is_masked_in_a_stored_log(tmp_path):
    """A trial that prints the storage URL: the log is stored with the password masked (as every attribute is)."""
    import hpsearch
    from hpsearch.study._artifacts import ArtifactUploader

    (tmp_path / "s.yaml").write_text('name: s\ntrainer: {kind: python, function: "obj.py:f"}\n')
    cfg = hpsearch.load_config(tmp_path / "s.yaml")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}", study_name="s")
    trial = study.ask()
    uploader = ArtifactUploader(cfg, ("hunter22",))
    ids = uploader.upload_trial(trial, {"trial.log": b"connecting to postgresql://hps:hunter22@db/hps\n"}, None, None)
    stored = (cfg.resolved_artifacts() / ids["trial.log"]).read_bytes()
    assert b"hunter22" not in stored and b"postgresql://hps:" in stored
