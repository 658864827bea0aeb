"""A text trial killed after epoch 2 of 4 and re-run ends exactly as an uninterrupted one (issue 13).

The real CLI on the local executor, a tiny randomly initialised BERT (dropout and token
augmentation on, so every random generator matters) on real BBC News data, with CPU
torch: ``kill -9`` of the driver's whole process group once the epoch-2 checkpoint is on
disk, a re-run of the same command, and a comparison with an uninterrupted run of the
same study in another folder: final and intermediate values equal, final weights
bitwise equal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

STUDY = """
name: {name}
objective: {{metric: accuracy, direction: maximize}}
sampler: {{name: random, seed: 0}}
n_trials: 1
max_retries: 1
executor: {executor}
search_space:
  lr: {{type: float, low: 1.0e-3, high: 3.0e-3, log: true}}
trainer:
  kind: text_classification
  model: minilm-l6
  model_config: {{num_hidden_layers: 2, hidden_size: 64, num_attention_heads: 2, intermediate_size: 128}}
  dataset: bbc_news
  max_examples: {examples}
  max_length: 48
  batch_size: 32
  epochs: 4
  hidden_dropout: 0.1
  aug_mask_prob: 0.1
  aug_swap_prob: 0.1
  save_model: false
resources: {{cpus: {cpus}, workers: {workers}}}
"""

#: Where the runs' checkpoints and database live, relative to the study file.
CHECKPOINTS = "hpsearch-checkpoints"
MARKER = "hpsearch-checkpoint.json"


def write_study(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def start(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "-q"],
        cwd=path.parent,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"},
    )


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]


def step_dir(folder: Path, name: str, trial: int, step: int) -> Path:
    return folder / CHECKPOINTS / name / f"trial-{trial:05d}" / f"step-{step:09d}"


def session_alive(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid`` (the killed driver's, Ray's workers too)."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            alive.append(int(entry))
    return alive


def kill_after_step_2(path: Path, name: str, patience_s: float = 600) -> None:
    """Run the study until trial 0's epoch-2 checkpoint exists, then SIGKILL the driver's group.

    Waits for the whole session to be gone, so no process of the killed run writes on.
    """
    proc = start(path)
    # keep: 1, so once epoch 3 is saved epoch 2's checkpoint is gone: either will do.
    markers = [step_dir(path.parent, name, 0, step) / MARKER for step in (2, 3)]
    deadline = time.monotonic() + patience_s  # a safety net, not a threshold
    while not any(m.exists() for m in markers):
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the run ended before its epoch-2 checkpoint (rc {proc.returncode}): {err[-2000:]}")
        assert time.monotonic() < deadline, "no epoch-2 checkpoint"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    while session_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not session_alive(proc.pid), "processes of the killed run live on"


def trials(folder: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'hpsearch.db'}").trials


def final_weights(folder: Path, name: str, trial: int) -> dict[str, torch.Tensor]:
    """The model state dict of the trial's last checkpoint (the best trial's stays after the study)."""
    return torch.load(step_dir(folder, name, trial, 4) / "model.pt", map_location="cpu", weights_only=True)


def assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key


def check_resumed_equals_uninterrupted(run: Path, ref: Path, name: str) -> None:
    """The killed-and-re-run study (``run``) against the uninterrupted one (``ref``)."""
    first, second = trials(run, name)
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"] == "orphaned"
    assert second.state == TrialState.COMPLETE, second.user_attrs.get("fail_reason")
    assert second.params == first.params
    assert "checkpoint_error" not in second.user_attrs
    resumed = second.user_attrs["resumed_from"]
    # The kill lands after the epoch-2 checkpoint, and sometimes after epoch 3's too.
    assert resumed["trial"] == 0 and resumed["step"] in (2, 3), resumed
    print(f"{name}: resumed from {resumed}")
    # The re-run restored that checkpoint: it trained from there, not from scratch.
    assert second.user_attrs["restored_checkpoint"]["step"] == resumed["step"]
    assert "restored_checkpoint" not in first.user_attrs
    (want,) = trials(ref, name)
    assert want.state == TrialState.COMPLETE and want.params == second.params
    assert second.value == want.value
    assert second.intermediate_values == want.intermediate_values
    assert sorted(second.intermediate_values) == [1, 2, 3, 4]
    assert second.user_attrs["curve"] == want.user_attrs["curve"]
    assert_same_weights(final_weights(run, name, 1), final_weights(ref, name, 0))


def test_text_trial_killed_after_epoch_2_resumes_to_the_same_weights(tmp_path: Path) -> None:
    text = STUDY.format(name="tiny-resume", executor="local", examples=400, cpus=1, workers=1)
    run, ref = write_study(tmp_path / "run", text), write_study(tmp_path / "ref", text)
    reference = start(ref)  # the uninterrupted run, meanwhile
    kill_after_step_2(run, "tiny-resume")
    finish(start(run))
    finish(reference)
    check_resumed_equals_uninterrupted(run.parent, ref.parent, "tiny-resume")


@pytest.mark.slow
@pytest.mark.ray
def test_ddp_text_trial_two_gloo_ranks_killed_after_epoch_2_resumes_to_the_same_weights(tmp_path: Path) -> None:
    text = STUDY.format(name="ddp-resume", executor="ray", examples=256, cpus=0.9, workers=2)
    run, ref = write_study(tmp_path / "run", text), write_study(tmp_path / "ref", text)
    kill_after_step_2(run, "ddp-resume")
    finish(start(run))
    finish(start(ref))
    check_resumed_equals_uninterrupted(run.parent, ref.parent, "ddp-resume")
    (_, second) = trials(run.parent, "ddp-resume")
    assert [r["rank"] for r in second.user_attrs["ranks"]] == [0, 1]
