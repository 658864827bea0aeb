"""Population-based training (issue 13): segments as trials, exploit/explore, a kill -9 mid-study."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import run_cli
from tests.gate import wait_until

MEMBER = '''
import math, os, time
from pathlib import Path
from hpsearch.trainers import TrialPruned

HERE = Path(__file__).parent


def gain(lr):
    return 1.0 - abs(math.log10(lr) + 2.0)  # best at lr = 0.01


def member(params, ctx):
    state = ctx.load_checkpoint() or {"epoch": 0, "score": 0.0}
    for epoch in range(state["epoch"] + 1, 100):  # PBT stops each segment at its last step
        if epoch == 3 and (HERE / "hold").exists():
            (HERE / "held").write_text("1")
            while (HERE / "hold").exists():
                time.sleep(0.02)
        state = {"epoch": epoch, "score": round(state["score"] + gain(params["lr"]), 12)}
        ctx.report(state["score"], epoch)
        ctx.save_checkpoint(state, epoch)
        if ctx.should_prune():
            raise TrialPruned()
    return state["score"]
'''

STUDY = """
name: pbt
objective: {metric: value, direction: maximize}
sampler: {name: random, seed: 0}
scheduler: {name: pbt, population: 4, interval: 2, generations: 3, quantile: 0.25, mutate: [lr]}
executor: local
max_concurrent_trials: 2
search_space:
  lr: {type: float, low: 1.0e-4, high: 1.0, log: true}
  width: [8, 16]
trainer: {kind: python, function: "obj.py:member"}
"""


def _write(folder: Path, text: str = STUDY) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "obj.py").write_text(textwrap.dedent(MEMBER))
    path = folder / "study.yaml"
    path.write_text(text)
    return path


def _gain(lr: float) -> float:
    return 1.0 - abs(math.log10(lr) + 2.0)


def _segments(folder: Path) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="pbt", storage=f"sqlite:///{folder / 'hpsearch.db'}")
    return [t for t in study.trials if t.state == TrialState.COMPLETE]


def _schedule(segments: list[optuna.trial.FrozenTrial]) -> set[tuple[int, int, float, int | None]]:
    """(member, generation, lr, parent's member) of each segment: what a re-run must reproduce."""
    by_number = {t.number: t for t in segments}
    out = set()
    for t in segments:
        parent = t.user_attrs["pbt_parent"]
        parent_member = None if parent is None else by_number[parent].user_attrs["pbt_member"]
        out.add((t.user_attrs["pbt_member"], t.user_attrs["pbt_generation"], t.params["lr"], parent_member))
    return out


def test_pbt_runs_generations_of_segments_and_copies_the_best_checkpoint(tmp_path):
    path = _write(tmp_path)
    res = run_cli("run", path, "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    segments = _segments(tmp_path)
    assert len(segments) == 12
    by_number = {t.number: t for t in segments}
    gens: dict[int, list[optuna.trial.FrozenTrial]] = {}
    for t in segments:
        gens.setdefault(t.user_attrs["pbt_generation"], []).append(t)
    assert sorted(gens) == [0, 1, 2] and all(len(v) == 4 for v in gens.values())
    for g, members in gens.items():
        assert sorted(t.user_attrs["pbt_member"] for t in members) == [0, 1, 2, 3]
        for t in members:
            assert t.user_attrs["start_step"] == 2 * g
            # The whole curve: the parent's steps carried over, then this segment's two.
            assert sorted(t.intermediate_values) == list(range(1, 2 * g + 3))
            parent = t.user_attrs["pbt_parent"]
            if g == 0:
                assert parent is None and t.value == pytest.approx(2 * _gain(t.params["lr"]))
                continue
            # It went on from its parent's checkpoint: the parent's score, plus two steps at its own lr.
            src = by_number[parent]
            assert src.user_attrs["pbt_generation"] == g - 1
            assert t.user_attrs["resumed_from"] == {"trial": parent, "step": 2 * g}
            assert t.value == pytest.approx(src.value + 2 * _gain(t.params["lr"]))
        if g == 0:
            continue
        prev = sorted(gens[g - 1], key=lambda t: -t.value)
        worst, best = prev[-1], prev[0]
        worst_next = next(t for t in members if t.user_attrs["pbt_member"] == worst.user_attrs["pbt_member"])
        # Exploit: the worst member copied the best one's checkpoint; explore: its lr moved from the donor's.
        assert worst_next.user_attrs["pbt_parent"] == best.number
        assert worst_next.params["lr"] != best.params["lr"]
        assert worst_next.params["width"] == best.params["width"]  # not in mutate: copied as it is
        for t in members:
            if t is not worst_next:  # the others went on with their own params
                own = next(p for p in gens[g - 1] if p.user_attrs["pbt_member"] == t.user_attrs["pbt_member"])
                assert t.user_attrs["pbt_parent"] == own.number and t.params == own.params
    # The best segment is in the last generation, and its checkpoint stays on disk.
    study = optuna.load_study(study_name="pbt", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    assert study.best_trial.user_attrs["pbt_generation"] == 2


def test_kill_9_mid_pbt_then_the_rerun_finishes_the_same_schedule(tmp_path):
    ref = _write(tmp_path / "ref")
    assert run_cli("run", ref, "-q", cwd=ref.parent).returncode == 0
    path = _write(tmp_path / "run")
    (path.parent / "hold").write_text("1")  # segments of generation 1 wait in their first step
    proc = subprocess.Popen([sys.executable, "-m", "hpsearch", "run", str(path), "-q"], cwd=path.parent,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until("a generation-1 segment running", (path.parent / "held").exists, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    (path.parent / "hold").unlink()
    res = run_cli("run", path, "-q", cwd=path.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    study = optuna.load_study(study_name="pbt", storage=f"sqlite:///{path.parent / 'hpsearch.db'}")
    orphans = [t for t in study.trials if t.state == TrialState.FAIL]
    assert orphans and all(t.user_attrs["fail_reason"] == "orphaned" for t in orphans)
    assert len(_segments(path.parent)) == 12  # the budget it was given, no more
    assert _schedule(_segments(path.parent)) == _schedule(_segments(ref.parent))
    assert study.best_value == pytest.approx(optuna.load_study(
        study_name="pbt", storage=f"sqlite:///{ref.parent / 'hpsearch.db'}").best_value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("kind: python, function: \"obj.py:member\"",
          "kind: sklearn_cv, estimator: sklearn.tree.DecisionTreeClassifier, dataset: digits"),
         "scheduler.name: pbt copies checkpoints between members, and trainer 'sklearn_cv' cannot checkpoint"),
        (("executor: local", "executor: local\npruner: {name: median}"), "pruner.name: PBT decides itself"),
        (("mutate: [lr]", "mutate: [lr, momentum]"), "scheduler.mutate: momentum not in search_space"),
        ((", generations: 3", ""), "scheduler.generations: set how many generations PBT runs"),
        (("executor: local", "executor: local\ncheckpoints: {enabled: false}"), "checkpoints: PBT needs checkpoints"),
    ],
)
def test_a_pbt_study_that_cannot_work_is_refused(tmp_path, change, message):
    path = _write(tmp_path, STUDY.replace(*change))
    res = run_cli("run", path, cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "hpsearch.db").exists()


IMAGE_PBT = """
name: pbt
objective: {metric: accuracy, direction: maximize}
sampler: {name: random, seed: 0}
scheduler: {name: pbt, population: 2, interval: 1, mutate: [lr]}
executor: local
search_space:
  lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}
trainer: {kind: image_classification, dataset: digits, model: cnn, width: 8, depth: 1, epochs: 2,
          batch_size: 64, val_fraction: 0.2, test_fraction: 0.2, save_model: false}
"""


def test_pbt_with_the_image_trainer_runs_the_last_generation_to_its_end(tmp_path):
    path = _write(tmp_path, IMAGE_PBT)
    res = run_cli("run", path, "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    segments = _segments(tmp_path)
    assert len(segments) == 4  # 2 members x (2 epochs / interval 1) generations
    for t in segments:
        metrics = t.user_attrs["metrics"]
        if t.user_attrs["pbt_generation"] == 0:  # stopped by PBT after its epoch: the objective only
            assert set(metrics) == {"accuracy"} and t.user_attrs["pbt_parent"] is None
        else:  # the trainer's own end: every final metric, from its parent's weights
            assert "test_accuracy" in metrics and t.user_attrs["resumed_from"]["step"] == 1
            assert "checkpoint_error" not in t.user_attrs
