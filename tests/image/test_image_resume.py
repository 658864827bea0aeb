"""An image trial killed after epoch 2 of 4 and re-run ends exactly as an uninterrupted one (issue 13).

The real CLI on the local executor, the built-in CNN on real digits with the seed article's
augmentation plus mixup, cutout and dropout (so every generator matters), CPU torch:
``kill -9`` of the driver's whole process group once the epoch-2 checkpoint is on disk, a
re-run, and a comparison with an uninterrupted run in another folder (run meanwhile):
final and intermediate values equal, final weights bitwise equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hpsearch.checkpoints import CheckpointRef, CheckpointStore, TrialCheckpoints
from hpsearch.trainers import RecordingChannel, TrialContext, TrialResources
from hpsearch.trainers._image import ImageClassificationSettings, ImageClassificationTrainer
from hpsearch.trainers.torch import EpochSampler
from tests.text.test_text_resume import (
    assert_same_weights,
    check_resumed_equals_uninterrupted,
    finish,
    kill_after_step_2,
    start,
    write_study,
)

STUDY = """
name: digits-resume
objective: {metric: accuracy, direction: maximize}
sampler: {name: random, seed: 0}
n_trials: 1
max_retries: 1
executor: local
search_space:
  lr: {type: float, low: 1.0e-3, high: 3.0e-3, log: true}
trainer:
  kind: image_classification
  dataset: digits
  width: 32
  depth: 3
  dropout: 0.2
  augmentation_preset: keras_seed
  mixup_alpha: 0.2
  cutout_size: 0.25
  batch_size: 32
  epochs: 4
  sample_grid: 0
  save_model: false
resources: {cpus: 1}
"""


def test_image_trial_killed_after_epoch_2_resumes_to_the_same_weights(tmp_path: Path) -> None:
    run, ref = write_study(tmp_path / "run", STUDY), write_study(tmp_path / "ref", STUDY)
    reference = start(ref)
    kill_after_step_2(run, "digits-resume")
    finish(start(run))
    finish(reference)
    check_resumed_equals_uninterrupted(run.parent, ref.parent, "digits-resume")


# ---------------------------------------------------------------- in process, through the loop


def _trainer(tmp_path: Path, **settings: Any) -> ImageClassificationTrainer:
    base = {
        "width": 8,
        "max_examples": 600,
        "batch_size": 64,
        "epochs": 2,
        "dropout": 0.2,
        "rotation_range": 10,
        "mixup_alpha": 0.2,
        "cutout_size": 0.25,
        "sample_grid": 0,
        "save_model": False,
    }
    return ImageClassificationTrainer(
        ImageClassificationSettings.model_validate({**base, **settings}), study_dir=tmp_path
    )


def _trial(
    tmp_path: Path,
    store: CheckpointStore,
    number: int,
    resume: CheckpointRef | None = None,
    params: dict[str, Any] | None = None,
    **settings: Any,
) -> tuple[dict[str, float], TrialContext]:
    params = params or {}
    ctx = TrialContext(
        trial_number=number,
        params=params,
        resources=TrialResources(cpus=1),
        channel=RecordingChannel(),
        objective="accuracy",
        work_dir=tmp_path / "work",
        # Params may change on the way only as PBT does it (same_params off).
        checkpoints=TrialCheckpoints(store, number, params, resume, same_params=False),
    )
    return _trainer(tmp_path, **settings).run(params, ctx), ctx


def _reports(ctx: TrialContext) -> list[tuple[int, float]]:
    return list(ctx._channel.reports)  # type: ignore[attr-defined]


def _weights(store: CheckpointStore, trial: int, step: int) -> dict[str, torch.Tensor]:
    folder = Path(store.step_dir(CheckpointRef(trial, step)))
    return torch.load(folder / "model.pt", map_location="cpu", weights_only=True)


def test_resume_mid_epoch_with_report_every_steps_is_bitwise(tmp_path: Path) -> None:
    # 480 training images in batches of 64: 8 steps an epoch, reports at steps 5, 10, 15, 16.
    store = CheckpointStore(str(tmp_path / "ckpt"), "s", keep=10)
    want, full = _trial(tmp_path, store, 0, report_every_steps=5)
    assert [step for step, _ in _reports(full)] == [5, 10, 15, 16]
    assert store.steps(0) == [5, 10, 15, 16]
    # Step 10 is the 3rd batch of epoch 2: the same shuffle, the next batch, the same draws.
    got, resumed = _trial(tmp_path, store, 1, CheckpointRef(0, 10), report_every_steps=5)
    assert resumed.resumed_step == 10 and "checkpoint_error" not in resumed.user_attrs
    assert resumed.user_attrs["restored_checkpoint"] == {"step": 10, "optimizer_step": 10}
    assert _reports(resumed) == _reports(full)[2:]  # steps after the resumed one, same values
    assert resumed.user_attrs["curve"] == full.user_attrs["curve"]
    for key in ("accuracy", "f1_macro", "val_loss", "train_loss", "steps", "epochs_run"):
        assert got[key] == want[key], key
    assert_same_weights(_weights(store, 1, 16), _weights(store, 0, 16))


def test_a_resume_with_changed_params_keeps_the_state_and_uses_the_new_learning_rate(tmp_path: Path) -> None:
    # As a PBT segment that copies another member's checkpoint and explores its params.
    store = CheckpointStore(str(tmp_path / "ckpt"), "s", keep=10)
    settings = {"lr_schedule": "linear", "weight_decay": 0.01, "epochs": 3}
    _, parent = _trial(tmp_path, store, 0, params={"lr": 1e-3}, **settings)
    _, child = _trial(tmp_path, store, 1, CheckpointRef(0, 1), params={"lr": 4e-3, "weight_decay": 0.0}, **settings)
    assert child.user_attrs["restored_checkpoint"] == {"step": 1, "optimizer_step": 8}
    assert "checkpoint_error" not in child.user_attrs
    assert [step for step, _ in _reports(child)] == [2, 3]
    # The schedule goes on from step 8 of 24, from the new peak: 4e-3 * (1 - 16 / 24) at the report of step 2.
    lrs = [round(record["lr"], 12) for record in child.user_attrs["curve"]]
    assert lrs == [round(1e-3 * 16 / 24, 12), round(4e-3 * 8 / 24, 12), 0.0]
    assert child.user_attrs["curve"][0] == parent.user_attrs["curve"][0]  # the parent's epoch 1
    assert not torch.equal(_weights(store, 1, 3)["body.0.weight"], _weights(store, 0, 3)["body.0.weight"])


def test_a_checkpoint_of_another_model_shape_means_a_fresh_start(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "ckpt"), "s", keep=10)
    _trial(tmp_path, store, 0, depth=2)
    # depth 3: the first block has the same shapes (loaded before the mismatch shows), the rest not.
    got, ctx = _trial(tmp_path, store, 1, CheckpointRef(0, 1), depth=3)
    error = ctx.user_attrs["checkpoint_error"]
    assert error.startswith("trial 0 step 1: not restored, the trial starts fresh: RuntimeError")
    assert "restored_checkpoint" not in ctx.user_attrs
    assert [step for step, _ in _reports(ctx)] == [1, 2]
    # Exactly a fresh run: weights, optimizer and generators went back to how they were built.
    want, fresh = _trial(tmp_path, store, 2, depth=3)
    assert _reports(ctx) == _reports(fresh) and got["val_loss"] == want["val_loss"]
    assert_same_weights(_weights(store, 1, 2), _weights(store, 2, 2))


def test_a_checkpoint_of_a_run_with_other_epochs_means_a_fresh_start(tmp_path: Path) -> None:
    # Same params, other trainer settings (the schedule spans 3 epochs, not 2): not the same run.
    store = CheckpointStore(str(tmp_path / "ckpt"), "s")
    _trial(tmp_path, store, 0, epochs=2)
    _, ctx = _trial(tmp_path, store, 1, CheckpointRef(0, 2), epochs=3)
    assert ctx.user_attrs["checkpoint_error"].endswith("it was written with epochs=2, this run has 3")
    assert [step for step, _ in _reports(ctx)] == [1, 2, 3]


def test_a_pickled_checkpoint_is_not_restored_into_a_torch_trainer(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "ckpt"), "s")
    TrialCheckpoints(store, 0, {}, None).save({"epoch": 1}, 1)  # what a python trainer leaves
    got, ctx = _trial(tmp_path, store, 1, CheckpointRef(0, 1), epochs=1)
    assert "a dict object, not a torch trainer's checkpoint folder" in ctx.user_attrs["checkpoint_error"]
    assert [step for step, _ in _reports(ctx)] == [1] and got["epochs_run"] == 1


def test_epoch_sampler_order_depends_on_seed_and_epoch_and_skips_without_reading() -> None:
    one = EpochSampler(10, seed=3)
    one.set_epoch(1)
    order = list(one)
    assert sorted(order) == list(range(10)) and len(one) == 10
    one.set_epoch(1, skip=4)
    assert list(one) == order[4:] and len(one) == 6
    one.set_epoch(2)
    assert list(one) != order
    ranks = [EpochSampler(10, seed=3, rank=r, world_size=3) for r in range(3)]
    for r in ranks:
        r.set_epoch(1)
    shares = [list(r) for r in ranks]
    assert [len(s) for s in shares] == [4, 4, 4]  # padded with the first indices, as DistributedSampler
    assert sorted(i for s in shares for i in s) == sorted(order + order[:2])
