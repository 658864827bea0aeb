"""Checkpoints (issue 13): a stopped trial's re-run continues from its last checkpoint.

The trainer here is a ``python`` function that checkpoints a small state after each of
4 epochs; a test holds it in epoch 3 (after the epoch-2 checkpoint) until it has
killed something, then lets the re-run finish, and compares with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.checkpoints import MARKER, CheckpointRef, CheckpointStore
from tests.gate import wait_until

EPOCHS = '''
import json, os, time
from pathlib import Path
from hpsearch.trainers import TrialPruned

HERE = Path(__file__).parent


def epochs(params, ctx):
    state = ctx.load_checkpoint() or {"epoch": 0, "score": 0.0}
    log = {"trial": ctx.trial_number, "from": state["epoch"], "resumed_step": ctx.resumed_step}
    (HERE / f"started-{ctx.trial_number}.json").write_text(json.dumps(log))
    for epoch in range(state["epoch"] + 1, 5):
        if epoch == 3 and not (HERE / "release").exists():
            (HERE / "held").write_text(str(os.getpid()))
            if os.environ.get("HPS_DIE_IN_WORKER"):
                os.kill(os.getpid(), 9)  # the worker dies mid-training
            while not (HERE / "release").exists():
                time.sleep(0.02)
        state["score"] = round(state["score"] * 0.5 + params["x"] * epoch, 10)
        state["epoch"] = epoch
        ctx.report(state["score"], epoch)
        ctx.save_checkpoint(state, epoch)
        if ctx.should_prune():
            raise TrialPruned()
    return state["score"]
'''

STUDY = """
name: ckpt
objective: {{metric: value, direction: maximize}}
sampler: {{name: random, seed: 3}}
n_trials: 1
max_retries: 1
executor: {executor}
search_space:
  x: {{type: float, low: 0, high: 1}}
trainer: {{kind: python, function: "obj.py:epochs"}}
{extra}
"""


def _write(folder: Path, executor: str = "local", extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "obj.py").write_text(textwrap.dedent(EPOCHS))
    path = folder / "study.yaml"
    path.write_text(STUDY.format(executor=executor, extra=extra))
    return path


def _start(path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "-q"], cwd=path.parent, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env={**os.environ, **(env or {})},
    )


def _run(path: Path) -> None:
    proc = _start(path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]


def _trials(folder: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="ckpt", storage=f"sqlite:///{folder / 'hpsearch.db'}").trials


def _uninterrupted(tmp_path: Path) -> optuna.trial.FrozenTrial:
    ref = tmp_path / "ref"
    _write(ref)
    (ref / "release").write_text("")
    _run(ref / "study.yaml")
    (trial,) = _trials(ref)
    return trial


def test_kill_9_of_the_driver_then_the_rerun_continues_from_the_last_checkpoint(tmp_path):
    path = _write(tmp_path / "run")
    proc = _start(path)
    wait_until("the trial held in epoch 3", (path.parent / "held").exists, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    store = CheckpointStore(str(path.parent / "hpsearch-checkpoints"), "ckpt")
    assert store.steps(0) == [2]  # keep: 1, and epoch 2 was the last one saved
    (path.parent / "release").write_text("")
    _run(path)
    first, second = _trials(path.parent)
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"] == "orphaned"
    assert second.state == TrialState.COMPLETE and second.params == first.params
    assert second.user_attrs["resumed_from"] == {"trial": 0, "step": 2}
    started = json.loads((path.parent / "started-1.json").read_text())
    assert started == {"trial": 1, "from": 2, "resumed_step": 2}  # epochs 1-2 were not run again
    ref = _uninterrupted(tmp_path)
    assert second.value == ref.value
    assert second.intermediate_values == ref.intermediate_values  # the whole curve, 1..4
    # Disk use stays bounded: the orphan's checkpoints are gone, the best trial's stay.
    assert store.trials() == [1] and store.steps(1) == [4]


def test_a_worker_killed_mid_training_is_retried_from_its_checkpoint_on_ray(tmp_path):
    path = _write(tmp_path / "run", executor="ray")
    proc = _start(path, env={"HPS_DIE_IN_WORKER": "1"})
    wait_until("the worker killed in epoch 3", (path.parent / "held").exists, proc)
    (path.parent / "release").write_text("")  # the retry runs through
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    first, second = _trials(path.parent)
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"].startswith("worker died")
    assert second.user_attrs["resumed_from"] == {"trial": 0, "step": 2}
    assert json.loads((path.parent / "started-1.json").read_text())["from"] == 2
    assert second.value == _uninterrupted(tmp_path).value


def test_a_corrupt_checkpoint_means_a_fresh_start_with_the_reason_stored(tmp_path):
    path = _write(tmp_path / "run")
    proc = _start(path)
    wait_until("the trial held in epoch 3", (path.parent / "held").exists, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    state = path.parent / "hpsearch-checkpoints" / "ckpt" / "trial-00000" / "step-000000002" / "state.json"
    state.write_bytes(b"{not json")
    (path.parent / "release").write_text("")
    _run(path)
    second = _trials(path.parent)[1]
    assert second.state == TrialState.COMPLETE
    assert "trial 0 step 2" in second.user_attrs["checkpoint_error"]
    assert json.loads((path.parent / "started-1.json").read_text())["from"] == 0
    assert second.value == _uninterrupted(tmp_path).value


def test_checkpoints_off_starts_the_rerun_at_step_zero(tmp_path):
    path = _write(tmp_path / "run", extra="checkpoints: {enabled: false}")
    proc = _start(path)
    wait_until("the trial held in epoch 3", (path.parent / "held").exists, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    (path.parent / "release").write_text("")
    _run(path)
    assert "resumed_from" not in _trials(path.parent)[1].user_attrs
    assert json.loads((path.parent / "started-1.json").read_text())["from"] == 0
    assert not (path.parent / "hpsearch-checkpoints").exists()


def test_store_writes_are_atomic_and_keep_the_newest(tmp_path):
    store = CheckpointStore(str(tmp_path), "s", keep=2)
    src = tmp_path / "src"
    src.mkdir()
    for step in (1, 2, 3):
        (src / "w.bin").write_bytes(pickle.dumps(step))
        store.save_dir(7, step, src, {})
    assert store.steps(7) == [2, 3]
    # A write killed half-way leaves a folder without its marker: it is not a checkpoint.
    half = Path(store.step_dir(CheckpointRef(7, 4)))
    half.mkdir()
    (half / "w.bin").write_bytes(b"partial")
    assert store.latest(7) == CheckpointRef(7, 3)
    assert pickle.loads((store.fetch(CheckpointRef(7, 3)) / "w.bin").read_bytes()) == 3
    assert (store.fetch(CheckpointRef(7, 3)) / MARKER).is_file()


def test_a_relative_checkpoint_folder_with_a_ray_cluster_is_refused(tmp_path):
    path = _write(tmp_path, executor="ray", extra="ray: {address: '127.0.0.1:6379'}\ncheckpoints: {path: ckpts}")
    res = subprocess.run([sys.executable, "-m", "hpsearch", "run", str(path)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 2
    assert "checkpoints.path: 'ckpts' is a relative folder" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "hpsearch.db").exists()


def test_a_pyarrow_uri_root_round_trips(tmp_path):
    # A file:// URI goes through pyarrow's filesystem layer, as s3:// or gs:// would (no
    # object store can be reached here): the same code path, on real files.
    store = CheckpointStore(f"file://{tmp_path}/ckpts", "s")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("hello")
    store.save_dir(3, 5, src, {"kind": "dir"})
    assert store.latest(3) == CheckpointRef(3, 5)
    got = store.fetch(CheckpointRef(3, 5))
    assert (got / "sub" / "a.txt").read_text() == "hello"
    assert store.meta(CheckpointRef(3, 5))["kind"] == "dir"
    store.delete_trial(3)
    assert store.latest(3) is None


def test_ctrl_c_then_the_rerun_continues_after_the_epoch_that_finished(tmp_path):
    path = _write(tmp_path / "run")
    proc = _start(path)
    wait_until("the trial held in epoch 3", (path.parent / "held").exists, proc)
    os.kill(proc.pid, signal.SIGINT)  # the first Ctrl-C: running trials stop after their current epoch
    (path.parent / "release").write_text("")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    _run(path)
    first, second = _trials(path.parent)
    assert first.user_attrs["fail_reason"] == "interrupted"
    assert second.user_attrs["resumed_from"] == {"trial": 0, "step": 3}  # epoch 3 finished after the stop
    assert json.loads((path.parent / "started-1.json").read_text())["from"] == 3
    ref = _uninterrupted(tmp_path)
    assert (second.value, second.intermediate_values) == (ref.value, ref.intermediate_values)


def test_object_checkpoints_round_trip_without_pickle(tmp_path):
    import numpy as np
    import torch

    from hpsearch.checkpoints import TrialCheckpoints

    store = CheckpointStore(str(tmp_path), "s")
    state = {"epoch": 3, "w": np.arange(6.0).reshape(2, 3), "t": torch.ones(2, dtype=torch.bfloat16),
             "pair": (1, "a"), "hist": [0.5, float("nan")], "n": np.int64(7)}
    TrialCheckpoints(store, 0, {"x": 1}, None).save(state, 3)
    folder = Path(store.step_dir(CheckpointRef(0, 3)))
    assert sorted(p.name for p in folder.iterdir()) == sorted([MARKER, "arrays.npz", "state.json"])
    got = TrialCheckpoints(store, 1, {"x": 1}, CheckpointRef(0, 3)).load()
    assert got["epoch"] == 3 and got["pair"] == (1, "a") and got["n"] == 7
    assert np.array_equal(got["w"], state["w"]) and got["t"].dtype == torch.float32
    assert got["hist"][0] == 0.5 and got["hist"][1] != got["hist"][1]  # NaN survives
    # What only pickle could store is refused when saved, with what to do instead.
    with pytest.raises(TypeError, match=r"state\['f'\] is a builtin_function_or_method.*write a folder"):
        TrialCheckpoints(store, 0, {"x": 1}, None).save({"f": len}, 4)
    # Other params: refused (a fresh start), unless the caller allows it (PBT).
    other = TrialCheckpoints(store, 2, {"x": 2}, CheckpointRef(0, 3))
    assert other.load() is None and "other params" in (other.error or "")
    assert TrialCheckpoints(store, 2, {"x": 2}, CheckpointRef(0, 3), same_params=False).load()["epoch"] == 3
    # A checkpoint gone missing (deleted between the choice and the load): a fresh start, the reason kept.
    gone = TrialCheckpoints(store, 3, {"x": 1}, CheckpointRef(0, 99))
    assert gone.load() is None and "trial 0 step 99" in (gone.error or "") and gone.loaded_step is None
