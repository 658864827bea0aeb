"""Failing trainers become data: non-finite loss, exceptions, out of memory, the failure budget."""

from __future__ import annotations

import textwrap

import optuna
import pytest
import torch
from optuna.trial import TrialState

import hpsearch
from hpsearch.trainers import NonFiniteLoss, RecordingChannel, TrialContext, TrialResources

FAILS = '''
import torch
from hpsearch.trainers import NonFiniteLoss

def nan_loss(params, ctx):
    ctx.report(0.5, 1)
    raise NonFiniteLoss(7, float("nan"))

def oom(params):
    # What torch raises when a CUDA allocation fails. No GPU here: the error is
    # raised directly, exactly as torch.cuda raises it.
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)")

def key_error(params):
    return {"value": {"a": 1}["b"]}
'''

STUDY = """
name: {name}
objective: {{metric: value}}
n_trials: 2
max_failures: 2
executor: local
{extra}
search_space:
  x: {{type: float, low: 0, high: 1}}
trainer: {{kind: python, function: "fails.py:{fn}"}}
"""


def _run(tmp_path, fn, extra=""):
    (tmp_path / "fails.py").write_text(textwrap.dedent(FAILS))
    path = tmp_path / f"{fn}.yaml"
    path.write_text(textwrap.dedent(STUDY.format(name=fn, fn=fn, extra=extra)))
    return path


def _trials(tmp_path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'hpsearch.db'}").trials


def test_non_finite_loss_is_fail_with_its_step(tmp_path):
    path = _run(tmp_path, "nan_loss")
    with pytest.raises(hpsearch.StudyFailedError, match="stopped after 2 failed trials"):
        hpsearch.run_study(str(path))
    trials = _trials(tmp_path, "nan_loss")
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    assert all(t.user_attrs["fail_reason"] == "non-finite loss at step 7" for t in trials)


def test_non_finite_loss_can_prune(tmp_path):
    path = _run(tmp_path, "nan_loss", extra="on_nonfinite_loss: prune")
    result = hpsearch.run_study(str(path))
    trials = _trials(tmp_path, "nan_loss")
    assert result.counts() == {"PRUNED": 2}
    assert all(t.user_attrs["fail_reason"] == "non-finite loss at step 7" for t in trials)


def test_out_of_memory_reason_and_hint(tmp_path):
    path = _run(tmp_path, "oom")
    with pytest.raises(hpsearch.StudyFailedError):
        hpsearch.run_study(str(path))
    for t in _trials(tmp_path, "oom"):
        reason = t.user_attrs["fail_reason"]
        assert reason.startswith("out of memory")
        assert "smaller batch_size" in reason and "resources.gpus" in reason
        assert t.user_attrs["fail_type"] == "OutOfMemoryError"


def test_exception_keeps_type_message_and_traceback(tmp_path):
    path = _run(tmp_path, "key_error")
    with pytest.raises(hpsearch.StudyFailedError):
        hpsearch.run_study(str(path))
    t = _trials(tmp_path, "key_error")[0]
    assert t.user_attrs["fail_reason"] == "KeyError: 'b'"
    assert t.user_attrs["fail_type"] == "KeyError" and t.user_attrs["fail_message"] == "'b'"
    assert "fails.py" in t.user_attrs["traceback"] and "key_error" in t.user_attrs["traceback"]


def test_torch_loop_detects_nan_loss_at_its_step(tmp_path):
    """The shared torch loop itself raises NonFiniteLoss on the first NaN loss."""
    from hpsearch.trainers.torch import TorchTrainingSettings, train_loop

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            return {"x": torch.full((4,), float(i)), "labels": torch.tensor(i % 2)}

    def collate(items):
        return {"x": torch.stack([it["x"] for it in items]), "labels": torch.stack([it["labels"] for it in items])}

    model = torch.nn.Linear(4, 2)

    def forward(m, batch):
        out = m(batch["x"])
        return out if forward.calls < 2 else out * float("nan")

    forward.calls = 0

    def counting(m, batch):
        forward.calls += 1
        return forward(m, batch)

    ctx = TrialContext(trial_number=0, params={}, resources=TrialResources(cpus=1),
                       channel=RecordingChannel(), objective="accuracy", work_dir=tmp_path)
    with pytest.raises(NonFiniteLoss, match="non-finite loss at step 2"):
        train_loop(model, Data(), Data(), TorchTrainingSettings(batch_size=8, epochs=1), ctx,
                   num_classes=2, train_collate=collate, eval_collate=collate, forward=counting)
